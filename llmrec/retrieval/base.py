"""Profile selection: rank a user's profile items for a query, keep the top k that fit a token budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ProfileDoc:
    """One profile item as retrieval sees it: its text, and a sortable date (None when unknown)."""

    text: str
    date: Any = None


@runtime_checkable
class Retriever(Protocol):
    name: str

    def rank(self, query: str, docs: Sequence[ProfileDoc], key: str = "") -> list[int]:
        """Indices of ``docs``, best first. ``key`` identifies the question (seeds the random retriever)."""
        ...


def count_tokens(text: str) -> int:
    """Whitespace tokens: model-agnostic and what LaMP's BM25 sees. Sub-word counts are ~1.3-1.6x larger."""
    return len(text.split())


def select_profile(
    retriever: Retriever,
    query: str,
    docs: Sequence[ProfileDoc],
    k: int,
    max_tokens: int | None = None,
    key: str = "",
) -> list[int]:
    """Top-``k`` indices in rank order; with ``max_tokens``, items are taken greedily while the sum fits."""
    if k <= 0 or not docs:
        return []
    order = retriever.rank(query, docs, key)
    if max_tokens is None:
        return list(order[:k])
    chosen: list[int] = []
    used = 0
    for i in order:
        if len(chosen) == k:
            break
        cost = count_tokens(docs[i].text)
        if used + cost > max_tokens:
            continue  # a shorter, lower-ranked item may still fit
        chosen.append(i)
        used += cost
    return chosen
