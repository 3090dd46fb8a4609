"""Validating construction of ``InteractionData``: every bad record is an error naming file, record, field."""

from __future__ import annotations

import calendar
import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.data.schema import InteractionData, Item, Vocabulary
from llmrec.errors import DataError


def field_str(rec: dict[str, Any], name: str, path: Path | str, record: str | int, required: bool = True) -> str | None:
    value = rec.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise DataError("missing required field", path=path, record=record, field=name)
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"expected a string or integer id, got {type(value).__name__}", path=path, record=record, field=name)
    return str(value).strip()


def field_int(rec: dict[str, Any], name: str, path: Path | str, record: str | int) -> int:
    value = rec.get(name)
    if value is None or value == "":
        raise DataError("missing required field", path=path, record=record, field=name)
    if isinstance(value, bool):
        raise DataError("expected an integer, got a boolean", path=path, record=record, field=name)
    if isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):  # Parquet/Arrow timestamp columns; naive values are taken as UTC
        return int(value.timestamp()) if value.tzinfo else calendar.timegm(value.timetuple())
    if isinstance(value, dt.date):
        return calendar.timegm(value.timetuple())
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise DataError(f"expected an integer, got {value!r}", path=path, record=record, field=name) from None
    if not math.isfinite(as_float) or as_float != int(as_float):
        raise DataError(f"expected an integer, got {value!r}", path=path, record=record, field=name)
    return int(as_float)


def field_float(rec: dict[str, Any], name: str, path: Path | str, record: str | int, required: bool = False) -> float | None:
    value = rec.get(name)
    if value is None or value == "":
        if required:
            raise DataError("missing required field", path=path, record=record, field=name)
        return None
    if isinstance(value, bool):
        raise DataError("expected a number, got a boolean", path=path, record=record, field=name)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DataError(f"expected a number, got {value!r}", path=path, record=record, field=name) from None
    if not math.isfinite(out):
        raise DataError(f"expected a finite number, got {value!r}", path=path, record=record, field=name)
    return out


class DatasetBuilder:
    """Collects items then interactions, checking ids, references and rating range as it goes.

    Interactions are kept as columns (no object per interaction); a reader's vectorised fast path hands
    over a whole ``InteractionTable`` through ``set_table`` instead.
    """

    def __init__(
        self,
        name: str,
        rating_range: tuple[float, float] | None = None,
        source: str = "",
        *,
        category_fields: tuple[str, ...] = (),
        vocabulary: Vocabulary | None = None,
    ) -> None:
        self.name = name
        self.category_fields = tuple(category_fields)
        self.vocabulary = vocabulary or Vocabulary()
        self.rating_range = rating_range
        self.source = source
        self.items: dict[str, Item] = {}
        self._item_where: dict[str, str] = {}
        self._columns: tuple[list[str], list[int], list[int], list[float], list[str | None]] = ([], [], [], [], [])
        self._item_code: dict[str, int] = {}
        self.table = None  # an InteractionTable from a fast path
        self.users: dict[str, dict[str, Any]] = {}

    def add_item(
        self, item_id: str, title: str | None, attributes: dict[str, Any], *, path: Path | str, record: str | int,
        item_field: str = "item_id", title_field: str = "title",
    ) -> None:
        """``item_field`` / ``title_field``: the file's column names, for the error messages."""
        if item_id in self.items:
            raise DataError(
                f"duplicate item id {item_id!r} (first seen at {self._item_where[item_id]})",
                path=path, record=record, field=item_field,
            )
        if title is None or not str(title).strip():
            raise DataError(f"item {item_id!r} has no title text", path=path, record=record, field=title_field)
        self._item_code[item_id] = len(self.items)
        self.items[item_id] = Item(item_id, str(title).strip(), attributes)
        self._item_where[item_id] = f"{record}"

    def add_user(self, user_id: str, features: dict[str, Any], *, path: Path | str, record: str | int) -> None:
        if user_id in self.users:
            raise DataError(f"duplicate user id {user_id!r}", path=path, record=record, field="user_id")
        self.users[user_id] = features

    def add_interaction(
        self,
        user_id: str,
        item_id: str,
        timestamp: int,
        rating: float | None,
        text: str | None,
        *,
        path: Path | str,
        record: str | int,
        item_field: str = "item_id",
        rating_field: str = "rating",
    ) -> None:
        """``item_field`` / ``rating_field``: the file's column names, for the error messages."""
        self.check_interaction(item_id, rating, path=path, record=record, item_field=item_field,
                               rating_field=rating_field)
        users, items, stamps, ratings, texts = self._columns
        users.append(user_id)
        items.append(self._item_code[item_id])
        stamps.append(timestamp)
        ratings.append(math.nan if rating is None else rating)
        texts.append(text)

    def check_interaction(
        self, item_id: str, rating: float | None, *, path: Path | str, record: str | int,
        item_field: str = "item_id", rating_field: str = "rating",
    ) -> None:
        """The catalogue reference and the rating range (what ``add_interaction`` checks beyond parsing)."""
        if item_id not in self.items:
            raise DataError(f"unknown item {item_id!r} (not in the catalogue)", path=path, record=record, field=item_field)
        if rating is not None and self.rating_range is not None:
            lo, hi = self.rating_range
            if not lo <= rating <= hi:
                raise DataError(f"rating {rating:g} outside [{lo:g}, {hi:g}]", path=path, record=record, field=rating_field)

    def reset_interactions(self) -> None:
        """Forget the interactions added so far (a fast path handing a file back to the row path)."""
        self._columns = ([], [], [], [], [])
        self.table = None

    def item_codes(self) -> dict[str, int]:
        """Item id -> code (catalogue order), the codes ``set_table`` tables use."""
        return self._item_code

    def set_table(self, table) -> None:
        """Interactions read by a vectorised path (``InteractionTable`` coded against ``item_codes``)."""
        self.table = table

    def build(self) -> InteractionData:
        import pyarrow as pa

        from llmrec.data.columnar import InteractionTable

        if not self.items:
            raise DataError("the catalogue has no items", path=self.source or None)
        table = self.table
        if table is None:
            users, items, stamps, ratings, texts = self._columns
            table = InteractionTable.from_columns(
                users, np.asarray(items, dtype=np.int32), list(self.items), np.asarray(stamps, dtype=np.int64),
                np.asarray(ratings, dtype=np.float64),
                None if all(t is None for t in texts) else pa.array(texts, type=pa.large_string()),
            )
            self._columns = ([], [], [], [], [])
        if not len(table):
            raise DataError("there are no interactions", path=self.source or None)
        return InteractionData(
            self.name, self.items, table, self.users, self.rating_range, self.source,
            category_fields=self.category_fields, vocabulary=self.vocabulary,
        )
