"""Data layer: schema, dataset configs, format readers (MovieLens, RecBole, Amazon, LaMP, generic record
files), filters, splits and statistics."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from llmrec.data.config import CONFIG_SUFFIXES, DatasetConfig
from llmrec.data.filters import apply_filters
from llmrec.data.generic import load_generic
from llmrec.data.lamp import LampQuestion, load_lamp_outputs, load_lamp_questions
from llmrec.data.movielens import ML_CATEGORY_FIELDS, ML_VOCABULARY, load_movielens
from llmrec.data.schema import Interaction, InteractionData, Item, UserHistory
from llmrec.data.splits import Split, SplitExample, by_time, leave_one_out
from llmrec.errors import DataError

__all__ = [
    "BUILTIN_DATASETS", "DataError", "DatasetConfig", "InteractionData", "Interaction", "Item", "LampQuestion",
    "Split", "SplitExample", "UserHistory", "by_time", "leave_one_out", "load_dataset", "load_generic",
    "load_lamp_outputs", "load_lamp_questions", "load_movielens", "resolve_dataset_config",
]

logger = logging.getLogger(__name__)


def _ml100k() -> DatasetConfig:
    # path None: the cached offline copy (llmrec resources fetch). MovieLens' category attribute and nouns.
    return DatasetConfig(
        name="ml-100k", format="movielens", category=list(ML_CATEGORY_FIELDS),
        vocabulary={k: v for k, v in dataclasses.asdict(ML_VOCABULARY).items()},
    )


# Built-in dataset names -> their config (a factory, so callers may change what they get).
BUILTIN_DATASETS = {"ml-100k": _ml100k, "movielens-100k": _ml100k}


def resolve_dataset_config(spec: str | Path | DatasetConfig = "ml-100k") -> DatasetConfig:
    """The ``DatasetConfig`` behind a built-in name, a config file (.yaml/.yml/.json), a MovieLens or RecBole
    folder, or a config (returned as is)."""
    if isinstance(spec, DatasetConfig):
        return spec
    if str(spec) in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[str(spec)]()
    path = Path(spec)
    if path.suffix.lower() in CONFIG_SUFFIXES and not path.is_dir():
        if not path.is_file():
            raise DataError("dataset config file not found", path=path)
        return DatasetConfig.from_file(path)
    if path.is_dir():
        folder = str(path.resolve())
        movielens = any(path.glob("ml-*.inter")) or any((path / f).exists() for f in (
            "u.data", "u.item", "ratings.dat", "movies.dat", "ratings.csv", "movies.csv"))
        # No name: the reader's (ml-100k, ml-1m, the RecBole file stem) is filled in after reading.
        if not movielens and any(path.glob("*.inter")):
            return DatasetConfig(format="recbole", path=folder)
        return DatasetConfig(format="movielens", path=folder)
    raise DataError(
        f"unknown dataset: give one of {sorted(BUILTIN_DATASETS)}, a dataset config (.yaml/.yml/.json), "
        "or a MovieLens / RecBole folder",
        path=path,
    )


def load_dataset(spec: str | Path | DatasetConfig = "ml-100k") -> InteractionData:
    """Load, validate and filter a dataset; ``.config`` is the resolved ``DatasetConfig`` and
    ``.filter_report`` what its filters removed (``None`` when it has none)."""
    from llmrec.data.formats import FORMATS

    cfg = resolve_dataset_config(spec)
    cfg.check_complete()
    data = FORMATS[cfg.format].read(cfg)
    if cfg.name:
        data.name = cfg.name
    else:
        cfg = dataclasses.replace(cfg, name=data.name)
    if cfg.category_fields is not None:
        data.category_fields = cfg.category_fields
        attributes = set().union(*(it.attributes for it in data.items.values()))
        for name in data.category_fields:
            if name not in attributes:
                raise DataError(f"the category attribute {name!r} is in no item; attributes are "
                                f"{sorted(attributes)}", path=data.source or None, field=name)
    data.vocabulary = cfg.make_vocabulary(data.vocabulary)
    data, report = apply_filters(data, cfg.min_user_interactions, cfg.min_item_interactions, cfg.k_core)
    data.config = cfg
    data.filter_report = report
    return data
