"""Semantic IDs at scale: chunked encoding, sampled k-means, mini-batch RQ-VAE under a memory ceiling, the
vectorised distinct-last-level greedy (equal to the per-group original), and the new settings' bad input."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from llmrec.errors import ConfigError, DataError
from llmrec.items import quantizers as qmod
from llmrec.items import rkmeans as rkmod
from llmrec.items.quantizers import (
    QuantizerConfig,
    RQVAEConfig,
    _greedy_distinct,
    assign_distinct_last,
    check_vectors,
    faiss_gpu,
    make_quantizer,
)


def clustered(n: int, d: int = 16, k: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    return (centers[rng.integers(0, k, n)] + rng.normal(size=(n, d)) * 0.5).astype(np.float32)


def greedy_one_group(dist: np.ndarray) -> np.ndarray:
    """The original per-group greedy (before the groups were batched), kept as the reference."""
    dist = dist.copy()
    chosen = np.full(dist.shape[0], -1, dtype=np.int64)
    free = np.arange(dist.shape[0])
    while len(free):
        bid = dist[free].argmin(axis=1)
        bid_dist = dist[free, bid]
        order = np.lexsort((bid_dist, bid))
        first = np.r_[True, bid[order][1:] != bid[order][:-1]] & np.isfinite(bid_dist[order])
        if not first.any():
            break
        winners, codes = free[order[first]], bid[order[first]]
        chosen[winners] = codes
        dist[:, codes] = np.inf
        free = free[chosen[free] < 0]
    return chosen


@pytest.mark.parametrize("seed", range(6))
def test_batched_greedy_equals_the_per_group_original(seed):
    rng = np.random.default_rng(seed)
    k = 6
    sizes = rng.integers(1, k + 4, size=15)  # some groups larger than the codebook: overflow is -1 here
    group = np.repeat(np.arange(len(sizes)), sizes)
    dist = rng.integers(0, 5, size=(len(group), k)).astype(np.float32)  # coarse values: many exact ties
    forbidden = rng.random((len(sizes), k)) < 0.2
    forbidden[0] = True  # a group with no code left
    got = _greedy_distinct(dist, group, forbidden)
    bounds = np.r_[0, np.cumsum(sizes)]
    for g in range(len(sizes)):
        block = dist[bounds[g] : bounds[g + 1]].copy()
        block[:, forbidden[g]] = np.inf
        assert got[bounds[g] : bounds[g + 1]].tolist() == greedy_one_group(block).tolist(), f"group {g}"
    taken = got[got >= 0]
    assert len({(int(group[i]), int(got[i])) for i in np.flatnonzero(got >= 0)}) == len(taken)  # distinct per group


def test_overflow_spreads_evenly_and_duplicates_stay_cheap():
    rng = np.random.default_rng(0)
    n, k = 1200, 8
    prefix = np.zeros((n, 1), dtype=np.int64)
    prefix[600:, 0] = 1  # two groups of 600 items for 8 codes
    residual = rng.normal(size=(n, 4)).astype(np.float32)
    residual[600:] = residual[600]  # the second group: 600 identical items
    book = rng.normal(size=(k, 4)).astype(np.float32)
    last = qmod.nearest(residual, book)
    got = assign_distinct_last(prefix, residual, book, last, (2,), taken={1: {0, 1, 2}})
    assert np.bincount(got[:600], minlength=k).max() == 75  # ceil(600 / 8): one code per 75 items at most
    assert np.bincount(got[600:], minlength=k).max() == 76  # ceil((600 + 3 taken) / 8)
    assert np.bincount(last[600:], minlength=k).max() == 600  # nearest codes alone: all on one code
    # the first 8 - 3 items of the identical group still get the distinct-greedy codes, avoiding the taken ones
    assert sorted(got[600:605].tolist()) == [3, 4, 5, 6, 7]


def test_distinct_last_in_small_blocks_equals_one_block():
    rng = np.random.default_rng(0)
    n, k = 3000, 8
    prefix = rng.integers(0, 4, size=(n, 2))  # 16 prefixes of ~190 items: big groups, overflow included
    residual = rng.normal(size=(n, 5)).astype(np.float32)
    book = rng.normal(size=(k, 5)).astype(np.float32)
    last = qmod.nearest(residual, book)
    whole = assign_distinct_last(prefix, residual, book, last, (4, 4))
    calls: list[int] = []

    def rows_of(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return residual[rows]

    blocked = assign_distinct_last(prefix, rows_of, book, last, (4, 4), chunk_size=400)
    assert np.array_equal(whole, blocked)
    assert len(calls) > 1 and max(calls) <= 400  # whole groups per block, each under the ceiling here
    # add_items: codes other items already use under a prefix are avoided (groups under the codebook size)
    few = slice(0, 40)  # ~2.5 items per prefix
    key0 = int(prefix[0, 0] * 4 + prefix[0, 1])
    taken = {key0: {int(last[0]), (int(last[0]) + 1) % k}}
    got = assign_distinct_last(prefix[few], rows_of, book, last[few], (4, 4), taken=taken, chunk_size=7)
    mine = np.flatnonzero(prefix[few, 0] * 4 + prefix[few, 1] == key0)
    assert got[0] != last[0] and not np.isin(got[mine], list(taken[key0])).any()
    assert len(set(got[mine].tolist())) == len(mine)


@pytest.mark.parametrize("kind", ["rkmeans", "rqvae"])
def test_encoding_in_chunks_gives_the_same_codes(kind):
    x = clustered(600)
    config = QuantizerConfig(kind=kind, levels=3, codebook_size=16, rqvae=RQVAEConfig(
        latent_dim=8, hidden_dims=(32,), max_epochs=3, batch_size=64))
    q = make_quantizer(config)
    codes = q.fit(x)
    nearest_codes, recon = q.encode(x, collision_aware=False), q.reconstruct(codes)
    assert np.array_equal(q.encode(x), codes)
    q.config = dataclasses.replace(config, chunk_size=70)  # 9 chunks; residuals recomputed per block
    assert np.array_equal(q.encode(x), codes)
    assert np.array_equal(q.encode(x, collision_aware=False), nearest_codes)
    np.testing.assert_array_equal(q.reconstruct(codes), recon)


def test_rkmeans_fits_on_a_capped_sample_and_is_unchanged_below_the_cap(monkeypatch):
    x = clustered(3000)
    seen: list[int] = []
    real = rkmod.kmeans

    def spy(data, *args, **kwargs):
        seen.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(rkmod, "kmeans", spy)
    capped = QuantizerConfig(levels=3, codebook_size=8, max_points_per_centroid=16)
    codes = make_quantizer(capped).fit(x)
    assert seen == [128, 128, 128]  # 8 codes x 16 points per level, not 3,000
    assert codes.shape == (3000, 3) and len(np.unique(codes[:, 0])) == 8
    assert np.array_equal(make_quantizer(capped).fit(x), codes)  # the sample is seeded
    seen.clear()
    small = x[:600]  # under both caps: every row is used, so the cap value does not matter
    a = make_quantizer(QuantizerConfig(levels=3, codebook_size=16)).fit(small)
    b = make_quantizer(QuantizerConfig(levels=3, codebook_size=16, max_points_per_centroid=10_000)).fit(small)
    assert np.array_equal(a, b) and seen == [600] * 6


class RowCeiling(TorchFunctionMode):
    """Records the most rows of any floating tensor a torch call returns, except views of ``exempt``."""

    def __init__(self, exempt: np.ndarray) -> None:
        super().__init__()
        self.exempt = exempt.ctypes.data
        self.max_rows = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if (isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() >= 1
                    and t.untyped_storage().data_ptr() != self.exempt):
                self.max_rows = max(self.max_rows, t.shape[0])
        return out


def test_rqvae_trains_and_encodes_under_a_row_ceiling():
    x = clustered(2000, d=24)
    config = QuantizerConfig(kind="rqvae", levels=2, codebook_size=8, chunk_size=300, rqvae=RQVAEConfig(
        latent_dim=8, hidden_dims=(32,), max_epochs=2, batch_size=16, init_batch_size=64))
    mode = RowCeiling(x)
    with mode:
        codes = make_quantizer(config).fit(x)
    assert codes.shape == (2000, 2)
    # Batches of 16 (the dead-code restart pool holds the last 16 batches: 256 rows), k-means init on 64 items,
    # validation (200 items) and encoding in chunks of 300 rows: never the 1,800 training rows at once.
    assert mode.max_rows <= 300
    # the validation loss over chunks of 100 rows is the mean over all 100 validation items, as in one chunk
    chunked, whole = make_quantizer(config), make_quantizer(dataclasses.replace(config, chunk_size=10_000))
    chunked.fit(x[:1000])
    whole.fit(x[:1000])
    assert chunked.history[0]["val_loss"] == pytest.approx(whole.history[0]["val_loss"], rel=1e-5)


@pytest.mark.parametrize("kind", ["rkmeans", "rqvae"])
def test_numpy_memory_stays_below_the_input_size(kind):
    # 4 MB (1 KB per item); a [n, d] copy would exceed the bound, the [n] / [n, levels] index arrays do not
    x = clustered(4000, d=256)
    config = QuantizerConfig(kind=kind, levels=3, codebook_size=16, max_points_per_centroid=16, chunk_size=100,
                             rqvae=RQVAEConfig(latent_dim=8, hidden_dims=(32,), max_epochs=1, batch_size=256,
                                               init_batch_size=256))
    make_quantizer(config).fit(x[:200])  # imports (modules are traced too) happen before tracing starts
    q = make_quantizer(config)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        codes = q.fit(x)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert codes.shape == (4000, 3)
    assert peak < 0.5 * x.nbytes, f"{peak / 2**20:.2f} MB traced for a {x.nbytes / 2**20:.2f} MB input"


def test_bad_settings_and_inputs(monkeypatch):
    with pytest.raises(ConfigError, match="chunk_size"):
        QuantizerConfig(chunk_size=0)
    with pytest.raises(ConfigError, match="max_points_per_centroid"):
        QuantizerConfig(max_points_per_centroid=0)
    with pytest.raises(ConfigError, match="quantizer.device"):
        QuantizerConfig(device="tpu")
    with pytest.raises(ConfigError, match="max_train_items"):
        RQVAEConfig(max_train_items=-1)
    with pytest.raises(ConfigError, match="unknown key"):
        QuantizerConfig.from_dict({"chunk_rows": 5})
    x = clustered(60)
    x[47, 3] = np.nan  # in the fifth chunk of ten rows
    with pytest.raises(DataError, match="record 47"):
        check_vectors(x, chunk_size=10)
    with pytest.raises(DataError, match="record 47"):
        make_quantizer(QuantizerConfig(codebook_size=4, chunk_size=10)).fit(x)
    import faiss

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    assert faiss_gpu("auto") is False and faiss_gpu("cpu") is False
    with pytest.raises(ConfigError, match="faiss sees no GPU"):
        faiss_gpu("cuda")
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    assert faiss_gpu("auto") is True and faiss_gpu("cpu") is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    q = make_quantizer(QuantizerConfig(kind="rqvae", device="cuda"))
    with pytest.raises(ConfigError, match="no CUDA device"):
        _ = q.device


def test_rqvae_trains_on_a_sample_and_encodes_every_item(monkeypatch):
    from llmrec.items.rqvae import RQVAEQuantizer

    seen: list[torch.Tensor] = []
    real = RQVAEQuantizer._rows
    monkeypatch.setattr(RQVAEQuantizer, "_rows", lambda self, data, index: seen.append(index) or real(
        self, data, index))
    x = clustered(2000, d=24)
    config = QuantizerConfig(kind="rqvae", levels=2, codebook_size=8, rqvae=RQVAEConfig(
        latent_dim=8, hidden_dims=(32,), max_epochs=2, batch_size=64, init_batch_size=64, max_train_items=300))
    codes = make_quantizer(config).fit(x)
    assert codes.shape == (2000, 2)
    assert len(torch.unique(torch.cat(seen))) == 300  # 270 training + 30 validation items, and no others
