"""Quantizers: vectors -> code tuples, behind one interface (residual k-means, RQ-VAE).

Every quantizer maps ``[n, d]`` float vectors to ``[n, levels]`` int64 codes. Codebook sizes are the
requested size capped at ``n_items // min_points_per_code`` (so a 256-code level is never fitted to 200 items,
which leaves most codes empty); on MovieLens-100k (1,682 items) the cap is 420 and the default 3 x 256 stands.

Optional collision-aware last level: items that share the first ``levels - 1`` codes are given distinct
last codes greedily by distance (closest pairs first), so near-duplicates split without extra tokens. It only
lowers the collision rate; uniqueness is guaranteed by the table's disambiguation level, never by this.

Memory stays flat in the number of items: vectors are checked, assigned and re-assigned in chunks of
``chunk_size`` rows, k-means fits on at most ``codebook_size * max_points_per_centroid`` sampled rows, and
nothing forms an ``[n, d]`` or ``[n, codebook_size]`` array beyond the input (only ``[n]`` / ``[n, levels]``
index arrays). A catalogue of at most ``chunk_size`` items takes exactly the one-chunk path it always took.
faiss runs on the GPU when ``device`` allows and faiss sees one (``faiss.get_num_gpus() > 0``).
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.config import Config
from llmrec.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

QUANTIZERS = ("rkmeans", "rqvae")
DEVICES = ("auto", "cpu", "cuda")


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
    # Train (and validate) on a seeded random sample of at most this many items, then encode them all;
    # 0 = every item. A million-item catalogue needs epochs of a sample, not of the catalogue.
    max_train_items: int = 0

    def __post_init__(self) -> None:
        if self.latent_dim < 1 or any(h < 1 for h in self.hidden_dims):
            raise ConfigError("rqvae.latent_dim and rqvae.hidden_dims must be >= 1")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError(f"rqvae.val_fraction must be in [0, 0.5), got {self.val_fraction}")
        if self.beta < 0 or self.lr <= 0 or self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ConfigError("rqvae: beta >= 0, lr > 0, batch_size, max_epochs and patience >= 1")
        if self.init_batch_size < 1 or self.max_train_items < 0:
            raise ConfigError("rqvae: init_batch_size >= 1 and max_train_items >= 0 (0 = all items)")


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
    # Rows per chunk when checking, assigning or evaluating vectors: the memory ceiling of encoding.
    chunk_size: int = 65536
    # k-means fits on at most codebook_size * this many sampled rows per level (faiss's own cap, made explicit).
    max_points_per_centroid: int = 256
    # "auto": faiss on the GPU when faiss sees one, RQ-VAE on CUDA when torch does; "cpu" reproduces CPU IDs.
    device: str = "auto"
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
        if self.chunk_size < 1 or self.max_points_per_centroid < 1:
            raise ConfigError("quantizer.chunk_size and quantizer.max_points_per_centroid must be >= 1")
        if self.device not in DEVICES:
            raise ConfigError(f"quantizer.device must be one of {DEVICES}, got {self.device!r}")


def faiss_gpu(device: str) -> bool:
    """Whether faiss should run on the GPU: ``auto`` when faiss sees one (never needed), ``cuda`` requires one."""
    if device == "cpu":
        return False
    import faiss

    count = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if device == "cuda" and count == 0:
        raise ConfigError("quantizer.device is 'cuda' but faiss sees no GPU (faiss-cpu installed?); use 'auto'")
    return count > 0


@lru_cache(maxsize=1)
def _gpu_resources():  # one set of GPU scratch buffers per process, not one per search
    import faiss

    return faiss.StandardGpuResources()


def row_chunks(n: int, size: int) -> list[tuple[int, int]]:
    """``[(lo, hi), ...]`` covering ``range(n)`` in chunks of at most ``size`` rows."""
    return [(lo, min(lo + size, n)) for lo in range(0, n, max(1, size))]


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


def check_vectors(vectors: Any, dim: int | None = None, what: str = "vectors", chunk_size: int = 65536) -> np.ndarray:
    """A C-contiguous float32 ``[n, d]`` array with finite values, or a DataError saying what is wrong.
    No copy when ``vectors`` already is one; the finiteness check runs in chunks of ``chunk_size`` rows."""
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(f"expected a non-empty [n_items, dim] array, got shape {x.shape}", field=what)
    if dim is not None and x.shape[1] != dim:
        raise DataError(f"expected dim {dim} (the quantizer's input), got {x.shape[1]}", field=what)
    for lo, hi in row_chunks(len(x), chunk_size):
        bad = np.flatnonzero(~np.isfinite(x[lo:hi]).all(axis=1))
        if len(bad):
            raise DataError("vector has NaN or infinite values", record=lo + int(bad[0]), field=what)
    return x


def nearest(x: np.ndarray, centroids: np.ndarray, gpu: bool = False) -> np.ndarray:
    """Index of the nearest centroid (L2) for each row, via faiss (exact; faiss blocks the queries itself)."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    if gpu:
        index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, idx = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return idx[:, 0].astype(np.int64)


