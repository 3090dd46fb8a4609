"""Profile retrieval for RAG baselines and profile selection: BM25, dense (faiss), recency, random."""

from __future__ import annotations

from llmrec.retrieval.base import ProfileDoc, Retriever, count_tokens, select_profile
from llmrec.retrieval.bm25 import BM25Retriever
from llmrec.retrieval.simple import RandomRetriever, RecencyRetriever

RETRIEVERS = ("none", "bm25", "dense", "recency", "random")

__all__ = [
    "RETRIEVERS", "BM25Retriever", "ProfileDoc", "RandomRetriever", "RecencyRetriever", "Retriever",
    "count_tokens", "get_retriever", "select_profile",
]


def get_retriever(name: str, seed: int = 0, **kwargs) -> Retriever | None:
    """A retriever by name; ``"none"`` returns None (no personalization)."""
    if name == "none":
        return None
    if name == "bm25":
        return BM25Retriever(**kwargs)
    if name == "dense":
        from llmrec.retrieval.dense import DenseRetriever

        return DenseRetriever(**kwargs)
    if name == "recency":
        return RecencyRetriever()
    if name == "random":
        return RandomRetriever(seed=seed)
    raise ValueError(f"unknown retriever {name!r}; use one of {RETRIEVERS}")
