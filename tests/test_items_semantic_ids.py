"""Semantic-ID invariants on synthetic clustered vectors (residual k-means; fast)."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec.data.schema import InteractionData, Item
from llmrec.errors import ConfigError, DataError
from llmrec.items.build import SemanticIdConfig, build_semantic_ids
from llmrec.items.diagnostics import category_coherence, diagnostics, level_usage
from llmrec.items.quantizers import QuantizerConfig, load_quantizer, make_quantizer
from llmrec.items.semantic_ids import SemanticIds, disambiguate


def clustered(n: int = 600, d: int = 16, k: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    return (centers[rng.integers(0, k, n)] + rng.normal(size=(n, d)) * 0.5).astype(np.float32)


def build(x: np.ndarray, **kw) -> SemanticIds:
    config = QuantizerConfig(**{"levels": 3, "codebook_size": 16, **kw})
    quantizer = make_quantizer(config)
    codes = quantizer.fit(x)
    ids = [f"i{i}" for i in range(len(x))]
    return SemanticIds.from_quantized(ids, codes, quantizer.codebook_sizes, config=config.to_dict(), quantizer=quantizer)


def all_ids_in_trie(sids: SemanticIds) -> set[tuple[int, ...]]:
    found, stack = set(), [()]
    while stack:
        prefix = stack.pop()
        if len(prefix) == sids.levels:
            assert sids.trie.is_item(prefix)
            found.add(prefix)
            continue
        stack.extend(prefix + (int(c),) for c in sids.trie.next_codes(prefix))
    return found


def test_codes_in_range_unique_and_trie_holds_exactly_the_ids():
    sids = build(clustered())
    assert sids.codes.dtype == np.int64 and sids.codes.shape == (600, 4)
    assert (sids.codes >= 0).all() and (sids.codes < np.array(sids.codebook_sizes)).all()
    assert sids.unique_fraction == 1.0
    assert all_ids_in_trie(sids) == {tuple(map(int, row)) for row in sids.codes}
    assert len(sids.trie) == 600
    assert not sids.trie.is_item((99, 0, 0, 0)) and len(sids.trie.next_codes((99,))) == 0
    assert not sids.trie.is_item(sids.codes[0, :3].tolist())  # a prefix is not an item
    codes = sids.codes_for("i7")
    assert sids.item_for_codes(codes) == "i7" and sids.trie.row(codes) == 7


def test_tokens_vocabulary_and_parsing():
    sids = build(clustered())
    vocab = sids.token_strings()
    assert len(vocab) == sum(sids.codebook_sizes) and len(set(vocab)) == len(vocab)
    assert vocab[0] == "<a_0>" and vocab[sids.codebook_sizes[0]] == "<b_0>" and vocab[-1].startswith("<d_")
    a, b, c, d = sids.codes_for("i3")
    assert sids.tokens_for("i3") == [f"<a_{a}>", f"<b_{b}>", f"<c_{c}>", f"<d_{d}>"]
    assert [vocab[j] for j in sids.token_indices()[3]] == sids.tokens_for("i3")
    assert sids.item_for_string(" " + sids.sid_string("i3") + "</s>") == "i3"
    assert sids.parse("<a_1><b_2>") is None and sids.parse("<b_1><a_2><c_3><d_0>") is None
    vectors = sids.codebook_vectors()
    assert vectors.shape == (len(vocab), 16) and np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors[: sids.codebook_sizes[0]], sids.quantizer.codebooks[0])


def test_disambiguation_level_sized_to_largest_group():
    x = clustered(200)
    x[10:15] = x[3]  # six identical items: only the extra level can tell them apart
    sids = build(x, collision_aware=False)
    assert sids.codebook_sizes[-1] >= 6 and sids.unique_fraction == 1.0
    assert sids.collision_rate >= 5 / 200
    same = [sids.codes_for(f"i{i}")[-1] for i in (3, 10, 11, 12, 13, 14)]
    assert len(set(same)) == 6
    # collision-aware last level separates them without extra tokens
    aware = build(x, collision_aware=True)
    assert aware.collision_rate < sids.collision_rate and aware.unique_fraction == 1.0
    assert disambiguate(np.array([[1, 2], [1, 2], [0, 0], [1, 2]]), (4, 4)).tolist() == [0, 1, 0, 2]


def test_codebook_capped_for_small_catalogues_keeps_utilisation_high():
    sids = build(clustered(200), codebook_size=256)
    assert sids.codebook_sizes[:3] == (50, 50, 50)  # 200 items / min_points_per_code 4
    report = diagnostics(sids, categories=None)
    assert report["utilization"][0] >= 0.9


def test_deterministic_for_a_seed():
    x = clustered()
    assert np.array_equal(build(x, seed=3).codes, build(x, seed=3).codes)


def test_save_load_round_trip_and_mismatched_config(tmp_path):
    x = clustered()
    sids = build(x)
    sids.save(tmp_path / "t")
    back = SemanticIds.load(tmp_path / "t", expected_config=QuantizerConfig(levels=3, codebook_size=16))
    assert back.item_ids == sids.item_ids and np.array_equal(back.codes, sids.codes)
    assert back.codebook_sizes == sids.codebook_sizes and back.token_strings() == sids.token_strings()
    np.testing.assert_array_equal(back.codebook_vectors(), sids.codebook_vectors())
    assert np.array_equal(back.quantizer.encode(x), sids.quantizer.encode(x))
    assert np.array_equal(load_quantizer(tmp_path / "t").encode(x[:5]), sids.codes[:5, :3])
    with pytest.raises(ConfigError, match="codebook_size: saved 16, expected 32"):
        SemanticIds.load(tmp_path / "t", expected_config=QuantizerConfig(levels=3, codebook_size=32))
    with pytest.raises(DataError, match="not a semantic-ID table"):
        SemanticIds.load(tmp_path / "missing")


def test_add_items_keeps_old_ids_and_stays_unique():
    x = clustered(400)
    sids = build(x[:300], collision_aware=False)
    new = np.concatenate([x[300:], np.repeat(x[:1], 8, axis=0)])  # 8 exact copies of item 0
    grown = sids.add_items([f"n{i}" for i in range(len(new))], new)
    assert len(grown) == 408 and np.array_equal(grown.codes[:300], sids.codes)
    assert grown.unique_fraction == 1.0 and grown.codebook_sizes[-1] >= 9
    assert grown.token_strings()[: len(sids.token_strings())] == sids.token_strings()
    assert all_ids_in_trie(grown) == {tuple(map(int, r)) for r in grown.codes}
    assert grown.codes_for("n107")[:3] == sids.codes_for("i0")[:3]
    with pytest.raises(DataError, match="already in the table"):
        grown.add_items(["i0"], x[:1])
    aware = build(x[:300]).add_items([f"n{i}" for i in range(len(new))], new)
    assert aware.unique_fraction == 1.0 and aware.collision_rate < grown.collision_rate


def test_bad_input_errors():
    with pytest.raises(DataError, match="catalogue is empty"):
        build_semantic_ids(InteractionData("empty", {}, []), SemanticIdConfig())
    with pytest.raises(DataError, match="NaN"):
        make_quantizer(QuantizerConfig(codebook_size=4)).fit(np.full((20, 4), np.nan, dtype=np.float32))
    with pytest.raises(DataError, match="shape"):
        make_quantizer(QuantizerConfig()).fit(np.zeros((0, 8), dtype=np.float32))
    with pytest.raises(ConfigError, match="quantizer.kind"):
        QuantizerConfig(kind="pq")
    with pytest.raises(DataError, match="record i1"):
        SemanticIds(["i1", "i1"], np.array([[0], [1]]), (2,))
    items = {"a": Item("a", "A")}
    with pytest.raises(DataError, match="2 vectors for 1 items"):
        build_semantic_ids(InteractionData("x", items, []), vectors=np.zeros((2, 4), dtype=np.float32))


def test_diagnostics_hand_computed():
    util, ppl = level_usage(np.array([0, 0, 1, 1]), 4)
    assert util == 0.5 and ppl == pytest.approx(2.0)
    cats = [["x"], ["x"], ["y"], ["y"]]
    # random pairs sharing a category: (0,1), (2,3) of 6 -> 1/3; same-first-code pairs (0,1), (2,3) all share -> 1
    assert category_coherence(np.array([0, 0, 1, 1]), cats) == pytest.approx(3.0)
    assert category_coherence(np.array([0, 1, 0, 1]), cats) == pytest.approx(0.0)
    sids = build(clustered(200))
    report = diagnostics(sids, clustered(200), categories=[["g"]] * 200)
    assert report["unique_fraction"] == 1.0 and len(report["utilization"]) == 3
    assert 0 <= report["reconstruction_rel"] < 0.5 and report["category_coherence"] == pytest.approx(1.0)