def kmeans(x: np.ndarray, k: int, seed: int, niter: int, max_points_per_centroid: int = 256,
           gpu: bool = False) -> np.ndarray:
    """Seeded faiss k-means; returns ``[k, d]`` centroids (empty clusters are re-split by faiss). faiss
    subsamples ``x`` to ``k * max_points_per_centroid`` rows when it has more."""
    import faiss

    km = faiss.Kmeans(
        x.shape[1], k, niter=niter, seed=int(seed), verbose=False, min_points_per_centroid=1,
        max_points_per_centroid=max_points_per_centroid, gpu=gpu,
    )
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(km.centroids, dtype=np.float32).copy()


def sample_rows(n: int, cap: int, seed: int) -> np.ndarray | None:
    """Sorted indices of ``cap`` seeded random rows of ``n``, or ``None`` when all ``n`` rows fit."""
    if n <= cap:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


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
    residual: np.ndarray | Callable[[np.ndarray], np.ndarray],
    codebook: np.ndarray,
    last: np.ndarray,
    prefix_sizes: tuple[int, ...],
    taken: dict[int, set[int]] | None = None,
    chunk_size: int = 65536,
) -> np.ndarray:
    """Re-assign the last code so items sharing a prefix get distinct codes where the codebook allows.

    Greedy by distance within each prefix group (``_greedy_distinct``). ``residual`` is the ``[n, d]`` array
    the last level quantizes, or a function giving its rows for an index array (so no ``[n, d]`` array need
    exist). ``taken`` maps a prefix key to last codes already used by other items (when adding items to an
    existing table). In a group with more items than free codes, the overflow spreads evenly over the codes
    (``_balanced_overflow``) and the disambiguation level separates those. Groups to redo are processed in blocks of about ``chunk_size`` rows (whole groups),
    so memory is ``O(chunk_size * codebook)`` however many items there are.
    """
    last = last.copy()
    k = codebook.shape[0]
    pkeys = prefix_keys(prefix, prefix_sizes) if prefix.shape[1] else np.zeros(len(last), dtype=np.int64)
    full = pkeys * k + last
    _, inv, counts = np.unique(full, return_inverse=True, return_counts=True)
    bad = counts[inv] > 1
    if taken:
        taken_full = np.fromiter((p * k + c for p, codes in taken.items() for c in codes), dtype=np.int64)
        bad |= np.isin(full, taken_full)
    redo_prefixes = np.unique(pkeys[bad])
    if len(redo_prefixes) == 0:
        return last
    order = np.argsort(pkeys, kind="stable")
    sorted_keys = pkeys[order]
    bounds = np.searchsorted(sorted_keys, np.stack([redo_prefixes, redo_prefixes + 1], axis=1))
    sizes = bounds[:, 1] - bounds[:, 0]
    get_rows = residual if callable(residual) else (lambda rows: residual[rows])
    book_sq = (codebook**2).sum(1)[None, :]
    for g_lo, g_hi in _group_blocks(sizes, chunk_size):
        # One matmul per block of whole groups (many tiny BLAS calls were the bottleneck).
        rows = np.concatenate([order[lo:hi] for lo, hi in bounds[g_lo:g_hi]])
        r = np.asarray(get_rows(rows), dtype=np.float32)
        dist = (r**2).sum(1, keepdims=True) - 2.0 * (r @ codebook.T) + book_sq
        group = np.repeat(np.arange(g_hi - g_lo), sizes[g_lo:g_hi])
        forbidden = None
        if taken:
            forbidden = np.zeros((g_hi - g_lo, k), dtype=bool)
            for g, p in enumerate(redo_prefixes[g_lo:g_hi]):
                if int(p) in taken:
                    forbidden[g, sorted(taken[int(p)])] = True
        chosen = _greedy_distinct(dist, group, forbidden)
        left = np.flatnonzero(chosen < 0)
        if len(left):
            chosen[left] = _balanced_overflow(dist, group, chosen, forbidden, left)
        last[rows] = chosen
    return last


def _balanced_overflow(
    dist: np.ndarray, group: np.ndarray, chosen: np.ndarray, forbidden: np.ndarray | None, left: np.ndarray
) -> np.ndarray:
    """Codes for the items a group could not give distinct codes (more items than free codes): each, in row
    order, takes its nearest code among the group's least-used ones (a forbidden code counts as used once). So a
    group of ``m`` items with ``t`` taken codes shares no code more than ``ceil((m + t) / K)`` times, and the
    disambiguation level stays that small (nearest codes let duplicates pile onto one code instead).
    One cheap step per overflow item: no rounds, so thousands of identical items cost milliseconds."""
    k = dist.shape[1]
    out = np.empty(len(left), dtype=np.int64)
    load: dict[int, np.ndarray] = {}
    for j, i in enumerate(left.tolist()):
        g = int(group[i])
        if g not in load:
            members = chosen[(group == g) & (chosen >= 0)]
            load[g] = np.bincount(members, minlength=k) + (forbidden[g] if forbidden is not None else 0)
        counts = load[g]
        c = int(np.where(counts == counts.min(), dist[i], np.inf).argmin())
        counts[c] += 1
        out[j] = c
    return out


