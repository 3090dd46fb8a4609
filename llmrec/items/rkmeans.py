"""Residual k-means: seeded faiss k-means on each level's residuals. No training loop, the fast default.

Fitting touches at most ``codebook_size * max_points_per_centroid`` rows (a seeded sample when there are more),
so its cost and memory do not grow with the catalogue; encoding then runs in chunks.
"""

from __future__ import annotations

import logging

import numpy as np

from llmrec.items.quantizers import Quantizer, capped_size, kmeans, nearest, sample_rows
from llmrec.progress import progress

logger = logging.getLogger(__name__)


class ResidualKMeans(Quantizer):
    """Level l clusters the residuals left by levels < l; codebooks live in the input space."""

    kind = "rkmeans"

    def __init__(self, config) -> None:
        super().__init__(config)
        self._codebooks: list[np.ndarray] = []

    def _fit(self, x: np.ndarray) -> None:
        cfg = self.config
        size = capped_size(cfg.codebook_size, len(x), cfg.min_points_per_code)
        if size < cfg.codebook_size:
            logger.warning(
                "%d items: codebooks capped at %d codes per level (n_items / min_points_per_code=%d)",
                len(x), size, cfg.min_points_per_code,
            )
        # faiss would subsample each level to this many rows anyway; sampling once here keeps the residuals
        # of the whole catalogue from ever existing. Up to the cap every row is used, as always.
        rows = sample_rows(len(x), size * cfg.max_points_per_centroid, cfg.seed)
        residual = x.copy() if rows is None else x[rows]
        if rows is not None:
            logger.info("residual k-means: fitting on %d sampled items of %d", len(rows), len(x))
        gpu = self.faiss_gpu
        self._codebooks = []
        for level in progress(range(cfg.levels), desc=f"residual k-means ({len(x)} items)", unit="level"):
            centroids = kmeans(residual, size, cfg.seed + level, cfg.kmeans_iters, cfg.max_points_per_centroid, gpu)
            self._codebooks.append(centroids)
            residual -= centroids[nearest(residual, centroids, gpu)]
        self.codebook_sizes = (size,) * cfg.levels

    def _prefix_and_residual(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        residual = x.copy()
        codes = np.zeros((len(x), self.config.levels - 1), dtype=np.int64)
        gpu = self.faiss_gpu
        for level, book in enumerate(self._codebooks[:-1]):
            codes[:, level] = nearest(residual, book, gpu)
            residual -= book[codes[:, level]]
        return codes, residual

    def _residual(self, x: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        residual = x.copy()
        for level, book in enumerate(self._codebooks[:-1]):
            residual -= book[prefix[:, level]]
        return residual

    @property
    def codebooks(self) -> list[np.ndarray]:
        return self._codebooks

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        self._check_fitted()
        codes = np.asarray(codes, dtype=np.int64)
        out = np.zeros((codes.shape[0], self.input_dim or 0), dtype=np.float32)
        for level, book in enumerate(self._codebooks):
            out += book[codes[:, level]]
        return out

    def _state(self) -> dict[str, np.ndarray]:
        return {f"codebook.{i}": c for i, c in enumerate(self._codebooks)}

    def _load_state(self, tensors: dict[str, np.ndarray]) -> None:
        self._codebooks = [tensors[f"codebook.{i}"].astype(np.float32) for i in range(self.config.levels)]
