"""Record files -> ``InteractionData``: the ``generic`` format, and the engine the Amazon and RecBole readers
share (they only preset the column names and tidy their metadata).

Catalogue records need ``item_id`` and ``title``; every other field becomes an item attribute.
Interaction records need ``user_id``, ``item_id``, ``timestamp``; ``rating`` and ``text`` are optional.
``columns={"our_name": "their_name"}`` maps column names; a key that is not one of our fields renames an item
attribute (``{"topic": "category"}``: attribute ``topic`` from column ``category``). A column that the
mapping names but the file lacks is an error naming the file and the column.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrec.data.builder import DatasetBuilder, field_float, field_str
from llmrec.data.readers import iter_records, parse_json_line
from llmrec.data.schema import InteractionData, Vocabulary
from llmrec.data.timestamps import field_timestamp
from llmrec.errors import DataError

if TYPE_CHECKING:
    from llmrec.data.config import DatasetConfig

ITEM_FIELDS = ("item_id", "title")
INTERACTION_FIELDS = ("user_id", "item_id", "timestamp", "rating", "text")
_REQUIRED_INTERACTION = ("user_id", "item_id", "timestamp")
logger = logging.getLogger(__name__)
Rows = Iterable[tuple[str, dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a record format looks like before a config's own settings apply.

    ``columns``: our field -> the file's column (``None``: not read unless the config maps it).
    ``item_transform``: tidies one raw catalogue record (e.g. Amazon's nested category paths).
    ``drop_item_columns``: raw columns not kept as attributes (image URLs, related-product lists).
    ``skip_identical_items``: a repeated catalogue record with the same title is skipped and counted
    (Amazon 2018 metadata repeats records); a differing repeat is still an error.
    """

    columns: Mapping[str, str | None] = dataclasses.field(default_factory=lambda: {f: f for f in ITEM_FIELDS + INTERACTION_FIELDS})
    rating_range: tuple[float, float] | None = None
    category: tuple[str, ...] = ()
    vocabulary: Vocabulary = dataclasses.field(default_factory=Vocabulary)
    parse_item_line: Callable[[str], Any] = parse_json_line
    item_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    drop_item_columns: frozenset[str] = frozenset()
    skip_identical_items: bool = False


def load_generic(
    items_path: str | Path,
    interactions_path: str | Path,
    *,
    name: str | None = None,
    rating_range: tuple[float, float] | None = None,
    columns: dict[str, str] | None = None,
    timestamp_format: str = "auto",
) -> InteractionData:
    """Two record files without a config file (``load_dataset`` with a ``DatasetConfig`` adds filters)."""
    from llmrec.data.config import DatasetConfig

    cfg = DatasetConfig(
        name=name or Path(interactions_path).stem, items=str(items_path), interactions=str(interactions_path),
        columns=dict(columns or {}), rating_range=rating_range, timestamp_format=timestamp_format,
    )
    data = read_generic(cfg)
    data.config = cfg
    return data


def read_generic(cfg: DatasetConfig) -> InteractionData:
    return load_records(cfg, Layout())


def load_records(
    cfg: DatasetConfig,
    layout: Layout,
    *,
    name: str | None = None,
    paths: tuple[str, str, str | None] | None = None,
    item_rows: Rows | None = None,
    interaction_rows: Rows | None = None,
    user_rows: Rows | None = None,
) -> InteractionData:
    """Build from ``cfg.items`` / ``cfg.interactions`` / ``cfg.users``, or from rows a reader already parsed
    (``paths``: the items / interactions / users files they came from, for messages)."""
    items_path, inter_path, users_path = paths or (str(cfg.items), str(cfg.interactions), cfg.users)
    fast_ok = interaction_rows is None  # files (not rows a reader parsed) may take the vectorised path
    if item_rows is None:
        item_rows = iter_records(items_path, layout.parse_item_line)
    if interaction_rows is None:
        interaction_rows = iter_records(inter_path)
    if user_rows is None and users_path:
        user_rows = iter_records(users_path)
    cols = {k: v for k, v in layout.columns.items()}
    cols.update(cfg.columns)
    renames = {k: v for k, v in cols.items() if k not in ITEM_FIELDS + INTERACTION_FIELDS}
    category = cfg.category_fields if cfg.category_fields is not None else layout.category
    b = DatasetBuilder(
        name or cfg.name or Path(inter_path).stem, cfg.rating_range or layout.rating_range, source=inter_path,
        category_fields=category, vocabulary=cfg.make_vocabulary(layout.vocabulary),
    )
    dropped = {"untitled_items": 0, "unknown_item_interactions": 0}
    _read_items(b, item_rows, items_path, cfg, layout, cols, renames, dropped)
    if user_rows is not None:
        _read_users(b, user_rows, str(users_path), cols)
    if not (fast_ok and _fast_interactions(b, inter_path, cfg, cols, dropped)):
        _read_interactions(b, interaction_rows, inter_path, cfg, cols, dropped)
    data = b.build()
    if cfg.drop_incomplete:
        data.filter_report = {"drop_incomplete": dropped}
        logger.info("%s: drop_incomplete: %d untitled item(s), %d interaction(s) with items not in the catalogue",
                    data.name, dropped["untitled_items"], dropped["unknown_item_interactions"])
    return data


