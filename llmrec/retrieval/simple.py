"""Query-blind retrievers: the most recent profile items, or a seeded random sample."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from llmrec.retrieval.base import ProfileDoc
from llmrec.retrieval.bm25 import _recency_key


class RecencyRetriever:
    name = "recency"

    def rank(self, query: str, docs: Sequence[ProfileDoc], key: str = "") -> list[int]:
        keys = _recency_key(docs)
        return sorted(range(len(docs)), key=keys.__getitem__)


class RandomRetriever:
    """A permutation seeded by (seed, question key): the same question always gets the same items."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def rank(self, query: str, docs: Sequence[ProfileDoc], key: str = "") -> list[int]:
        rng = np.random.default_rng([self.seed, zlib.crc32(key.encode("utf-8"))])
        return [int(i) for i in rng.permutation(len(docs))]
