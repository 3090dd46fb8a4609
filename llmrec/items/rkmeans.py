"""Residual k-means: seeded faiss k-means on each level's residuals. No training loop, the fast default."""

from __future__ import annotations

import logging

import numpy as np

from llmrec.items.quantizers import Quantizer, capped_size, kmeans, nearest
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
        residual = x.copy()
        self._codebooks = []
        for level in progress(range(cfg.levels), desc=f"residual k-means ({len(x)} items)", unit="level"):
            centroids = kmeans(residual, size, cfg.seed + level, cfg.kmeans_iters)
            self._codebooks.append(centroids)
            residual -= centroids[nearest(residual, centroids)]
        self.codebook_sizes = (size,) * cfg.levels

    def _prefix_and_residual(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        residual = x.copy()
        codes = np.zeros((len(x), self.config.levels - 1), dtype=np.int64)
        for level, book in enumerate(self._codebooks[:-1]):
            codes[:, level] = nearest(residual, book)
            residual -= book[codes[:, level]]
        return codes, residual

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
