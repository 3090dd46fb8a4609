"""Data layer: schema, loaders (MovieLens, generic files, LaMP), splits and statistics."""

from __future__ import annotations

from pathlib import Path

from llmrec.data.generic import load_generic
from llmrec.data.lamp import LampQuestion, load_lamp_outputs, load_lamp_questions
from llmrec.data.movielens import load_movielens
from llmrec.data.schema import Interaction, InteractionData, Item, UserHistory
from llmrec.data.splits import Split, SplitExample, by_time, leave_one_out
from llmrec.errors import DataError

__all__ = [
    "DataError", "InteractionData", "Interaction", "Item", "LampQuestion", "Split", "SplitExample", "UserHistory",
    "by_time", "leave_one_out", "load_dataset", "load_generic", "load_lamp_outputs", "load_lamp_questions",
    "load_movielens",
]


def load_dataset(name_or_path: str | Path = "ml-100k", **kwargs) -> InteractionData:
    """``"ml-100k"`` (offline default) or a MovieLens folder in either layout."""
    if str(name_or_path) in ("ml-100k", "movielens-100k"):
        return load_movielens(None)
    path = Path(name_or_path)
    if path.is_dir():
        return load_movielens(path)
    raise DataError(
        "unknown dataset: give 'ml-100k', a MovieLens folder, or use load_generic(items, interactions)", path=path
    )
