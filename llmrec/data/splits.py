"""Splits of user histories: leave-one-out (last item test, second-to-last validation) and by time."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmrec.data.schema import UserHistory


@dataclass(frozen=True)
class SplitExample:
    """Predict ``target`` (an item id) for ``history`` (everything the user did before it)."""

    user_id: str
    history: UserHistory
    target: str
    target_rating: float | None = None
    target_timestamp: int | None = None


@dataclass
class Split:
    """``train`` holds the histories a model may learn from; ``valid``/``test`` hold the held-out targets."""

    train: dict[str, UserHistory]
    valid: list[SplitExample]
    test: list[SplitExample]
    kind: str
    too_short: list[str] = field(default_factory=list)  # users kept in train only (reported, not hidden)


def _example(h: UserHistory, i: int) -> SplitExample:
    return SplitExample(h.user_id, h.prefix(i), h.item_ids[i], h.ratings[i], h.timestamps[i])


def leave_one_out(histories: dict[str, UserHistory], min_length: int = 3) -> Split:
    """Per user: test = last item, validation = second-to-last, train = the rest.

    Users with fewer than ``min_length`` interactions have nothing held out; they stay in train and are
    listed in ``Split.too_short``.
    """
    if min_length < 3:
        raise ValueError("leave_one_out needs min_length >= 3 (train, validation and test items)")
    train: dict[str, UserHistory] = {}
    valid: list[SplitExample] = []
    test: list[SplitExample] = []
    too_short: list[str] = []
    for user, h in histories.items():
        if len(h) < min_length:
            train[user] = h
            too_short.append(user)
            continue
        train[user] = h.prefix(len(h) - 2)
        valid.append(_example(h, len(h) - 2))
        test.append(_example(h, len(h) - 1))
    return Split(train, valid, test, "leave_one_out", too_short)


def by_time(histories: dict[str, UserHistory], valid_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """Global time split: the last ``test_fraction`` of all events (by timestamp) are test, the
    ``valid_fraction`` before them validation. Every held-out event with at least one earlier event becomes
    an example whose history is all of that user's earlier events. Users with no event before the validation
    cutoff have no training history and are listed in ``too_short``."""
    if not 0 <= valid_fraction < 1 or not 0 < test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise ValueError("fractions must be in [0, 1) and sum to less than 1")
    stamps = np.array([t for h in histories.values() for t in h.timestamps], dtype=np.int64)
    if stamps.size == 0:
        raise ValueError("no interactions to split")
    t_test = int(np.quantile(stamps, 1 - test_fraction, method="lower"))
    t_valid = int(np.quantile(stamps, 1 - test_fraction - valid_fraction, method="lower"))
    train: dict[str, UserHistory] = {}
    valid: list[SplitExample] = []
    test: list[SplitExample] = []
    too_short: list[str] = []
    for user, h in histories.items():
        n_train = sum(1 for t in h.timestamps if t < t_valid)
        if n_train:
            train[user] = h.prefix(n_train)
        for i in range(n_train, len(h)):
            if i == 0:
                continue  # no history to predict from
            (test if h.timestamps[i] >= t_test else valid).append(_example(h, i))
        if n_train == 0:
            too_short.append(user)
    return Split(train, valid, test, "by_time", too_short)
