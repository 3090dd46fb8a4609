"""Retrievers: BM25 against hand-computed Okapi scores, recency, seeded random, token budget, dense (faiss)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmrec.retrieval import (
    BM25Retriever,
    ProfileDoc,
    RandomRetriever,
    RecencyRetriever,
    get_retriever,
    select_profile,
)
from llmrec.retrieval.dense import DenseRetriever


def docs(*texts, dates=None):
    return [ProfileDoc(t, None if dates is None else dates[i]) for i, t in enumerate(texts)]


def test_bm25_scores_by_hand():
    d = docs("cat sat", "dog sat down", "bird")
    r = BM25Retriever(k1=1.5, b=0.75)
    s = r.scores("cat", d)
    n, avgdl = 3, 2.0
    idf_cat = math.log((n - 1 + 0.5) / (1 + 0.5))
    norm = 1.5 * (1 - 0.75 + 0.75 * 2 / avgdl)
    assert s[0] == pytest.approx(idf_cat * 1 * 2.5 / (1 + norm))
    assert s[1] == 0 and s[2] == 0
    assert r.rank("cat", d)[0] == 0


def test_bm25_negative_idf_floor_and_case():
    d = docs("a x", "a y", "a z", "b", "c")  # 'a' in 3 of 5 docs: negative idf -> epsilon * mean idf
    r = BM25Retriever()
    assert np.all(r.scores("a", d)[:3] > 0) and np.all(r.scores("a", d)[3:] == 0)
    assert BM25Retriever().scores("X", d)[0] == 0  # whitespace tokens, case-sensitive like LaMP
    assert BM25Retriever(lowercase=True).scores("X", d)[0] > 0


def test_bm25_ties_fall_back_to_recency():
    d = docs("p", "q", "r", dates=["2020-01-01", "2022-01-01", "2021-01-01"])
    assert BM25Retriever().rank("nothing", d) == [1, 2, 0]
    assert RecencyRetriever().rank("", d) == [1, 2, 0]
    assert RecencyRetriever().rank("", docs("p", "q", "r")) == [2, 1, 0]  # no dates: later is newer


def test_random_is_seeded_per_question():
    d = docs(*[f"t{i}" for i in range(20)])
    r = RandomRetriever(seed=3)
    assert r.rank("", d, key="q1") == RandomRetriever(seed=3).rank("", d, key="q1")
    assert r.rank("", d, key="q1") != r.rank("", d, key="q2")
    assert sorted(r.rank("", d, key="q1")) == list(range(20))


def test_select_profile_k_and_token_budget():
    d = docs("one two three four", "five", "six seven", dates=[1, 2, 3])
    rec = RecencyRetriever()
    assert select_profile(rec, "", d, 2) == [2, 1]
    assert select_profile(rec, "", d, 3, max_tokens=3) == [2, 1]  # the 4-token item does not fit
    assert select_profile(rec, "", d, 0) == []
    assert get_retriever("none") is None
    with pytest.raises(ValueError):
        get_retriever("tfidf")


def test_dense_retriever_with_faiss_and_custom_encoder():
    vocab = ["space", "love", "war"]

    def encode(texts):
        v = np.array([[t.count(w) for w in vocab] for t in texts], dtype=np.float32) + 1e-3
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    r = DenseRetriever(encoder=encode)
    d = docs("love story", "space space ship", "war film")
    assert r.rank("a space opera", d)[0] == 1
    assert r.rank("love", d)[0] == 0


@pytest.mark.slow
def test_dense_retriever_default_minilm():
    r = get_retriever("dense")
    d = docs("A romantic comedy in Paris", "Astronauts stranded on Mars", "A war drama")
    assert r.rank("astronauts on a mission to Mars", d)[0] == 1
    assert r.rank("a love story in France", d)[0] == 0
