"""One call from a catalogue to a semantic-ID table plus its diagnostics.

>>> from llmrec.data import load_dataset
>>> from llmrec.items import SemanticIdConfig, build_semantic_ids
>>> sids, report = build_semantic_ids(load_dataset("ml-100k"), SemanticIdConfig())   # doctest: +SKIP
>>> sids.sid_string("1"), report["unique_fraction"]                                    # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmrec.config import Config
from llmrec.data.schema import InteractionData
from llmrec.errors import ConfigError, DataError
from llmrec.items.collaborative import VECTOR_SOURCES, fuse_vectors
from llmrec.items.diagnostics import diagnostics
from llmrec.items.encoders import DEFAULT_TEMPLATE, EncoderConfig, encode_items
from llmrec.items.quantizers import QuantizerConfig, make_quantizer
from llmrec.items.semantic_ids import SemanticIds

logger = logging.getLogger(__name__)


@dataclass
class SemanticIdConfig(Config):
    """Everything that decides the IDs; saved as ``config.json`` beside the table and checked on load."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    template: str = DEFAULT_TEMPLATE
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    # What is quantized: item text vectors, a trained sequence recommender's item table, or both concatenated
    # (see llmrec.items.collaborative). Collaborative sources need ``collaborative=`` at build time.
    vectors: str = "text"
    collaborative_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.vectors not in VECTOR_SOURCES:
            raise ConfigError(f"vectors must be one of {VECTOR_SOURCES}, got {self.vectors!r}")
        if self.collaborative_weight <= 0:
            raise ConfigError(f"collaborative_weight must be > 0, got {self.collaborative_weight}")


def build_semantic_ids(
    data: InteractionData,
    config: SemanticIdConfig | None = None,
    *,
    vectors: np.ndarray | None = None,
    collaborative: np.ndarray | None = None,
    cache_dir: str | None = None,
    show_progress: bool = True,
) -> tuple[SemanticIds, dict[str, Any]]:
    """Encode (cached) and quantize ``data.items``; returns the table and a diagnostics dict with timings.

    Pass ``vectors`` (``[n_items, d]``, catalogue order) to skip encoding, and ``collaborative`` (same row
    order, e.g. :func:`~llmrec.items.collaborative.collaborative_vectors`) when ``config.vectors`` uses it.
    """
    config = config or SemanticIdConfig()
    if not data.items:
        raise DataError("the catalogue is empty: no items to build semantic IDs for", path=data.source or None,
                        field="items")
    start = time.perf_counter()
    if config.vectors == "collaborative":
        vectors = np.zeros((len(data.items), 0), dtype=np.float32)  # text is not needed
    elif vectors is None:
        vectors = encode_items(data, config.encoder, config.template, cache_dir=cache_dir, show_progress=show_progress)
    elif len(vectors) != len(data.items):
        raise DataError(f"{len(vectors)} vectors for {len(data.items)} items", field="vectors")
    if collaborative is not None and len(collaborative) != len(data.items):
        raise DataError(f"{len(collaborative)} collaborative vectors for {len(data.items)} items", field="collaborative")
    vectors = fuse_vectors(vectors, collaborative, config.vectors, config.collaborative_weight)
    encoded = time.perf_counter()
    quantizer = make_quantizer(config.quantizer)
    codes = quantizer.fit(vectors)
    sids = SemanticIds.from_quantized(
        list(data.items), codes, quantizer.codebook_sizes, config=config.to_dict(), quantizer=quantizer,
        meta={"dataset": data.name},
    )
    quantized = time.perf_counter()
    # Coherence over the dataset's category attribute (all tags, "unknown" included, as measured before)
    categories = [data.item_categories(item_id) for item_id in data.items] if data.has_categories else None
    report = diagnostics(sids, vectors, quantizer, categories if categories and any(categories) else None)
    report.update({
        "quantizer": config.quantizer.kind,
        "encode_seconds": round(encoded - start, 3),
        "quantize_seconds": round(quantized - encoded, 3),
        "seconds": round(time.perf_counter() - start, 3),
    })
    if quantizer.kind == "rqvae":
        report["rqvae_epochs"] = len(quantizer.history)
    logger.info("semantic IDs: %d items, collision rate %.4f", len(sids), sids.collision_rate)
    return sids, report
