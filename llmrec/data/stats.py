"""Summary statistics of a dataset or of LaMP files (what `llmrec data info` prints)."""

from __future__ import annotations

from typing import Any

import numpy as np

from llmrec.data.lamp import LampQuestion
from llmrec.data.schema import InteractionData


def _percentiles(values: list[int] | np.ndarray) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    qs = (0, 25, 50, 75, 90, 99, 100)
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs} | {"mean": float(arr.mean())}


def dataset_info(data: InteractionData) -> dict[str, Any]:
    table = data.table  # columns: no Python object per interaction
    n_users, n_items, n_inter = table.n_users, len(data.items), len(table)
    ratings = table.rating[table.file_order()].astype(np.float64)  # file order: the mean sums as it always did
    ratings = ratings[~np.isnan(ratings)]
    stamps = table.timestamp
    interacted = np.unique(table.item)
    pairs = np.unique(table.user.astype(np.int64) * len(table.item_ids) + table.item) if n_inter else np.zeros(0)
    info: dict[str, Any] = {
        "name": data.name,
        "source": data.source,
        "users": n_users,
        "items": n_items,
        "interactions": n_inter,
        "density": n_inter / (n_users * n_items),
        "items_without_interactions": n_items - len(interacted),
        "repeat_interactions": n_inter - len(pairs),
        "history_length": _percentiles(table.lengths),
        "time_span": [int(stamps.min()), int(stamps.max())],
    }
    if data.has_categories:
        info["category_fields"] = list(data.category_fields)
        info["categories"] = len({c for item_id in data.items for c in data.item_categories(item_id)})
    if data.filter_report is not None:
        info["filters"] = data.filter_report
    if len(ratings):
        values, counts = np.unique(ratings, return_counts=True)
        info["ratings"] = {
            "count": len(ratings),
            "mean": float(np.mean(ratings)),
            "distribution": {f"{v:g}": int(c) for v, c in zip(values, counts, strict=True)},
        }
    return info


def lamp_info(questions: list[LampQuestion], task: str | None = None, n_golds: int | None = None) -> dict[str, Any]:
    sizes = [len(q.profile) for q in questions]
    input_words = [len(q.input.split()) for q in questions]
    info: dict[str, Any] = {
        "task": task,
        "questions": len(questions),
        "profile_items": int(sum(sizes)),
        "profile_size": _percentiles(sizes),
        "input_words": _percentiles(input_words),
    }
    if n_golds is not None:
        info["golds"] = n_golds
    return info
