"""Leave-one-out and time-based splits: hand-checked on a small folder, leakage-checked on ml-100k."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec.data import by_time, leave_one_out, load_movielens
from llmrec.data.schema import UserHistory


def test_leave_one_out_small(ml_folder):
    hist = load_movielens(ml_folder("grouplens")).histories()
    split = leave_one_out(hist)
    assert split.kind == "leave_one_out"
    assert split.too_short == ["30"]  # two interactions: kept in train, reported
    assert split.train["30"] == hist["30"]
    assert split.train["10"].item_ids == ("1", "4")
    valid = {x.user_id: x for x in split.valid}
    test = {x.user_id: x for x in split.test}
    assert set(valid) == set(test) == {"10", "20"}
    assert (valid["10"].target, valid["10"].target_rating, valid["10"].target_timestamp) == ("2", 5.0, 200)
    assert valid["10"].history.item_ids == ("1", "4")
    assert (test["10"].target, test["10"].target_rating, test["10"].target_timestamp) == ("3", 4.0, 300)
    assert test["10"].history.item_ids == ("1", "4", "2")
    assert test["20"].target == "3" and test["20"].history.item_ids == ("1", "2", "5")


def test_leave_one_out_min_length(ml_folder):
    hist = load_movielens(ml_folder("grouplens")).histories()
    split = leave_one_out(hist, min_length=5)
    assert sorted(split.too_short) == ["10", "20", "30"] and split.test == [] and split.valid == []
    with pytest.raises(ValueError, match="min_length"):
        leave_one_out(hist, min_length=2)


def test_leave_one_out_ml100k_no_leakage(ml100k):
    hist = ml100k.histories()
    split = leave_one_out(hist)
    assert len(split.train) == len(split.valid) == len(split.test) == 943
    assert split.too_short == []
    valid = {x.user_id: x for x in split.valid}
    for ex in split.test:
        h = hist[ex.user_id]
        assert ex.target == h.item_ids[-1]
        assert ex.target not in ex.history.item_ids  # never in its own history
        assert ex.history.item_ids == h.item_ids[:-1]
        assert max(ex.history.timestamps) <= ex.target_timestamp
        v = valid[ex.user_id]
        assert v.target == h.item_ids[-2] and v.target not in v.history.item_ids
        assert v.history == split.train[ex.user_id]
        assert ex.target not in split.train[ex.user_id].item_ids
    assert sum(len(h) for h in split.train.values()) == 100_000 - 2 * 943


def _h(user: str, stamps: list[int]) -> UserHistory:
    return UserHistory(user, tuple(f"{user}-{t}" for t in stamps), tuple(stamps), (None,) * len(stamps))


def test_by_time_small():
    hist = {"a": _h("a", [1, 2, 3, 4, 5, 6, 7, 8]), "b": _h("b", [9, 10]), "c": _h("c", [4])}
    # 11 events; 'lower' quantiles: test cutoff = value at 0.8 -> 8, valid cutoff = value at 0.6 -> 6
    split = by_time(hist, valid_fraction=0.2, test_fraction=0.2)
    assert split.kind == "by_time"
    assert split.train["a"].timestamps == (1, 2, 3, 4, 5)
    assert split.train["c"].timestamps == (4,)
    assert "b" not in split.train and split.too_short == ["b"]
    assert [(x.user_id, x.target_timestamp) for x in split.valid] == [("a", 6), ("a", 7)]
    # b's first event (t=9) has no history, so it is not an example; t=10 is, with history [9]
    assert [(x.user_id, x.target_timestamp) for x in split.test] == [("a", 8), ("b", 10)]
    assert split.test[1].history.timestamps == (9,)
    assert split.valid[1].history.timestamps == (1, 2, 3, 4, 5, 6)


def test_by_time_ml100k_no_leakage(ml100k):
    hist = ml100k.histories()
    split = by_time(hist, valid_fraction=0.1, test_fraction=0.1)
    stamps = np.array([x.timestamp for x in ml100k.interactions])
    t_test = min(x.target_timestamp for x in split.test)
    t_valid = min(x.target_timestamp for x in split.valid)
    assert max(max(h.timestamps) for h in split.train.values()) < t_valid <= t_test
    assert max(x.target_timestamp for x in split.valid) < t_test
    assert 0.08 < (stamps >= t_test).mean() < 0.12
    for ex in split.test + split.valid:
        h = hist[ex.user_id]
        n = len(ex.history)
        assert n >= 1
        assert h.item_ids[n] == ex.target and ex.history.item_ids == h.item_ids[:n]  # exactly the earlier events
        assert max(ex.history.timestamps) <= ex.target_timestamp
    users_without_train = set(hist) - set(split.train)
    assert users_without_train == set(split.too_short)
    assert len(split.too_short) > 0


def test_by_time_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        by_time({"a": _h("a", [1, 2])}, valid_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="no interactions"):
        by_time({})