def _group_blocks(sizes: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """Consecutive ranges of groups holding about ``rows`` rows each (a larger group is a block of its own)."""
    blocks, lo, total = [], 0, 0
    for g, size in enumerate(sizes.tolist()):
        if total and total + size > rows:
            blocks.append((lo, g))
            lo, total = g, 0
        total += size
    blocks.append((lo, len(sizes)))
    return blocks


def _greedy_distinct(dist: np.ndarray, group: np.ndarray, forbidden: np.ndarray | None = None) -> np.ndarray:
    """Distinct codes within each group for the rows of ``dist`` [m, K], greedy in rounds: every free item
    bids for its nearest code its group has not used, the closest bidder per (group, code) wins (ties: row
    order). ``group`` [m] holds group numbers 0..G-1; ``forbidden`` [G, K] marks codes a group may not take.
    ``-1`` where no code is left. All groups of a block bid in the same rounds, so the cost is
    ``O(rounds * m * K)``, not a Python loop per group."""
    n_groups, k = int(group.max()) + 1 if len(group) else 0, dist.shape[1]
    used = np.zeros((n_groups, k), dtype=bool) if forbidden is None else forbidden.copy()
    chosen = np.full(dist.shape[0], -1, dtype=np.int64)
    free = np.arange(dist.shape[0])
    while len(free):
        d = dist[free]
        d[used[group[free]]] = np.inf
        bid = d.argmin(axis=1)
        bid_dist = d[np.arange(len(free)), bid]
        live = np.isfinite(bid_dist)  # no code left for this item: it stays -1 (codes only get used up)
        free, bid, bid_dist = free[live], bid[live], bid_dist[live]
        if not len(free):
            break
        g = group[free]
        order = np.lexsort((bid_dist, bid, g))  # by group, code, then distance (stable: row order)
        key = (g * k + bid)[order]
        first = np.r_[True, key[1:] != key[:-1]]
        winners, codes = free[order[first]], bid[order[first]]
        chosen[winners] = codes
        used[group[winners], codes] = True
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

    @abstractmethod
    def _residual(self, x: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        """The residual the last level quantizes, given the rows' prefix codes (no search)."""

    @property
    def faiss_gpu(self) -> bool:
        return faiss_gpu(self.config.device)

    def fit(self, vectors: Any) -> np.ndarray:
        """Fit on ``vectors`` and return their codes ``[n, levels]`` int64."""
        x = check_vectors(vectors, chunk_size=self.config.chunk_size)
        self.input_dim = x.shape[1]
        with thread_limit(self.config.num_threads):
            self._fit(x)
            return self.encode(x)

    def encode(
        self, vectors: Any, collision_aware: bool | None = None, taken: dict[int, set[int]] | None = None
    ) -> np.ndarray:
        """Codes ``[n, levels]`` for (new) vectors; the last level is collision-aware if configured.

        Runs in chunks of ``chunk_size`` rows; the collision-aware pass recomputes the residuals of the rows
        it re-assigns (from their prefix codes) rather than keeping ``[n, d]`` residuals, except with one chunk.
        """
        self._check_fitted()
        x = check_vectors(vectors, self.input_dim, chunk_size=self.config.chunk_size)
        chunks = row_chunks(len(x), self.config.chunk_size)
        codes = np.empty((len(x), self.config.levels), dtype=np.int64)
        last_book = self.codebooks[-1]
        kept: np.ndarray | None = None
        with thread_limit(self.config.num_threads):
            gpu = self.faiss_gpu
            for lo, hi in chunks:
                prefix, residual = self._prefix_and_residual(x[lo:hi])
                codes[lo:hi, :-1] = prefix
                codes[lo:hi, -1] = nearest(residual, last_book, gpu)
                kept = residual if len(chunks) == 1 else None
        aware = self.config.collision_aware if collision_aware is None else collision_aware
        if aware:
            def residual_rows(rows: np.ndarray) -> np.ndarray:
                if kept is not None:
                    return kept[rows]
                with thread_limit(self.config.num_threads):
                    return self._residual(x[rows], codes[rows, :-1])

            codes[:, -1] = assign_distinct_last(codes[:, :-1], residual_rows, last_book, codes[:, -1],
                                                self.codebook_sizes[:-1], taken, self.config.chunk_size)
        return codes

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
