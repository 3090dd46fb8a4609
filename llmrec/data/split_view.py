"""A split as views over an ``InteractionTable``: what the recipes hold instead of ``leave_one_out(histories())``.

:class:`ColumnarSplit` reads like :class:`~llmrec.data.splits.Split` (``train`` a mapping user id ->
``UserHistory``, ``valid`` / ``test`` sequences of ``SplitExample``, ``kind``, ``too_short``) and gives the same
objects, but builds them only when read: ``train`` is a :class:`TrainHistories` whose columns (item codes per user,
as Arrow lists) feed the row builders without one Python object per interaction; ``valid`` / ``test`` build each
example the first time it is indexed (evaluation reads a sample of validation users, not all of them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np
import pyarrow as pa

from llmrec.data.columnar import InteractionTable, SplitIndex
from llmrec.data.schema import UserHistory
from llmrec.data.splits import Split, SplitExample


class TrainHistories(Mapping[str, UserHistory]):
    """The training part of a columnar split: user ``u``'s history is table rows ``offsets[u]:train_end[u]``;
    users with an empty training history are left out (as ``Split.train`` leaves them out). As a mapping it is
    ``Split.train`` (built on first use); :meth:`to_arrow` / :meth:`fingerprint` serve the row builders."""

    def __init__(self, table: InteractionTable, train_end: np.ndarray) -> None:
        self.table = table
        self.train_end = np.asarray(train_end, dtype=np.int64)
        starts = table.offsets[:-1]
        self.users = np.flatnonzero(self.train_end > starts)  # user codes with a training history, in code order
        self.lengths = (self.train_end - starts)[self.users]
        self._dict: dict[str, UserHistory] | None = None

    # ------------------------------------------------------------ columns

    def rows(self) -> np.ndarray:
        """Table row indices of every training interaction, user by user (time order within a user)."""
        starts = self.table.offsets[:-1][self.users]
        offsets = np.zeros(len(self.users) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=offsets[1:])
        within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], self.lengths)
        return np.repeat(starts, self.lengths) + within

    def to_arrow(self) -> pa.Table:
        """One row per user with a training history: ``user_id`` (str), ``items`` (list of the table's int32 item
        codes, oldest first). No Python object per interaction."""
        offsets = np.zeros(len(self.users) + 1, dtype=np.int32)
        np.cumsum(self.lengths, out=offsets[1:])
        items = pa.array(self.table.item[self.rows()], type=pa.int32())
        return pa.table({
            "user_id": self.table.user_ids.take(pa.array(self.users, type=pa.int64())).cast(pa.string()),
            "items": pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), items),
        })

    def fingerprint(self) -> str:
        """A digest of what the row builders read: the item ids, the user ids and every training item code
        (so another dataset, subset of users or split gives another digest)."""
        h = hashlib.sha256()
        for array in (self.table.item_ids, self.table.user_ids.take(pa.array(self.users, type=pa.int64()))):
            for buf in pa.concat_arrays([array]).buffers():
                if buf is not None:
                    h.update(buf)
        h.update(np.ascontiguousarray(self.lengths).tobytes())
        h.update(np.ascontiguousarray(self.table.item[self.rows()]).tobytes())
        return h.hexdigest()[:32]

    # ------------------------------------------------------------ Mapping[str, UserHistory] (Split.train)

    def as_dict(self) -> dict[str, UserHistory]:
        if self._dict is None:
            hs = list(self.table.histories_dict().values())
            starts = self.table.offsets[:-1]
            self._dict = {hs[u].user_id: hs[u] if n == len(hs[u]) else hs[u].prefix(n)
                          for u, n in zip(self.users.tolist(), (self.train_end - starts)[self.users].tolist(),
                                          strict=True)}
        return self._dict

    def __getitem__(self, user_id: str) -> UserHistory:
        return self.as_dict()[user_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.users)


class ExampleView(Sequence[SplitExample]):
    """Held-out rows of a table as ``SplitExample``s, each built the first time it is read (then kept)."""

    def __init__(self, table: InteractionTable, rows: np.ndarray) -> None:
        self.table = table
        self.rows = np.asarray(rows, dtype=np.int64)
        self._built: list[SplitExample | None] = [None] * len(self.rows)
        self._ids: tuple[list[str], list[str]] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, k: int) -> SplitExample: ...
    @overload
    def __getitem__(self, k: slice) -> list[SplitExample]: ...
    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self._example(i) for i in range(*k.indices(len(self)))]
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(k)
        return self._example(k)

    def __iter__(self) -> Iterator[SplitExample]:
        return (self._example(i) for i in range(len(self)))

    def __add__(self, other: Sequence[SplitExample]) -> list[SplitExample]:
        return list(self) + list(other)

    def __radd__(self, other: Sequence[SplitExample]) -> list[SplitExample]:
        return list(other) + list(self)

    def _example(self, k: int) -> SplitExample:
        built = self._built[k]
        if built is None:
            t = self.table
            if self._ids is None:
                self._ids = (t.user_id_list(), t.item_id_list())
            users, items = self._ids
            r = int(self.rows[k])
            u = int(t.user[r])
            a = int(t.offsets[u])
            ratings = t.ratings_or_none(t.rating[a:r + 1])
            stamps = t.timestamp[a:r + 1].tolist()
            history = UserHistory(users[u], tuple(items[i] for i in t.item[a:r].tolist()), tuple(stamps[:-1]),
                                  tuple(ratings[:-1]))
            built = self._built[k] = SplitExample(users[u], history, items[int(t.item[r])], ratings[-1], stamps[-1])
        return built


class ColumnarSplit:
    """``Split``'s interface over a table and a :class:`~llmrec.data.columnar.SplitIndex` (see the module doc)."""

    def __init__(self, table: InteractionTable, index: SplitIndex) -> None:
        self.table = table
        self.index = index
        self.kind = index.kind
        self.train = TrainHistories(table, index.train_end)
        self.valid = ExampleView(table, index.valid)
        self.test = ExampleView(table, index.test)
        self._too_short: list[str] | None = None

    @property
    def too_short(self) -> list[str]:
        if self._too_short is None:
            ids = self.table.user_ids.take(pa.array(self.index.too_short, type=pa.int64()))
            self._too_short = ids.to_pylist()
        return self._too_short

    def to_split(self) -> Split:
        """The plain ``Split`` of Python objects (every example built)."""
        return Split(dict(self.train.as_dict()), list(self.valid), list(self.test), self.kind, list(self.too_short))


def columnar_split(data: Any, kind: str = "leave_one_out", **kwargs: Any) -> ColumnarSplit:
    """``data``'s split (``InteractionData.split_index`` arguments) as a :class:`ColumnarSplit`."""
    return ColumnarSplit(data.table, data.split_index(kind, **kwargs))