def missing_column(path: str, column: str, our: str, rec: Mapping[str, Any]) -> DataError:
    mapped = f" (columns.{our})" if our != column else ""
    return DataError(
        f"column {column!r}{mapped} is not in this file; its columns are {sorted(rec)}", path=path, field=column
    )


def _check_columns(path: str, first: Mapping[str, Any], seen: set[str], wanted: Mapping[str, str | None]) -> None:
    for our, column in wanted.items():
        if column is not None and column not in seen:
            raise missing_column(path, column, our, first)


def _read_items(
    b: DatasetBuilder, rows: Rows, path: str, cfg: DatasetConfig, layout: Layout,
    cols: Mapping[str, str | None], renames: Mapping[str, str], dropped: dict[str, int],
) -> None:
    id_col, title_col = cols["item_id"], cols["title"]
    kept_away = {id_col, title_col, *renames.values()} | layout.drop_item_columns
    first: dict[str, Any] | None = None
    seen: set[str] = set()
    repeats = 0
    for rid, rec in rows:
        if layout.item_transform is not None:
            rec = layout.item_transform(rec)
        if first is None:
            first = rec
            _check_columns(path, rec, set(rec), {"item_id": id_col, "title": title_col})
        seen.update(rec)
        item_id = field_str(rec, id_col, path, rid)
        title = rec.get(title_col)
        if title is not None and not isinstance(title, str):
            raise DataError(f"expected text, got {type(title).__name__}", path=path, record=rid, field=title_col)
        attrs = {k: v for k, v in rec.items() if k not in kept_away}
        attrs.update({attr: rec[col] for attr, col in renames.items() if col in rec})
        if cfg.category_separator:
            for name in b.category_fields:
                if isinstance(attrs.get(name), str):
                    attrs[name] = [v.strip() for v in attrs[name].split(cfg.category_separator) if v.strip()]
        if layout.skip_identical_items and item_id in b.items and b.items[item_id].title == (title or "").strip():
            repeats += 1
            continue
        if cfg.drop_incomplete and (title is None or not title.strip()):
            dropped["untitled_items"] += 1
            continue
        b.add_item(item_id, title, attrs, path=path, record=rid, item_field=id_col, title_field=title_col)
    assert first is not None  # iter_records raises on a file without records
    # Attribute renames and category attributes must exist in the catalogue (once is enough: fields are sparse).
    _check_columns(path, first, seen, {attr: col for attr, col in renames.items()})
    attributes = set().union(*(it.attributes for it in b.items.values()))
    for name in b.category_fields:
        if name not in attributes:
            raise DataError(
                f"the category attribute {name!r} is in no catalogue record; attributes are {sorted(attributes)}",
                path=path, field=name,
            )
    if repeats:
        logger.info("%s: skipped %d repeated identical catalogue records", path, repeats)


def _read_users(b: DatasetBuilder, rows: Rows, path: str, cols: Mapping[str, str | None]) -> None:
    id_col = cols["user_id"]
    first = True
    for rid, rec in rows:
        if first:
            _check_columns(path, rec, set(rec), {"user_id": id_col})
            first = False
        uid = field_str(rec, id_col, path, rid)
        b.add_user(uid, {k: v for k, v in rec.items() if k != id_col}, path=path, record=rid)


def _read_interactions(
    b: DatasetBuilder, rows: Rows, path: str, cfg: DatasetConfig, cols: Mapping[str, str | None],
    dropped: dict[str, int],
) -> None:
    first: dict[str, Any] | None = None
    seen: set[str] = set()
    for rid, rec in rows:
        if first is None:
            first = rec
            _check_columns(path, rec, set(rec), {k: cols[k] for k in _REQUIRED_INTERACTION})
        seen.update(rec)
        _interaction(b, rec, rid, path, cfg, cols, dropped)
    assert first is not None
    # Optional columns the config names explicitly must exist somewhere in the file.
    _check_columns(path, first, seen, {k: cfg.columns[k] for k in ("rating", "text") if k in cfg.columns})


