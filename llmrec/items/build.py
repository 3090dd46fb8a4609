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
from pathlib import Path
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
    genres = None
    if all(isinstance(item.attributes.get("genres"), (list, tuple)) for item in data.items.values()):
        genres = [item.attributes["genres"] for item in data.items.values()]
    report = diagnostics(sids, vectors, quantizer, genres)
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


def load_built_semantic_ids(directory: str | Path, data: InteractionData) -> tuple[SemanticIds, SemanticIdConfig]:
    """A table written by ``llmrec items build --out DIR`` (or saved in a model's ``sids/``), checked against
    ``data``'s catalogue and returned in catalogue order, with the config it was built with: recipes reuse it
    (``--sids DIR``) instead of quantizing again, and encode item vectors with its encoder and template.

    Every catalogue item must have an ID and every ID must be a catalogue item; otherwise a DataError names the
    table file, the first offending item and how many there are."""
    directory = Path(directory)
    table_file = directory / "semantic_ids.json"
    if not table_file.is_file():
        raise DataError("not a semantic-ID table (no semantic_ids.json); build one with `llmrec items build --out "
                        "DIR`", path=directory)
    sids = SemanticIds.load(directory)
    try:
        config = SemanticIdConfig.from_dict(sids.config, source=str(directory / "config.json"))
    except ConfigError as exc:
        raise DataError(f"the table's build config does not load: {exc}", path=directory / "config.json") from exc
    built_for = sids.meta.get("dataset")
    hint = f" (the table was built for dataset {built_for!r}; rebuild it for this one with `llmrec items build`)"
    known = set(sids.item_ids)
    missing = [i for i in data.items if i not in known]
    if missing:
        raise DataError(f"{len(missing)} of {len(data.items)} catalogue item(s) of dataset {data.name!r} have no "
                        f"semantic ID{hint}", path=table_file, record=missing[0], field="item_ids")
    unknown = [i for i in sids.item_ids if i not in data.items]
    if unknown:
        raise DataError(f"{len(unknown)} item(s) in the table are not in the catalogue of dataset {data.name!r}"
                        f"{hint}", path=table_file, record=unknown[0], field="item_ids")
    if sids.item_ids != list(data.items):  # same items, other order: rows follow the catalogue, codes unchanged
        rows = [sids.row(i) for i in data.items]
        sids = SemanticIds(list(data.items), sids.codes[rows], sids.codebook_sizes, config=sids.config,
                           codebooks=sids.codebooks, quantizer=sids.quantizer, meta=sids.meta)
    logger.info("semantic IDs: reusing %s (%d items, %d levels)", directory, len(sids), sids.levels)
    return sids, config
