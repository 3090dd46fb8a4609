"""Generic catalogues and interactions from JSONL / JSON / CSV / TSV / Parquet.

Catalogue records need ``item_id`` and ``title``; every other field becomes an item attribute.
Interaction records need ``user_id``, ``item_id``, ``timestamp``; ``rating`` and ``text`` are optional.
Column names can be mapped with ``columns={"our_name": "their_name"}``.
"""

from __future__ import annotations

from pathlib import Path

from llmrec.data.builder import DatasetBuilder, field_float, field_int, field_str
from llmrec.data.readers import iter_records
from llmrec.data.schema import InteractionData
from llmrec.errors import DataError

ITEM_FIELDS = ("item_id", "title")
INTERACTION_FIELDS = ("user_id", "item_id", "timestamp", "rating", "text")


def load_generic(
    items_path: str | Path,
    interactions_path: str | Path,
    *,
    name: str | None = None,
    rating_range: tuple[float, float] | None = None,
    columns: dict[str, str] | None = None,
) -> InteractionData:
    cols = {k: k for k in ITEM_FIELDS + INTERACTION_FIELDS}
    cols.update(columns or {})
    items_path, interactions_path = Path(items_path), Path(interactions_path)
    b = DatasetBuilder(name or interactions_path.stem, rating_range, source=str(interactions_path))
    renamed_away = {cols["item_id"], cols["title"]}
    for rid, rec in iter_records(items_path):
        item_id = field_str(rec, cols["item_id"], items_path, rid)
        title = rec.get(cols["title"])
        if title is not None and not isinstance(title, str):
            raise DataError(f"expected text, got {type(title).__name__}", path=items_path, record=rid, field=cols["title"])
        attrs = {k: v for k, v in rec.items() if k not in renamed_away}
        b.add_item(item_id, title, attrs, path=items_path, record=rid)
    for rid, rec in iter_records(interactions_path):
        text = rec.get(cols["text"])
        if text is not None and not isinstance(text, str):
            raise DataError(
                f"expected text, got {type(text).__name__}", path=interactions_path, record=rid, field=cols["text"]
            )
        b.add_interaction(
            field_str(rec, cols["user_id"], interactions_path, rid),
            field_str(rec, cols["item_id"], interactions_path, rid),
            field_int(rec, cols["timestamp"], interactions_path, rid),
            field_float(rec, cols["rating"], interactions_path, rid),
            text,
            path=interactions_path,
            record=rid,
        )
    return b.build()