def _interaction(
    b: DatasetBuilder, rec: dict[str, Any], rid: str, path: str, cfg: DatasetConfig, cols: Mapping[str, str | None],
    dropped: dict[str, int],
) -> None:
    """Check and add one interaction record (the fast path runs this on the record its column checks flag)."""
    user_col, item_col, ts_col = cols["user_id"], cols["item_id"], cols["timestamp"]
    rating_col, text_col = cols.get("rating"), cols.get("text")
    text = rec.get(text_col) if text_col else None
    if text is not None and not isinstance(text, str):
        raise DataError(f"expected text, got {type(text).__name__}", path=path, record=rid, field=text_col)
    item_id = field_str(rec, item_col, path, rid)
    if cfg.drop_incomplete and item_id not in b.items:
        dropped["unknown_item_interactions"] += 1
        return
    b.add_interaction(
        field_str(rec, user_col, path, rid),
        item_id,
        field_timestamp(rec, ts_col, path, rid, cfg.timestamp_format),
        field_float(rec, rating_col, path, rid) if rating_col else None,
        text,
        path=path,
        record=rid,
        item_field=item_col,
        rating_field=rating_col or "rating",
    )


def _fast_interactions(
    b: DatasetBuilder, path: str, cfg: DatasetConfig, cols: Mapping[str, str | None], dropped: dict[str, int],
) -> bool:
    """Read and check the interactions file column by column (``llmrec.data.fastread``); ``False`` when the
    row path must read it (it then reports the file's problem in its own words)."""
    import numpy as np
    import pyarrow as pa

    from llmrec.data import fastread as fr

    kind = fr.source_kind(path)
    if kind is None:
        return False
    src = fr.Source(path, kind)
    user_col, item_col, ts_col = cols["user_id"], cols["item_id"], cols["timestamp"]
    rating_col, text_col = cols.get("rating"), cols.get("text")
    wanted = [c for c in dict.fromkeys((user_col, item_col, ts_col, rating_col, text_col)) if c]
    table = fr.read_table(src, wanted, id_columns=(user_col, item_col))
    if table is None:
        return False
    names = set(table.column_names)
    if not {user_col, item_col, ts_col} <= names or any(cfg.columns[k] not in names for k in ("rating", "text")
                                                        if k in cfg.columns):
        return False  # the row path words missing columns (with the first record's columns)
    if kind == "jsonl" and any(not table[c][0].is_valid for c in (user_col, item_col, ts_col)):
        return False  # a first record without a required key: the row path's missing-column message
    n = table.num_rows
    text, bad_text = fr.text_column(table[text_col]) if text_col in names else (None, np.zeros(n, dtype=bool))
    items = fr.id_column(table[item_col])
    bad_item = items.bad_rows()
    codes, unknown = fr.item_codes(items, pa.array(list(b.items), type=pa.string()))
    drop = (unknown & ~bad_text & ~bad_item) if cfg.drop_incomplete else np.zeros(n, dtype=bool)
    users = fr.id_column(table[user_col])
    bad_user = users.bad_rows()
    stamps, bad_ts = fr.timestamp_column(table[ts_col], cfg.timestamp_format)
    if rating_col in names:
        ratings, bad_rating = fr.rating_column(table[rating_col], required=False)
    else:
        ratings, bad_rating = np.full(n, np.nan), np.zeros(n, dtype=bool)
    bad_range = fr.out_of_range(ratings, b.rating_range)
    bad = bad_text | bad_item | (~drop & (bad_user | bad_ts | bad_rating | unknown | bad_range))
    if bad.any():
        fr.first_bad(table, bad, src, lambda rec, rid: _interaction(b, rec, rid, path, cfg, cols, {
            "unknown_item_interactions": 0}))
        b.reset_interactions()
        return False  # the row path found nothing wrong where the columns did: trust the row path
    del table, bad, bad_text, bad_item, bad_user, bad_ts, bad_rating, bad_range, unknown  # peak memory
    pa.default_memory_pool().release_unused()  # hand the read buffers back before sorting
    keep = ~drop if drop.any() else None
    dropped["unknown_item_interactions"] += int(drop.sum())
    user_codes, user_ids = fr.encode_first_appearance(users, keep)
    if keep is not None:
        text = None if text is None else text.filter(pa.array(keep))
        codes, stamps, ratings = codes[keep], stamps[keep], ratings[keep]
    from llmrec.data.columnar import InteractionTable

    b.set_table(InteractionTable.from_codes(user_codes, user_ids, codes, list(b.items), stamps, ratings, text))
    return True


