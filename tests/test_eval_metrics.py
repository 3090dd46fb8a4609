"""Every metric against hand-computed values; both LaMP scoring modes; bootstrap determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rouge_score import rouge_scorer

from llmrec.errors import DataError
from llmrec.evaluation.metrics import Scored, compute_metrics, get_metric, metric_names
from llmrec.evaluation.parsing import parse_label, parse_number

LAMP2_LABELS = ["sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia", "dark comedy",
                "classic", "psychology", "fantasy", "romance", "thought-provoking", "social commentary",
                "violence", "true story"]


def values(scored, names, **kw):
    return {k: v["value"] for k, v in compute_metrics(scored, names, n_boot=0, **kw).items()}


def test_regression_lamp_mode_worst_case_substitution():
    s = Scored("regress", ["5", "1", "4"], ["4", "I would say 2 stars", " 4 "], value_range=(1, 5), mode="lamp")
    v = values(s, ["mae", "rmse", "parse_failure_rate", "invalid_output_rate"])
    # the unparsable output for gold 1 becomes 5 (farther end): errors 1, 4, 0
    assert v["mae"] == pytest.approx(5 / 3)
    assert v["rmse"] == pytest.approx(math.sqrt(17 / 3))
    assert v["parse_failure_rate"] == pytest.approx(1 / 3)
    assert v["invalid_output_rate"] == pytest.approx(1 / 3)


def test_regression_lenient_mode_reads_first_number():
    s = Scored("regress", ["5", "1", "4"], ["4", "I would say 2 stars", " 4 "], mode="lenient")
    v = values(s, ["mae", "rmse", "parse_failure_rate"])
    assert v["mae"] == pytest.approx(2 / 3)
    assert v["rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert v["parse_failure_rate"] == 0.0


def test_regression_out_of_range_is_invalid_not_clipped():
    s = Scored("regress", ["3", "3"], ["7", "3.5"])
    v = values(s, ["mae", "invalid_output_rate", "parse_failure_rate"])
    assert v["mae"] == pytest.approx((4 + 0.5) / 2)
    assert v["invalid_output_rate"] == 0.5 and v["parse_failure_rate"] == 0.0


def test_worst_case_for_middle_gold_picks_the_upper_end():
    s = Scored("regress", ["3"], ["n/a"])  # |1-3| == |5-3|: LaMP's rule picks 5 (not strictly farther)
    assert values(s, ["mae"])["mae"] == 2.0


def test_classification_lamp_mode():
    golds = ["sci-fi", "comedy", "true story", "action"]
    preds = ["sci-fi", "Comedy", "The tag is: true story", "comedy"]
    v = values(Scored("classify", golds, preds, labels=LAMP2_LABELS, mode="lamp"),
               ["accuracy", "macro_f1", "parse_failure_rate", "invalid_output_rate"])
    assert v["accuracy"] == 0.25
    assert v["macro_f1"] == pytest.approx(1 / 15)  # only sci-fi has F1 1; all 15 labels count
    assert v["parse_failure_rate"] == 0.5 and v["invalid_output_rate"] == 0.5


def test_classification_lenient_mode():
    golds = ["sci-fi", "comedy", "true story", "action"]
    preds = ["sci-fi", "Comedy", "The tag is: true story", "comedy"]
    v = values(Scored("classify", golds, preds, labels=LAMP2_LABELS, mode="lenient"),
               ["accuracy", "macro_f1", "parse_failure_rate"])
    assert v["accuracy"] == 0.75
    assert v["macro_f1"] == pytest.approx((1 + 2 / 3 + 1) / 15)  # comedy: TP 1, FP 1 -> 2/3; action 0
    assert v["parse_failure_rate"] == 0.0


def test_macro_f1_matches_sklearn_definition_by_hand():
    labels = ["a", "b", "c"]
    golds = ["a", "a", "b", "c", "c", "c"]
    preds = ["a", "b", "b", "c", "a", "zzz"]
    # a: TP1 FP1 FN1 -> 0.5; b: TP1 FP1 FN0 -> 2/3; c: TP1 FP0 FN2 -> 0.5
    v = values(Scored("classify", golds, preds, labels=labels), ["macro_f1", "accuracy"])
    assert v["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert v["accuracy"] == pytest.approx(3 / 6)


def test_lenient_label_parsing_prefers_earliest_then_longest():
    labels = ["comedy", "dark comedy", "action"]
    assert parse_label("dark comedy, maybe action", labels, "lenient") == 1
    assert parse_label("ACTION!", labels, "lenient") == 2
    assert parse_label("nothing here", labels, "lenient") == -1
    assert parse_label("[1]", ["[1]", "[2]"], "lamp") == 0
    assert parse_label("I pick [2].", ["[1]", "[2]"], "lenient") == 1
    assert parse_number("4 stars", "lamp") is None and parse_number("4 stars", "lenient") == 4.0
    assert parse_number("nan", "lamp") is None


def test_rouge_matches_reference_scorer():
    golds = ["Local team wins the championship", "Storm closes schools across the state", "a b c"]
    preds = ["Team wins championship", "Schools closed as storm hits the state", ""]
    v = values(Scored("generate", golds, preds), ["rouge1", "rougeL", "parse_failure_rate"])
    ref = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    scores = [ref.score(g, p) for g, p in zip(golds, preds, strict=True)]
    assert v["rouge1"] == pytest.approx(np.mean([s["rouge1"].fmeasure for s in scores]))
    assert v["rougeL"] == pytest.approx(np.mean([s["rougeL"].fmeasure for s in scores]))
    # by hand for the first pair: unigram overlap 3 of 3 predicted, 3 of 5 gold -> F = 2*1*0.6/1.6
    assert scores[0]["rouge1"].fmeasure == pytest.approx(0.75)
    assert v["parse_failure_rate"] == pytest.approx(1 / 3)


def test_ranking_metrics_by_hand_and_against_shared_protocol():
    ranked = [["x", "a", "y"], ["b", "z"], ["q", "r", "s"]]
    golds = ["a", "b", "a"]
    s = Scored("rank_items", golds, ranked, catalogue=frozenset("abxyzqrs"))
    v = values(s, ["recall@1", "recall@2", "ndcg@2", "mrr", "invalid_output_rate"])
    assert v["recall@1"] == pytest.approx(1 / 3)
    assert v["recall@2"] == pytest.approx(2 / 3)
    assert v["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1) / 3)
    assert v["mrr"] == pytest.approx((0.5 + 1) / 3)
    assert v["invalid_output_rate"] == 0.0
    from llmrec.evaluation.ranking import ranking_metrics

    shared = ranking_metrics(ranked, golds, ks=(2,))
    assert shared["ndcg@2"] == pytest.approx(v["ndcg@2"]) and shared["mrr"] == pytest.approx(v["mrr"])


def test_ranking_with_several_targets_and_invalid_lists():
    s = Scored("rank_items", ["a b"], [["a", "c", "b", "b"]], catalogue=frozenset("abc"))
    v = values(s, ["recall@2", "ndcg@3", "mrr", "invalid_output_rate"])
    assert v["recall@2"] == 0.5
    assert v["ndcg@3"] == pytest.approx((1 + 1 / 2) / (1 + 1 / math.log2(3)))
    assert v["mrr"] == 1.0 and v["invalid_output_rate"] == 1.0  # duplicate item


def test_bootstrap_is_seeded_and_brackets_the_value():
    rng = np.random.default_rng(1)
    golds = [str(x) for x in rng.integers(1, 6, 300)]
    preds = [str(x) for x in rng.integers(1, 6, 300)]
    s = Scored("regress", golds, preds)
    a = compute_metrics(s, ["mae", "rmse"], n_boot=300, seed=7)
    b = compute_metrics(Scored("regress", golds, preds), ["mae", "rmse"], n_boot=300, seed=7)
    assert a == b
    for m in ("mae", "rmse"):
        assert a[m]["ci_low"] < a[m]["value"] < a[m]["ci_high"]
    c = compute_metrics(Scored("classify", golds, preds, labels=list("12345")), ["macro_f1"], n_boot=300, seed=7)
    assert c["macro_f1"]["ci_low"] < c["macro_f1"]["value"] < c["macro_f1"]["ci_high"]


def test_registry_errors():
    assert "recall@K" in metric_names()
    with pytest.raises(KeyError):
        get_metric("bleu")
    with pytest.raises(DataError):
        compute_metrics(Scored("regress", ["1"], ["1"]), ["accuracy"])
    with pytest.raises(DataError, match="not one of the task's labels"):
        values(Scored("classify", ["nope"], ["a"], labels=["a", "b"]), ["accuracy"])
