"""Collaborative semantic IDs: a sequence model's item table (optionally next to text vectors) is quantized."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.data.schema import InteractionData, Item
from llmrec.errors import ConfigError, DataError
from llmrec.items.build import SemanticIdConfig, build_semantic_ids
from llmrec.items.collaborative import collaborative_vectors, fuse_vectors
from llmrec.items.quantizers import QuantizerConfig
from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig


def _catalogue(n: int = 40) -> InteractionData:
    items = {f"i{k}": Item(f"i{k}", f"Movie {k}") for k in range(n)}
    return InteractionData(name="toy", items=items, interactions=[])


def test_fuse_vectors_normalises_each_block_and_weights_the_collaborative_one():
    rng = np.random.default_rng(0)
    text, collab = rng.normal(size=(5, 3)) * 10, rng.normal(size=(5, 4)) * 0.1
    fused = fuse_vectors(text, collab, "text+collaborative", collaborative_weight=4.0)
    assert fused.shape == (5, 7)
    np.testing.assert_allclose(np.linalg.norm(fused[:, :3], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(fused[:, 3:], axis=1), 2.0, rtol=1e-5)  # sqrt(weight)
    np.testing.assert_allclose(np.linalg.norm(fuse_vectors(None, collab, "collaborative"), axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(fuse_vectors(text, None, "text"), text.astype(np.float32))
    with pytest.raises(DataError, match="collaborative"):
        fuse_vectors(text, None, "text+collaborative")
    with pytest.raises(ConfigError):
        fuse_vectors(text, collab, "cf")
    with pytest.raises(ConfigError):
        SemanticIdConfig(vectors="cf")


def test_collaborative_vectors_follow_the_requested_item_order():
    ids = [f"i{k}" for k in range(6)]
    torch.manual_seed(0)
    enc = SequenceEncoder(SequenceEncoderConfig(n_items=6, d_model=8, max_len=4), ids)
    vecs = collaborative_vectors(enc, ["i3", "i0"])
    table = enc.item_table().detach().numpy()
    np.testing.assert_allclose(vecs, table[[4, 1]])  # row 0 is padding
    with pytest.raises(DataError, match="unknown to the sequence encoder"):
        collaborative_vectors(enc, ["i9"])


def test_collaborative_ids_group_items_by_their_collaborative_vector_not_their_text():
    data = _catalogue()
    rng = np.random.default_rng(1)
    text = rng.normal(size=(40, 8)).astype(np.float32)  # text says nothing about the groups
    groups = np.repeat(np.arange(4), 10)
    collab = (np.eye(4)[groups] * 5 + rng.normal(size=(40, 4)) * 0.05).astype(np.float32)
    cfg = SemanticIdConfig(quantizer=QuantizerConfig(levels=2, codebook_size=4), vectors="collaborative")
    sids, report = build_semantic_ids(data, cfg, vectors=text, collaborative=collab, show_progress=False)
    first = np.asarray(sids.codes)[:, 0]
    for g in range(4):  # each collaborative group maps to exactly one first-level code
        assert len(set(first[groups == g])) == 1
    assert len(set(first)) == 4
    assert report["unique_fraction"] == 1.0
    with pytest.raises(DataError, match="collaborative vectors for"):
        build_semantic_ids(data, cfg, vectors=text, collaborative=collab[:5], show_progress=False)
    with pytest.raises(DataError, match="needs collaborative vectors"):
        build_semantic_ids(data, cfg, vectors=text, show_progress=False)
