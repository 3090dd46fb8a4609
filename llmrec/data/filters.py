"""Dataset filters from the config: minimum history per user / item and iterated k-core. Their effect is
logged and returned (``InteractionData.filter_report``), never silent."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from llmrec.data.schema import InteractionData
from llmrec.errors import DataError

if TYPE_CHECKING:
    from llmrec.data.columnar import InteractionTable

logger = logging.getLogger(__name__)
# Stop a k-core that has not converged by then (each round removes something, so this is generous).
_MAX_ROUNDS = 1000


def counts(data: InteractionData) -> dict[str, int]:
    table = data.table
    return {"users": table.n_users, "items": len(data.items), "interactions": len(table)}


def apply_filters(
    data: InteractionData, min_user_interactions: int = 0, min_item_interactions: int = 0, k_core: int = 0
) -> tuple[InteractionData, dict[str, Any] | None]:
    """Drop users, then items, with fewer interactions than asked (one pass); then, with ``k_core``, repeat
    both at that threshold until stable. Items below the item threshold leave the catalogue too.

    Returns the filtered data and a report (settings, counts before and after, k-core rounds), or
    ``(data, None)`` when no filter is set.
    """
    settings = {"min_user_interactions": min_user_interactions, "min_item_interactions": min_item_interactions,
                "k_core": k_core}
    if not any(settings.values()):
        return data, data.filter_report
    import pyarrow as pa  # here, so importing llmrec.data stays light

    before = counts(data)
    table = data.table
    # Catalogue items are kept by id; interactions with items outside the catalogue go with the first item filter.
    in_catalogue = np.array([i in data.items for i in table.item_id_list()], dtype=bool)
    keep_items = np.ones(len(in_catalogue), dtype=bool)
    table, keep_items = _pass(table, keep_items, in_catalogue, min_user_interactions, min_item_interactions)
    rounds = 0
    if k_core:
        while rounds < _MAX_ROUNDS:
            rounds += 1
            n_before = (len(table), int(keep_items.sum()))
            table, keep_items = _pass(table, keep_items, in_catalogue, k_core, k_core)
            if (len(table), int(keep_items.sum())) == n_before:
                break
    if not len(table):
        raise DataError(f"the filters {_settings_text(settings)} removed every interaction", path=data.source or None)
    kept_ids = set(table.item_ids.filter(pa.array(keep_items[: len(table.item_ids)])).to_pylist()) \
        if not keep_items.all() else None
    items = data.items if kept_ids is None else {k: v for k, v in data.items.items() if k in kept_ids}
    users = set(table.user_id_list())
    out = dataclasses.replace(
        data, items=dict(items), interactions=table, users={u: f for u, f in data.users.items() if u in users}
    )
    report = {**(data.filter_report or {}), **settings, "before": before, "after": counts(out)}
    if k_core:
        report["k_core_rounds"] = rounds
    logger.info("%s: filters %s", data.name, format_report(report))
    return out, report


def _pass(table: InteractionTable, keep_items: np.ndarray, in_catalogue: np.ndarray, min_user: int, min_item: int):
    """One user pass then one item pass; ``keep_items`` (by item code) marks the catalogue items still kept."""
    if min_user:
        enough = table.lengths >= min_user
        if not enough.all():
            table = table.take_rows(np.repeat(enough, table.lengths))
    if min_item:
        per_item = np.bincount(table.item, minlength=len(keep_items))
        keep_items = keep_items & (per_item >= min_item) & in_catalogue
        rows = keep_items[table.item]
        if not rows.all():
            table = table.take_rows(rows)
    return table, keep_items


def _settings_text(report: dict[str, Any]) -> str:
    keys = ("min_user_interactions", "min_item_interactions", "k_core")
    return ", ".join(f"{k}={report[k]}" for k in keys if report.get(k))


def format_report(report: dict[str, Any]) -> str:
    """One line: ``k_core=5: users 943 -> 940, items 1682 -> 1349, interactions ... (3 k-core rounds)``."""
    dropped = report.get("drop_incomplete")
    incomplete = (f"dropped {dropped['untitled_items']} untitled item(s) and "
                  f"{dropped['unknown_item_interactions']} interaction(s) with unknown items") if dropped else ""
    if "before" not in report:
        return incomplete
    incomplete = f"; {incomplete}" if incomplete else ""
    b, a = report["before"], report["after"]
    changes = ", ".join(f"{k} {b[k]} -> {a[k]}" for k in ("users", "items", "interactions"))
    rounds = f" ({report['k_core_rounds']} k-core rounds)" if "k_core_rounds" in report else ""
    return f"{_settings_text(report)}: {changes}{rounds}{incomplete}"
