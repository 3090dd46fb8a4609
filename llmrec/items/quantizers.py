"""Quantizers: vectors -> code tuples, behind one interface (residual k-means, RQ-VAE).

Every quantizer maps ``[n, d]`` float vectors to ``[n, levels]`` int64 codes. Codebook sizes are the
requested size capped at ``n_items // min_points_per_code`` (so a 256-code level is never fitted to 200 items,
which leaves most codes empty); on MovieLens-100k (1,682 items) the cap is 420 and the default 3 x 256 stands.

Optional collision-aware last level: items that share the first ``levels - 1`` codes are given distinct
last codes greedily by distance (closest pairs first), so near-duplicates split without extra tokens. It only
lowers the collision rate; uniqueness is guaranteed by the table's disambiguation level, never by this.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.config import Config
from llmrec.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

QUANTIZERS = ("rkmeans", "rqvae")


@dataclass
class RQVAEConfig(Config):
    """RQ-VAE training settings (TIGER-style). ``beta`` weighs the commitment loss."""

    latent_dim: int = 32
    hidden_dims: tuple[int, ...] = (512, 256, 128)
    beta: float = 0.25
    lr: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 400
    patience: int = 40
    val_fraction: float = 0.1
    init_batch_size: int = 4096  # items whose latents seed the codebooks by residual k-means
    dead_code_restart: bool = True

    def __post_init__(self) -> None:
        if self.latent_dim < 1 or any(h < 1 for h in self.hidden_dims):
            raise ConfigError("rqvae.latent_dim and rqvae.hidden_dims must be >= 1")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError(f"rqvae.val_fraction must be in [0, 0.5), got {self.val_fraction}")
        if self.beta < 0 or self.lr <= 0 or self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ConfigError("rqvae: beta >= 0, lr > 0, batch_size, max_epochs and patience >= 1")


@dataclass
class QuantizerConfig(Config):
    """Which quantizer, how many levels and codes. ``codebook_size`` is the per-level maximum."""

    kind: str = "rkmeans"
    levels: int = 3
    codebook_size: int = 256
    seed: int = 0
    min_points_per_code: int = 4
    collision_aware: bool = True
    kmeans_iters: int = 25
    # faiss/torch threads while fitting and encoding (0 = library default). One thread is the default: on a
    # shared CPU, OpenMP spin-waiting made 2-thread faiss k-means ~5-100x slower than 1 thread here.
    num_threads: int = 1
    rqvae: RQVAEConfig = field(default_factory=RQVAEConfig)

    def __post_init__(self) -> None:
        if self.kind not in QUANTIZERS:
            raise ConfigError(f"quantizer.kind must be one of {QUANTIZERS}, got {self.kind!r}")
        if not 1 <= self.levels <= 8:
            raise ConfigError(f"quantizer.levels must be in 1..8, got {self.levels}")
        if not 2 <= self.codebook_size <= 65536:
            raise ConfigError(f"quantizer.codebook_size must be in 2..65536, got {self.codebook_size}")
        if self.min_points_per_code < 1 or self.kmeans_iters < 1:
            raise ConfigError("quantizer.min_points_per_code and quantizer.kmeans_iters must be >= 1")
        if self.num_threads < 0:
            raise ConfigError("quantizer.num_threads must be >= 0 (0 keeps the library default)")


@contextmanager
def thread_limit(n: int) -> Iterator[None]:
    """Temporarily run faiss (OpenMP) and torch with ``n`` threads; ``0`` leaves them alone."""
    if n <= 0:
        yield
        return
    import faiss
    import torch

    before = (faiss.omp_get_max_threads(), torch.get_num_threads())
    faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before[0])
        torch.set_num_threads(before[1])


def check_vectors(vectors: Any, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """A C-contiguous float32 ``[n, d]`` array with finite values, or a DataError saying what is wrong."""
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(f"expected a non-empty [n_items, dim] array, got shape {x.shape}", field=what)
    if dim is not None and x.shape[1] != dim:
        raise DataError(f"expected dim {dim} (the quantizer's input), got {x.shape[1]}", field=what)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise DataError("vector has NaN or infinite values", record=int(bad[0]), field=what)
    return x


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (L2) for each row, via faiss (exact, chunk-free)."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, idx = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return idx[:, 0].astype(np.int64)


def kmeans(x: np.ndarray, k: int, seed: int, niter: int) -> np.ndarray:
    """Seeded faiss k-means; returns ``[k, d]`` centroids (empty clusters are re-split by faiss)."""
    import faiss

    km = faiss.Kmeans(
        x.shape[1], k, niter=niter, seed=int(seed), verbose=False, min_points_per_centroid=1,
        max_points_per_centroid=256,
    )
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(km.centroids, dtype=np.float32).copy()


def capped_size(requested: int, n_items: int, min_points: int) -> int:
    return int(max(2, min(requested, n_items // min_points, n_items)))


def prefix_keys(codes: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """Mixed-radix int64 key per row (row order-preserving within a level-by-level lexicographic order)."""
    if float(np.prod([float(s) for s in sizes])) >= 2.0**62:
        raise ConfigError(f"codebook sizes {sizes} are too large to index as one int64 key")
    key = np.zeros(codes.shape[0], dtype=np.int64)
    for level, size in enumerate(sizes):
        key = key * int(size) + codes[:, level]
    return key


def assign_distinct_last(
    prefix: np.ndarray,
    residual: np.ndarray,
    codebook: np.ndarray,
    last: np.ndarray,
    prefix_sizes: tuple[int, ...],
    taken: dict[int, set[int]] | None = None,
) -> np.ndarray:
    """Re-assign the last code so items sharing a prefix get distinct codes where the codebook allows.

    Greedy by distance within each prefix group (``_greedy_distinct``). ``taken`` maps a prefix key
    to last codes already used by other items (when adding items to an existing table). Groups larger than
    the codebook keep nearest codes for the overflow: the disambiguation level separates those.
    """
    last = last.copy()
    k = codebook.shape[0]
    pkeys = prefix_keys(prefix, prefix_sizes) if prefix.shape[1] else np.zeros(len(last), dtype=np.int64)
    full = pkeys * k + last
    _, inv, counts = np.unique(full, return_inverse=True, return_counts=True)
    bad = counts[inv] > 1
    if taken:
        bad |= np.array([int(c) in taken.get(int(p), ()) for p, c in zip(pkeys, last, strict=True)])
    redo_prefixes = np.unique(pkeys[bad])
    if len(redo_prefixes) == 0:
        return last
    order = np.argsort(pkeys, kind="stable")
    sorted_keys = pkeys[order]
    bounds = np.searchsorted(sorted_keys, np.stack([redo_prefixes, redo_prefixes + 1], axis=1))
    # One matmul for every item in a group to redo (many tiny BLAS calls were the bottleneck).
    rows = np.concatenate([order[lo:hi] for lo, hi in bounds])
    r = residual[rows].astype(np.float32)
    dist = (r**2).sum(1, keepdims=True) - 2.0 * (r @ codebook.T) + (codebook**2).sum(1)[None, :]
    start = 0
    for p, (lo, hi) in zip(redo_prefixes, bounds, strict=True):
        members, block = rows[start : start + hi - lo], dist[start : start + hi - lo]
        start += hi - lo
        if taken and int(p) in taken:
            block = block.copy()
            block[:, sorted(taken[int(p)])] = np.inf
        chosen = _greedy_distinct(block)
        last[members[chosen >= 0]] = chosen[chosen >= 0]
    return last


def _greedy_distinct(dist: np.ndarray) -> np.ndarray:
    """Distinct codes for the rows of ``dist`` [m, K] (inf = forbidden), greedy in rounds: every free item
    bids for its nearest free code, the closest bidder per code wins. ``-1`` where no code is left."""
    dist = dist.copy()
    chosen = np.full(dist.shape[0], -1, dtype=np.int64)
    free = np.arange(dist.shape[0])
    while len(free):
        bid = dist[free].argmin(axis=1)
        bid_dist = dist[free, bid]
        order = np.lexsort((bid_dist, bid))  # by code, then distance
        first = np.r_[True, bid[order][1:] != bid[order][:-1]] & np.isfinite(bid_dist[order])
        if not first.any():
            break
        winners, codes = free[order[first]], bid[order[first]]
        chosen[winners] = codes
        dist[:, codes] = np.inf
        free = free[chosen[free] < 0]
    return chosen


class Quantizer(ABC):
    """Maps vectors to ``[n, levels]`` codes. Fit once; ``encode`` assigns new items without retraining."""

    kind: str = ""

    def __init__(self, config: QuantizerConfig) -> None:
        self.config = config
        self.codebook_sizes: tuple[int, ...] = ()
        self.input_dim: int | None = None

    @property
    def fitted(self) -> bool:
        return bool(self.codebook_sizes)

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise ConfigError(f"{type(self).__name__} is not fitted: call fit(vectors) first")

    @abstractmethod
    def _fit(self, x: np.ndarray) -> None: ...

    @abstractmethod
    def _prefix_and_residual(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes of all levels but the last ``[n, L-1]`` and the residual the last level quantizes."""

    @property
    @abstractmethod
    def codebooks(self) -> list[np.ndarray]:
        """Per-level codebooks ``[size_l, dim]`` in the space the quantizer works in."""

    @abstractmethod
    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """Input-space vectors ``[n, d]`` decoded from codes."""

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _load_state(self, tensors: dict[str, np.ndarray]) -> None: ...

    def code_vectors(self) -> list[np.ndarray]:
        """One vector per code per level, for initialising LLM token embeddings (default: the codebooks)."""
        return [np.asarray(c, dtype=np.float32) for c in self.codebooks]

    def fit(self, vectors: Any) -> np.ndarray:
        """Fit on ``vectors`` and return their codes ``[n, levels]`` int64."""
        x = check_vectors(vectors)
        self.input_dim = x.shape[1]
        with thread_limit(self.config.num_threads):
            self._fit(x)
            return self.encode(x)

    def encode(
        self, vectors: Any, collision_aware: bool | None = None, taken: dict[int, set[int]] | None = None
    ) -> np.ndarray:
        """Codes ``[n, levels]`` for (new) vectors; the last level is collision-aware if configured."""
        self._check_fitted()
        x = check_vectors(vectors, self.input_dim)
        with thread_limit(self.config.num_threads):
            prefix, residual = self._prefix_and_residual(x)
            last_book = self.codebooks[-1]
            last = nearest(residual, last_book)
        aware = self.config.collision_aware if collision_aware is None else collision_aware
        if aware:
            last = assign_distinct_last(prefix, residual, last_book, last, self.codebook_sizes[:-1], taken)
        return np.column_stack([prefix, last]).astype(np.int64)

    def save(self, directory: str | Path) -> None:
        from safetensors.numpy import save_file

        from llmrec.io import atomic_path, write_json_atomic

        self._check_fitted()
        directory = Path(directory)
        with atomic_path(directory / "quantizer.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self._state().items()}, str(tmp))
        meta = {"kind": self.kind, "config": self.config.to_dict(), "codebook_sizes": list(self.codebook_sizes),
                "input_dim": self.input_dim}
        write_json_atomic(directory / "quantizer.json", meta)


def make_quantizer(config: QuantizerConfig | None = None) -> Quantizer:
    config = config or QuantizerConfig()
    if config.kind == "rkmeans":
        from llmrec.items.rkmeans import ResidualKMeans

        return ResidualKMeans(config)
    from llmrec.items.rqvae import RQVAEQuantizer

    return RQVAEQuantizer(config)


def load_quantizer(directory: str | Path) -> Quantizer:
    """Load a quantizer saved with ``Quantizer.save`` (safetensors + JSON)."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    meta_path = directory / "quantizer.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read quantizer metadata: {exc}", path=meta_path) from exc
    quantizer = make_quantizer(QuantizerConfig.from_dict(meta["config"], source=str(meta_path)))
    quantizer.codebook_sizes = tuple(int(s) for s in meta["codebook_sizes"])
    quantizer.input_dim = int(meta["input_dim"])
    quantizer._load_state(load_file(str(directory / "quantizer.safetensors")))
    return quantizer
