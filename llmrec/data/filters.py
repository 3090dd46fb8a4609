"""Dataset filters from the config: minimum history per user / item and iterated k-core. Their effect is
logged and returned (``InteractionData.filter_report``), never silent."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Any

from llmrec.data.schema import InteractionData
from llmrec.errors import DataError

logger = logging.getLogger(__name__)
# Stop a k-core that has not converged by then (each round removes something, so this is generous).
_MAX_ROUNDS = 1000


def counts(data: InteractionData) -> dict[str, int]:
    return {"users": len({x.user_id for x in data.interactions}), "items": len(data.items),
            "interactions": len(data.interactions)}


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
    before = counts(data)
    interactions, items = list(data.interactions), dict(data.items)
    interactions, items = _pass(interactions, items, min_user_interactions, min_item_interactions)
    rounds = 0
    if k_core:
        while rounds < _MAX_ROUNDS:
            rounds += 1
            n_before = (len(interactions), len(items))
            interactions, items = _pass(interactions, items, k_core, k_core)
            if (len(interactions), len(items)) == n_before:
                break
    if not interactions:
        raise DataError(f"the filters {_settings_text(settings)} removed every interaction", path=data.source or None)
    users = {x.user_id for x in interactions}
    out = dataclasses.replace(
        data, items=items, interactions=interactions, users={u: f for u, f in data.users.items() if u in users}
    )
    report = {**(data.filter_report or {}), **settings, "before": before, "after": counts(out)}
    if k_core:
        report["k_core_rounds"] = rounds
    logger.info("%s: filters %s", data.name, format_report(report))
    return out, report


def _pass(interactions, items, min_user: int, min_item: int):
    if min_user:
        per_user = Counter(x.user_id for x in interactions)
        interactions = [x for x in interactions if per_user[x.user_id] >= min_user]
    if min_item:
        per_item = Counter(x.item_id for x in interactions)
        items = {k: v for k, v in items.items() if per_item[k] >= min_item}
        interactions = [x for x in interactions if x.item_id in items]
    return interactions, items


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
