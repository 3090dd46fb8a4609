"""Okapi BM25 over a question's own profile (as LaMP does), whitespace tokens, in numpy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import chain

import numpy as np

from llmrec.retrieval.base import ProfileDoc


class BM25Retriever:
    """BM25Okapi with ``k1=1.5``, ``b=0.75`` and rank-bm25's floor for negative IDF (``epsilon`` x mean IDF).

    Ties (e.g. an empty query) keep the newest items first when dates exist, else the profile order reversed,
    so a query with no overlap degrades to recency rather than to the oldest items.
    """

    name = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25, lowercase: bool = False) -> None:
        self.k1, self.b, self.epsilon, self.lowercase = k1, b, epsilon, lowercase
        self._tok_cache: dict[str, Counter] = {}

    def _counts(self, text: str) -> Counter:
        c = self._tok_cache.get(text)
        if c is None:
            c = Counter((text.lower() if self.lowercase else text).split())
            if len(self._tok_cache) > 200_000:
                self._tok_cache.clear()
            self._tok_cache[text] = c
        return c

    def scores(self, query: str, docs: Sequence[ProfileDoc]) -> np.ndarray:
        counts = [self._counts(d.text) for d in docs]
        n = len(counts)
        lengths = np.array([sum(c.values()) for c in counts], dtype=np.float64)
        avgdl = lengths.mean() if n and lengths.mean() > 0 else 1.0
        terms = list(dict.fromkeys((query.lower() if self.lowercase else query).split()))
        if not terms or n == 0:
            return np.zeros(n)
        tf = np.array([[c.get(t, 0) for c in counts] for t in terms], dtype=np.float64)  # (terms, docs)
        # IDF over the whole profile vocabulary, so the epsilon floor uses rank-bm25's average IDF.
        df_all = Counter(chain.from_iterable(counts))  # iterating a Counter yields each distinct term once
        df_vec = np.fromiter(df_all.values(), dtype=np.float64, count=len(df_all))
        floor = self.epsilon * float(np.mean(np.log(n - df_vec + 0.5) - np.log(df_vec + 0.5)))
        df = np.array([df_all.get(t, 0) for t in terms], dtype=np.float64)
        idf = np.log(n - df + 0.5) - np.log(df + 0.5)
        idf = np.where(idf < 0, floor, idf)
        norm = self.k1 * (1 - self.b + self.b * lengths / avgdl)
        return (idf[:, None] * tf * (self.k1 + 1) / (tf + norm[None, :])).sum(axis=0)

    def rank(self, query: str, docs: Sequence[ProfileDoc], key: str = "") -> list[int]:
        s = self.scores(query, docs)
        tiebreak = _recency_key(docs)
        return sorted(range(len(docs)), key=lambda i: (-s[i], tiebreak[i]))


def _recency_key(docs: Sequence[ProfileDoc]) -> list:
    """Sort key putting the newest first: by date when every doc has one, else later position first."""
    n = len(docs)
    if n and all(d.date is not None for d in docs):
        order = sorted(range(n), key=lambda i: (docs[i].date, i), reverse=True)
        pos = {i: r for r, i in enumerate(order)}
        return [pos[i] for i in range(n)]
    return [n - i for i in range(n)]
