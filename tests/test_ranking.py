"""Ranking metrics against hand-computed values, exclusion, tie-breaking, and popularity without leakage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmrec.data.schema import UserHistory
from llmrec.data.splits import leave_one_out
from llmrec.errors import DataError
from llmrec.evaluation.ranking import (
    bootstrap_ci,
    full_catalogue_metrics,
    ranking_metrics,
    topk_from_scores,
)
from llmrec.users.baselines import Popularity, popularity_counts, split_counts


def test_ranking_metrics_hand_computed():
    ranked = [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "d"], ["x", "y", "z"]]
    targets = ["a", "b", "d", "a"]  # ranks 1, 3, 3, absent
    r = ranking_metrics(ranked, targets, ks=(1, 2, 3))
    assert r["recall@1"] == pytest.approx(1 / 4)
    assert r["recall@2"] == pytest.approx(1 / 4)
    assert r["recall@3"] == pytest.approx(3 / 4)
    assert r["ndcg@3"] == pytest.approx((1 + 2 * (1 / math.log2(4))) / 4)
    assert r["ndcg@1"] == pytest.approx(1 / 4)
    assert r["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 3 + 0) / 4)
    assert r.per_example["mrr"].tolist() == pytest.approx([1, 1 / 3, 1 / 3, 0])
    assert "invalid_rate" not in r.summary


def test_invalid_rate_counts_unknown_and_duplicate_items():
    ranked = [["a", "b"], ["a", "a"], ["a", "zz"], []]
    r = ranking_metrics(ranked, ["a", "a", "b", "a"], ks=(2,), valid_items={"a", "b", "c"})
    assert r["invalid_rate"] == pytest.approx(2 / 4)
    assert r.per_example["invalid"].tolist() == [0, 1, 1, 0]
    assert r["recall@2"] == pytest.approx(2 / 4)  # the duplicate list still hits at rank 1


def test_ranking_metrics_rejects_mismatched_lengths_and_strings():
    with pytest.raises(DataError):
        ranking_metrics([["a"]], ["a", "b"])
    with pytest.raises(DataError):
        ranking_metrics(["abc"], ["a"])


def test_topk_exclusion_and_tie_breaking_by_index():
    items = ["i0", "i1", "i2", "i3", "i4"]
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    assert topk_from_scores(scores, items, None, k=3) == [["i1", "i2", "i4"], ["i0", "i1", "i2"]]
    out = topk_from_scores(scores, items, [{"i2"}, {"i0", "i1", "i2", "i3"}], k=3)
    assert out == [["i1", "i4", "i0"], ["i4"]]  # excluded items never appear, even when k exceeds what is left
    assert topk_from_scores(scores, items, [{"i2"}, set()], k=3) == topk_from_scores(scores, items, [{"i2"}, set()], k=3)


def test_full_catalogue_matches_topk_lists_and_uses_full_rank_for_mrr():
    rng = np.random.default_rng(0)
    items = [f"m{i}" for i in range(30)]
    scores = rng.integers(0, 5, size=(40, 30)).astype(float)  # many ties
    targets = [items[j] for j in rng.integers(0, 30, size=40)]
    histories = [[items[j] for j in rng.choice(30, size=5, replace=False) if items[j] != t] for t in targets]
    full = full_catalogue_metrics(scores, items, targets, histories, ks=(5, 10))
    for protocol, exclude in (("rated_removed", histories), ("rated_kept", None)):
        lists = topk_from_scores(scores, items, exclude, k=10)
        listed = ranking_metrics(lists, targets, ks=(5, 10))
        for key in ("recall@5", "recall@10", "ndcg@5", "ndcg@10"):
            assert full[protocol][key] == pytest.approx(listed[key])
        # MRR from the full rank is at least the truncated one (targets beyond 10 still count)
        assert full[protocol]["mrr"] >= listed["mrr"]
        ranks = full[protocol].per_example["rank"]
        assert full[protocol]["mrr"] == pytest.approx(np.mean(1 / ranks))
    assert full["rated_removed"]["mrr"] >= full["rated_kept"]["mrr"]


def test_full_rank_hand_computed_with_exclusion():
    items = ["a", "b", "c", "d"]
    scores = np.array([[0.9, 0.5, 0.5, 0.1]])
    kept = full_catalogue_metrics(scores, items, ["c"], [["a"]], ks=(1, 2))
    assert kept["rated_kept"].per_example["rank"].tolist() == [3]  # a, then b (tie, lower index), then c
    assert kept["rated_removed"].per_example["rank"].tolist() == [2]  # a removed
    assert kept["rated_removed"]["ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert kept["rated_kept"]["mrr"] == pytest.approx(1 / 3)


def test_full_catalogue_rejects_bad_input():
    with pytest.raises(DataError):
        full_catalogue_metrics(np.zeros((1, 3)), ["a", "b"], ["a"], [[]])
    with pytest.raises(DataError):
        full_catalogue_metrics(np.zeros((1, 2)), ["a", "b"], ["zz"], [[]])
    with pytest.raises(DataError):
        full_catalogue_metrics(np.full((1, 2), np.nan), ["a", "b"], ["a"], [[]])


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    values = np.array([0, 1, 0, 1, 1, 0, 0, 1, 1, 1], dtype=float)
    lo, hi = bootstrap_ci(values, n_boot=500, seed=3)
    assert (lo, hi) == bootstrap_ci(values, n_boot=500, seed=3)
    assert lo <= values.mean() <= hi


def _history(user: str, items: list[str]) -> UserHistory:
    return UserHistory(user, tuple(items), tuple(range(len(items))), tuple([4.0] * len(items)))


def test_popularity_counts_exactly_and_never_sees_the_held_out_item():
    items = ["a", "b", "c", "d", "e"]
    histories = {
        "u1": _history("u1", ["a", "b", "c", "d"]),  # valid c, test d
        "u2": _history("u2", ["a", "b", "e"]),  # valid b, test e
        "u3": _history("u3", ["b", "a"]),  # too short: train only
    }
    split = leave_one_out(histories)
    assert popularity_counts([["a", "a", "b"]], items).tolist() == [2, 1, 0, 0, 0]
    valid_counts = split_counts(split, "valid", items)
    test_counts = split_counts(split, "test", items)
    assert valid_counts.tolist() == [3, 2, 0, 0, 0]  # a b | a | b a
    assert test_counts.tolist() == [3, 3, 1, 0, 0]  # plus the validation items c and b
    # leakage check: the test items d and e are never counted, the validation item c only at test time
    assert test_counts[items.index("d")] == 0 and test_counts[items.index("e")] == 0
    assert valid_counts[items.index("c")] == 0
    pop = Popularity.from_split(split, "test", items)
    assert pop.recommend(["a"], k=3) == ["b", "c", "d"]  # d before e: tie broken by index
    assert pop.recommend(["a"], k=2, exclude_history=False) == ["a", "b"]
    with pytest.raises(DataError):
        popularity_counts([["a", "zz"]], items)


def test_popularity_on_movielens_matches_the_anchor():
    """Exact-count popularity on ml-100k, rated removed: the ANCHORS.md figure is NDCG@10 0.0450 / Recall@10 0.0859."""
    from llmrec.data import load_dataset

    data = load_dataset("ml-100k")
    split = leave_one_out(data.histories())
    ids = data.item_ids
    pop = Popularity.from_split(split, "test", ids)
    res = full_catalogue_metrics(
        pop.scores(len(split.test)), ids, [e.target for e in split.test], [e.history.item_ids for e in split.test]
    )
    assert res["rated_removed"]["recall@10"] == pytest.approx(0.0859, abs=5e-4)
    assert res["rated_removed"]["ndcg@10"] == pytest.approx(0.0450, abs=5e-4)
    assert res["rated_kept"]["recall@10"] == pytest.approx(0.0498, abs=5e-4)
