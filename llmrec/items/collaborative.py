"""Collaborative item vectors for semantic IDs: the item table of a trained sequence recommender.

Text-only IDs group items that *read* alike; the next-item task needs items that are *watched* alike.
Indexing with collaborative signal is what "How to Index Item IDs for Recommendation Foundation Models"
(Hua et al., 2023) and LETTER/LC-Rec found to matter for generative retrieval. ``fuse_vectors`` keeps the
text block so codes stay interpretable and new items (no interactions) still get a text-only position.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from llmrec.errors import ConfigError, DataError

VECTOR_SOURCES = ("text", "collaborative", "text+collaborative")


def collaborative_vectors(encoder, item_ids: Sequence[str]) -> np.ndarray:
    """Rows of a trained :class:`~llmrec.users.sequence.SequenceEncoder`'s item table, in ``item_ids`` order.

    The encoder must have been trained on training interactions only (never validation/test targets).
    """
    known = encoder.item_ids or []
    index = {item: i + 1 for i, item in enumerate(known)}
    missing = [i for i in item_ids if i not in index]
    if missing:
        raise DataError(f"{len(missing)} items are unknown to the sequence encoder (first: {missing[0]!r})",
                        field="item_ids")
    with torch.no_grad():
        table = encoder.item_table().float().cpu().numpy()
    return table[[index[i] for i in item_ids]]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fuse_vectors(
    text: np.ndarray | None, collaborative: np.ndarray | None, source: str, collaborative_weight: float = 1.0
) -> np.ndarray:
    """Vectors to quantize for ``source`` (one of :data:`VECTOR_SOURCES`).

    Each block is L2-normalised per row, so ``collaborative_weight`` is the share of squared distance the
    collaborative block contributes relative to text (1.0 = equal).
    """
    if source not in VECTOR_SOURCES:
        raise ConfigError(f"vector source must be one of {VECTOR_SOURCES}, got {source!r}")
    if source == "text":
        if text is None:
            raise DataError("source 'text' needs text vectors", field="vectors")
        return np.asarray(text, dtype=np.float32)
    if collaborative is None:
        raise DataError(f"source {source!r} needs collaborative vectors (a trained sequence encoder's item table)",
                        field="collaborative")
    if source == "collaborative":
        return _unit_rows(collaborative)
    if text is None or len(text) != len(collaborative):
        raise DataError("text and collaborative vectors must both be given, one row per item", field="vectors")
    if collaborative_weight <= 0:
        raise ConfigError(f"collaborative_weight must be > 0, got {collaborative_weight}")
    return np.concatenate([_unit_rows(text), np.sqrt(collaborative_weight) * _unit_rows(collaborative)], axis=1)
