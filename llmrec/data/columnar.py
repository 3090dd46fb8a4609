"""Interactions as typed columns: integer-coded users and items, int64 timestamps, ratings (NaN = missing),
optional text; sorted by user then time (stable, so ties keep file order) with CSR user offsets.

Histories and splits are index ranges into these columns; nothing here builds one Python object per
interaction except the compatibility views (``InteractionTable`` as a ``Sequence[Interaction]``,
``histories_dict``), which are built on demand for the code that reads Python objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llmrec.data.schema import Interaction, UserHistory


def rating_array(values: np.ndarray) -> np.ndarray:
    """float32 when every rating is exact in float32 (whole and half stars are), else float64, so no value
    a reader produced changes."""
    values = np.asarray(values, dtype=np.float64)
    small = values.astype(np.float32)
    same = (small == values) | np.isnan(values)
    return small if bool(same.all()) else values


def _string_array(values: Any) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values if values.type == pa.large_string() else values.cast(pa.large_string())
    return pa.array(list(values), type=pa.large_string())


@dataclass(eq=False)
class InteractionTable(Sequence[Interaction]):
    """Columns sorted by (user code, timestamp, file order). ``user_ids`` / ``item_ids`` map codes to ids;
    users are coded in order of first appearance in the file, so code order is the histories' order.
    ``row``: each interaction's position in the file's order (its record index among the kept records);
    ``offsets``: user ``u``'s interactions are rows ``offsets[u]:offsets[u + 1]``."""

    user_ids: pa.Array
    item_ids: pa.Array
    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    rating: np.ndarray
    text: pa.Array | None
    row: np.ndarray
    offsets: np.ndarray

    # ------------------------------------------------------------ construction

    @classmethod
    def from_columns(
        cls, users: Any, item_codes: np.ndarray, item_ids: Any, timestamps: np.ndarray,
        ratings: np.ndarray | None = None, text: pa.Array | None = None,
    ) -> InteractionTable:
        """Columns in file order: ``users`` (ids, any array-like of str), ``item_codes`` into ``item_ids``."""
        users = _string_array(users)
        uniq = pc.unique(users)  # first-appearance order
        user = pc.index_in(users, value_set=uniq).to_numpy(zero_copy_only=False).astype(np.int32)
        return cls.from_codes(user, uniq, item_codes, item_ids, timestamps, ratings, text)

    @classmethod
    def from_codes(
        cls, user_codes: np.ndarray, user_ids: Any, item_codes: np.ndarray, item_ids: Any, timestamps: np.ndarray,
        ratings: np.ndarray | None = None, text: pa.Array | None = None,
    ) -> InteractionTable:
        """Coded columns in file order; user codes must number users by first appearance."""
        uniq = _string_array(user_ids)
        user = np.asarray(user_codes, dtype=np.int32)
        n = len(user)
        item = np.asarray(item_codes, dtype=np.int32)
        ts = np.asarray(timestamps, dtype=np.int64)
        rating = rating_array(np.full(n, np.nan) if ratings is None else ratings)
        order = np.lexsort((ts, user))  # stable: equal (user, time) keep file order
        counts = np.bincount(user, minlength=len(uniq))
        offsets = np.zeros(len(uniq) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(
            uniq, _string_array(item_ids), user[order], item[order], ts[order], rating[order],
            None if text is None else _take(text, order), order.astype(np.int64, copy=False), offsets,
        )

    @classmethod
    def from_interactions(cls, interactions: Sequence[Interaction], catalogue: Sequence[str] = ()) -> InteractionTable:
        """From Python objects (hand-built data); item codes follow ``catalogue`` then first appearance."""
        index = {item_id: i for i, item_id in enumerate(catalogue)}
        codes = np.empty(len(interactions), dtype=np.int32)
        for k, x in enumerate(interactions):
            codes[k] = index.setdefault(x.item_id, len(index))
        texts = [x.text for x in interactions]
        return cls.from_columns(
            [x.user_id for x in interactions], codes, list(index),
            np.fromiter((x.timestamp for x in interactions), dtype=np.int64, count=len(interactions)),
            np.array([np.nan if x.rating is None else x.rating for x in interactions], dtype=np.float64),
            None if all(t is None for t in texts) else pa.array(texts, type=pa.large_string()),
        )

    # ------------------------------------------------------------ sizes and id views

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def user_id_list(self) -> list[str]:
        return self.user_ids.to_pylist()

    def item_id_list(self) -> list[str]:
        return self.item_ids.to_pylist()

    def ratings_or_none(self, values: np.ndarray | None = None) -> list[float | None]:
        """Ratings as Python floats, ``None`` where missing."""
        values = self.rating if values is None else values
        out = values.astype(np.float64).tolist()
        for k in np.flatnonzero(np.isnan(values)).tolist():
            out[k] = None
        return out

    # ------------------------------------------------------------ Sequence[Interaction], in file order

    def __len__(self) -> int:
        return len(self.user)

    @overload
    def __getitem__(self, k: int) -> Interaction: ...
    @overload
    def __getitem__(self, k: slice) -> list[Interaction]: ...
    def __getitem__(self, k):
        order = self.file_order()
        if isinstance(k, slice):
            return [self._interaction(int(p)) for p in order[k]]
        return self._interaction(int(order[k]))

    def __iter__(self) -> Iterator[Interaction]:
        users, items = self.user_id_list(), self.item_id_list()
        order = self.file_order()
        text = None if self.text is None else _take(self.text, order).to_pylist()
        ratings = self.ratings_or_none(self.rating[order])
        for k, (u, i, t) in enumerate(zip(self.user[order].tolist(), self.item[order].tolist(),
                                          self.timestamp[order].tolist(), strict=True)):
            yield Interaction(users[u], items[i], t, ratings[k], None if text is None else text[k])

    def file_order(self) -> np.ndarray:
        """Row positions in file order (cached)."""
        cached = self.__dict__.get("_order")
        if cached is None:
            cached = self.__dict__["_order"] = np.argsort(self.row, kind="stable")
        return cached

    def _interaction(self, p: int) -> Interaction:
        rating = float(self.rating[p])
        return Interaction(
            self.user_ids[int(self.user[p])].as_py(), self.item_ids[int(self.item[p])].as_py(),
            int(self.timestamp[p]), None if np.isnan(rating) else rating,
            None if self.text is None else self.text[p].as_py(),
        )

    # ------------------------------------------------------------ histories

    def histories_dict(self) -> dict[str, UserHistory]:
        """``{user_id: UserHistory}`` in user-code order (first appearance), each in time order."""
        item_strs = np.asarray(self.item_id_list(), dtype=object)[self.item].tolist()
        stamps = self.timestamp.tolist()
        ratings = self.ratings_or_none()
        out: dict[str, UserHistory] = {}
        bounds = self.offsets.tolist()
        for u, user_id in enumerate(self.user_id_list()):
            a, b = bounds[u], bounds[u + 1]
            out[user_id] = UserHistory(user_id, tuple(item_strs[a:b]), tuple(stamps[a:b]), tuple(ratings[a:b]))
        return out

    # ------------------------------------------------------------ subsets

    def take_rows(self, keep: np.ndarray) -> InteractionTable:
        """The rows where ``keep`` is true; users re-coded by first appearance in file order among them."""
        keep = np.asarray(keep, dtype=bool)
        user, row = self.user[keep], self.row[keep]
        present = np.bincount(user, minlength=self.n_users) > 0
        old_codes = np.flatnonzero(present)
        # First file position of each remaining user decides its new code.
        first = np.full(self.n_users, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, user, row)
        new_of_old = np.full(self.n_users, -1, dtype=np.int32)
        new_of_old[old_codes[np.argsort(first[old_codes], kind="stable")]] = np.arange(len(old_codes), dtype=np.int32)
        new_user = new_of_old[user]
        order = np.argsort(new_user, kind="stable")  # rows stay in (time, file order) within a user
        counts = np.bincount(new_user, minlength=len(old_codes))
        offsets = np.zeros(len(old_codes) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        user_ids = self.user_ids.take(pa.array(old_codes[np.argsort(new_of_old[old_codes])], type=pa.int64()))
        idx = np.flatnonzero(keep)[order]
        return InteractionTable(
            user_ids, self.item_ids, new_user[order], self.item[idx], self.timestamp[idx], self.rating[idx],
            None if self.text is None else _take(self.text, idx), row[order], offsets,
        )

    # ------------------------------------------------------------ export

    def to_arrow(self, what: str = "interactions") -> pa.Table:
        """``interactions`` (file order) or ``histories`` (one row per user, list columns)."""
        if what == "interactions":
            order = self.file_order()
            idx = pa.array(order, type=pa.int64())
            rating = self.rating[order]
            return pa.table({
                "user_id": self.user_ids.take(pa.array(self.user[order], type=pa.int64())).cast(pa.string()),
                "item_id": self.item_ids.take(pa.array(self.item[order], type=pa.int64())).cast(pa.string()),
                "timestamp": pa.array(self.timestamp[order], type=pa.int64()),
                "rating": pa.array(rating.astype(np.float64), mask=np.isnan(rating)),
                "text": (pa.nulls(len(order), pa.string()) if self.text is None
                         else self.text.take(idx).cast(pa.string())),
            })
        if what == "histories":
            offsets = pa.array(self.offsets.astype(np.int32))
            items = self.item_ids.take(pa.array(self.item, type=pa.int64())).cast(pa.string())
            return pa.table({
                "user_id": self.user_ids.cast(pa.string()),
                "item_ids": pa.ListArray.from_arrays(offsets, items),
                "timestamps": pa.ListArray.from_arrays(offsets, pa.array(self.timestamp, type=pa.int64())),
                "ratings": pa.ListArray.from_arrays(
                    offsets, pa.array(self.rating.astype(np.float64), mask=np.isnan(self.rating))),
            })
        raise ValueError(f"to_arrow: what must be interactions or histories, got {what!r}")


def _take(values: pa.Array | pa.ChunkedArray, idx: np.ndarray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.take(pa.array(idx, type=pa.int64()))


# ---------------------------------------------------------------- splits as index arrays


@dataclass(frozen=True)
class SplitIndex:
    """A split as row indices into an ``InteractionTable``.

    ``train_end[u]``: user ``u``'s training history is rows ``offsets[u]:train_end[u]`` (a prefix; empty
    means the user has no training history). ``valid`` / ``test``: the rows held out as targets, in user then
    time order; each one's history is its user's rows before it. ``too_short``: user codes as in ``Split``.
    """

    kind: str
    train_end: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    too_short: np.ndarray

    def to_split(self, table: InteractionTable, histories: dict[str, UserHistory] | None = None):
        """The same ``Split`` of Python objects that ``splits.leave_one_out`` / ``by_time`` return."""
        from llmrec.data.splits import Split, SplitExample

        histories = table.histories_dict() if histories is None else histories
        hs = list(histories.values())
        starts = table.offsets[:-1]
        train = {h.user_id: h if end - s == len(h) else h.prefix(int(end - s))
                 for h, s, end in zip(hs, starts.tolist(), self.train_end.tolist(), strict=True) if end > s}

        def examples(rows: np.ndarray) -> list:
            out = []
            for r, u in zip(rows.tolist(), table.user[rows].tolist(), strict=True):
                h, i = hs[u], r - int(starts[u])
                out.append(SplitExample(h.user_id, h.prefix(i), h.item_ids[i], h.ratings[i], h.timestamps[i]))
            return out

        return Split(train, examples(self.valid), examples(self.test), self.kind,
                     [hs[u].user_id for u in self.too_short.tolist()])


def leave_one_out_index(table: InteractionTable, min_length: int = 3) -> SplitIndex:
    """``splits.leave_one_out`` as index arrays: test = each user's last row, validation = the one before."""
    if min_length < 3:
        raise ValueError("leave_one_out needs min_length >= 3 (train, validation and test items)")
    ends = table.offsets[1:]
    held = table.lengths >= min_length
    train_end = ends - 2 * held
    return SplitIndex("leave_one_out", train_end, ends[held] - 2, ends[held] - 1, np.flatnonzero(~held))


def by_time_index(table: InteractionTable, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> SplitIndex:
    """``splits.by_time`` as index arrays (same cutoffs: the 'lower' quantiles of all timestamps)."""
    if not 0 <= valid_fraction < 1 or not 0 < test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise ValueError("fractions must be in [0, 1) and sum to less than 1")
    if len(table) == 0:
        raise ValueError("no interactions to split")
    t_test = int(np.quantile(table.timestamp, 1 - test_fraction, method="lower"))
    t_valid = int(np.quantile(table.timestamp, 1 - test_fraction - valid_fraction, method="lower"))
    before = table.timestamp < t_valid  # a prefix of each user's rows: rows are in time order per user
    cum = np.concatenate([[0], np.cumsum(before, dtype=np.int64)])
    n_train = cum[table.offsets[1:]] - cum[table.offsets[:-1]]
    starts = table.offsets[:-1]
    train_end = starts + n_train
    pos = np.arange(len(table), dtype=np.int64) - np.repeat(starts, table.lengths)
    held = (pos >= np.repeat(n_train, table.lengths)) & (pos > 0)
    is_test = table.timestamp >= t_test
    return SplitIndex("by_time", train_end, np.flatnonzero(held & ~is_test), np.flatnonzero(held & is_test),
                      np.flatnonzero(n_train == 0))
