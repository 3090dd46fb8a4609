"""Popularity: the simplest honest baseline, with exact interaction counts and no leakage.

For a leave-one-out split the counts a stage may use are:

* validation: the training histories only (every user's interactions before their validation item);
* test: the training histories plus every validation item (everything except the test items).

RecBole's Pop counts an item once per batch; here every interaction counts once, exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from llmrec.data.splits import Split
from llmrec.errors import DataError


def popularity_counts(sequences: Iterable[Sequence[str]], item_ids: Sequence[str]) -> np.ndarray:
    """Exact number of interactions per catalogue item (in ``item_ids`` order) over ``sequences``."""
    index = {item: i for i, item in enumerate(item_ids)}
    counts = np.zeros(len(item_ids), dtype=np.int64)
    for row, seq in enumerate(sequences):
        for item in seq:
            col = index.get(item)
            if col is None:
                raise DataError(f"item {item!r} is not in the catalogue", record=row, field="item_id")
            counts[col] += 1
    return counts


def split_counts(split: Split, stage: str, item_ids: Sequence[str]) -> np.ndarray:
    """Counts a model evaluated on ``stage`` ("valid" or "test") may see: never that stage's own targets."""
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
    sequences: list[Sequence[str]] = [h.item_ids for h in split.train.values()]
    if stage == "test":
        sequences.append([ex.target for ex in split.valid])
    return popularity_counts(sequences, item_ids)


class Popularity:
    """Scores every item by its training count; identical for every user (ties by catalogue index)."""

    def __init__(self, item_ids: Sequence[str], counts: np.ndarray) -> None:
        counts = np.asarray(counts)
        if counts.shape != (len(item_ids),):
            raise DataError(f"counts must have shape ({len(item_ids)},), got {counts.shape}", field="counts")
        self.item_ids = list(item_ids)
        self.counts = counts

    @classmethod
    def from_split(cls, split: Split, stage: str, item_ids: Sequence[str]) -> Popularity:
        return cls(item_ids, split_counts(split, stage, item_ids))

    def scores(self, n_users: int) -> np.ndarray:
        """A ``[n_users, n_items]`` score matrix for :func:`llmrec.evaluation.ranking.full_catalogue_metrics`."""
        return np.broadcast_to(self.counts.astype(np.float64), (n_users, len(self.item_ids)))

    def recommend(self, history: Iterable[str] = (), k: int = 10, exclude_history: bool = True) -> list[str]:
        from llmrec.evaluation.ranking import topk_from_scores

        exclude = [set(history)] if exclude_history else None
        return topk_from_scores(self.scores(1), self.item_ids, exclude, k)[0]
