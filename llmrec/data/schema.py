"""The typed data schema: items with text fields, interactions, chronological user histories."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Item:
    """A catalogue item. ``attributes`` holds any further fields (for MovieLens: ``year`` and the genre list)."""

    item_id: str
    title: str
    attributes: dict[str, Any] = field(default_factory=dict)

    def text(self, fields: Sequence[str] = ("title",)) -> str:
        parts = []
        for name in fields:
            value = self.title if name == "title" else self.attributes.get(name)
            if value is None or value == "" or value == []:
                continue
            parts.append(", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
        return " | ".join(parts)


@dataclass(frozen=True)
class Interaction:
    """One user-item event. ``timestamp`` is seconds (or any monotone integer clock)."""

    user_id: str
    item_id: str
    timestamp: int
    rating: float | None = None
    text: str | None = None


@dataclass(frozen=True)
class UserHistory:
    """A user's interactions in chronological order (ties keep the file order)."""

    user_id: str
    item_ids: tuple[str, ...]
    timestamps: tuple[int, ...]
    ratings: tuple[float | None, ...]

    def __len__(self) -> int:
        return len(self.item_ids)

    def prefix(self, n: int) -> UserHistory:
        """The first ``n`` interactions (negative ``n`` drops from the end, like slicing)."""
        return UserHistory(self.user_id, self.item_ids[:n], self.timestamps[:n], self.ratings[:n])


@dataclass(frozen=True)
class Vocabulary:
    """The dataset's own nouns, so prompts say "books you bought" for a bookshop and "movies you watched" for
    MovieLens. ``category`` names what the category attribute holds (genre, category, topic)."""

    item: str = "item"
    items: str = "items"
    interacted: str = "interacted with"
    category: str = "category"
    categories: str = "categories"


@dataclass
class InteractionData:
    """A catalogue plus interactions, as loaded from disk and validated.

    ``category_fields`` names the item attribute(s) that play "category" for questions, profiles and text
    alignment (MovieLens: its genre-list attribute); empty means the dataset has no categories.
    """

    name: str
    items: dict[str, Item]
    # A list of ``Interaction`` (hand-built data) or an ``InteractionTable`` (what the readers build): a
    # Sequence[Interaction] view in file order over typed columns (see ``table``).
    interactions: Sequence[Interaction]
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    rating_range: tuple[float, float] | None = None
    source: str = ""
    category_fields: tuple[str, ...] = ()
    vocabulary: Vocabulary = field(default_factory=Vocabulary)
    # The DatasetConfig this was loaded from (set by load_dataset); saved with models so they reload their data.
    config: Any = None
    # What the config's filters (k-core, minimum history) removed: before/after counts; None when none ran.
    filter_report: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self._histories: dict[str, UserHistory] | None = None
        self._table: Any = None

    @property
    def table(self):
        """The interactions as an ``llmrec.data.columnar.InteractionTable`` (built once from a list)."""
        from llmrec.data.columnar import InteractionTable

        if isinstance(self.interactions, InteractionTable):
            return self.interactions
        if self._table is None:
            self._table = InteractionTable.from_interactions(self.interactions, list(self.items))
        return self._table

    @property
    def item_ids(self) -> list[str]:
        return list(self.items)

    @property
    def user_ids(self) -> list[str]:
        return self.table.user_id_list()

    @property
    def has_categories(self) -> bool:
        return bool(self.category_fields)

    def item_categories(self, item_id: str) -> list[str]:
        """The item's categories from every configured category attribute (a string or a list), in order."""
        return item_categories(self.items[item_id], self.category_fields)

    def item_index(self) -> dict[str, int]:
        """Item id -> dense row index (catalogue order)."""
        return {item_id: i for i, item_id in enumerate(self.items)}

    def histories(self) -> dict[str, UserHistory]:
        """Chronological histories per user, users in order of first appearance. Cached."""
        if self._histories is None:
            self._histories = self.table.histories_dict()
        return self._histories

    def split_index(self, kind: str = "leave_one_out", **kwargs: Any):
        """The split as index arrays into ``table`` (``llmrec.data.columnar.SplitIndex``); no Python objects
        per interaction. ``kind``: ``leave_one_out`` (``min_length``) or ``by_time`` (fractions)."""
        from llmrec.data.columnar import by_time_index, leave_one_out_index

        if kind == "leave_one_out":
            return leave_one_out_index(self.table, **kwargs)
        if kind == "by_time":
            return by_time_index(self.table, **kwargs)
        raise ValueError(f"split kind must be leave_one_out or by_time, got {kind!r}")

    def to_hf(self, what: str = "interactions"):
        """Export ``interactions``, ``items`` or ``histories`` to a ``datasets.Dataset``."""
        import datasets

        if what in ("interactions", "histories"):
            from datasets.table import InMemoryTable

            return datasets.Dataset(InMemoryTable(self.table.to_arrow(what)))
        if what == "items":
            rows = {
                "item_id": list(self.items),
                "title": [it.title for it in self.items.values()],
                "attributes": [_jsonable(it.attributes) for it in self.items.values()],
            }
            return datasets.Dataset.from_dict(rows)
        raise ValueError(f"to_hf: what must be interactions, items or histories, got {what!r}")


def item_categories(item: Item, fields: Sequence[str]) -> list[str]:
    """Flatten the category attributes ``fields`` of ``item`` (strings or lists of strings), dropping repeats."""
    out: list[str] = []
    for name in fields:
        value = item.attributes.get(name)
        values = value if isinstance(value, (list, tuple)) else ([] if value in (None, "") else [value])
        for v in values:
            v = str(v).strip()
            if v and v not in out:
                out.append(v)
    return out


def build_histories(interactions: Iterable[Interaction]) -> dict[str, UserHistory]:
    per_user: dict[str, list[tuple[int, int, Interaction]]] = {}
    for order, x in enumerate(interactions):
        per_user.setdefault(x.user_id, []).append((x.timestamp, order, x))
    out: dict[str, UserHistory] = {}
    for user, rows in per_user.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        out[user] = UserHistory(
            user,
            tuple(r[2].item_id for r in rows),
            tuple(r[2].timestamp for r in rows),
            tuple(r[2].rating for r in rows),
        )
    return out


def _jsonable(attrs: dict[str, Any]) -> str:
    import json

    return json.dumps(attrs, sort_keys=True)
