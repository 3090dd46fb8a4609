"""The metric registry: per-example statistics, corpus aggregation, seeded bootstrap confidence intervals.

Every metric maps a :class:`Scored` batch to an ``(n, d)`` array of per-example sufficient statistics and
reduces column means to the corpus value. Means of statistics are all a bootstrap needs, so a confidence
interval is one weighted matrix product for any metric, macro-F1 and RMSE included.

Names: ``accuracy``, ``macro_f1``, ``mae``, ``rmse``, ``rouge1``, ``rougeL``, ``recall@K``, ``ndcg@K``,
``mrr``, ``parse_failure_rate``, ``invalid_output_rate`` (any K). Add more with :func:`register_metric`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from llmrec.errors import DataError
from llmrec.evaluation.parsing import parse_labels, parse_numbers, parse_ranked

OUTPUT_TYPES = ("generate", "classify", "regress", "rank_items")


@dataclass
class Scored:
    """Golds and raw outputs of one task, parsed once for every metric."""

    output_type: str
    golds: Sequence[Any]
    outputs: Sequence[Any]
    labels: Sequence[str] = ()
    value_range: tuple[float, float] = (1.0, 5.0)
    mode: str = "lamp"
    catalogue: frozenset[str] | None = None  # rank_items: ids that exist (others count as invalid)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.output_type not in OUTPUT_TYPES:
            raise ValueError(f"unknown output type {self.output_type!r}; use one of {OUTPUT_TYPES}")
        if len(self.golds) != len(self.outputs):
            raise ValueError(f"{len(self.golds)} golds but {len(self.outputs)} outputs")
        if not len(self.golds):
            raise DataError("nothing to score: no examples")

    @property
    def n(self) -> int:
        return len(self.golds)

    @cached_property
    def gold_index(self) -> np.ndarray:
        index = {lab: i for i, lab in enumerate(self.labels)}
        out = np.empty(self.n, dtype=np.int64)
        for i, g in enumerate(self.golds):
            g = str(g).strip()
            if g not in index:
                raise DataError(f"gold label {g!r} is not one of the task's labels {list(self.labels)}", record=i)
            out[i] = index[g]
        return out

    @cached_property
    def gold_value(self) -> np.ndarray:
        try:
            return np.array([float(g) for g in self.golds], dtype=np.float64)
        except ValueError as exc:
            raise DataError(f"gold rating is not a number: {exc}") from None

    @cached_property
    def classes(self):
        return parse_labels([str(o) for o in self.outputs], self.labels, self.mode)

    @cached_property
    def numbers(self):
        return parse_numbers([str(o) for o in self.outputs], self.gold_value, self.value_range, self.mode)

    @cached_property
    def ranked(self) -> list[list[str]]:
        return [parse_ranked(o) for o in self.outputs]

    @cached_property
    def targets(self) -> list[set[str]]:
        return [set(parse_ranked(g)) for g in self.golds]

    def failure_flags(self) -> tuple[np.ndarray, np.ndarray]:
        """(parse_failed, invalid) per example for this output type."""
        if self.output_type == "classify":
            return self.classes.parse_failed, self.classes.invalid
        if self.output_type == "regress":
            return self.numbers.parse_failed, self.numbers.invalid
        if self.output_type == "rank_items":
            failed = np.array([not r for r in self.ranked])
            invalid = failed.copy()
            for i, r in enumerate(self.ranked):
                dup = len(set(r)) != len(r)
                unknown = self.catalogue is not None and any(x not in self.catalogue for x in r)
                invalid[i] |= dup or unknown
            return failed, invalid
        empty = np.array([not str(o).strip() for o in self.outputs])
        return empty, empty.copy()

    def rouge(self) -> np.ndarray:
        """(n, 2) ROUGE-1 / ROUGE-L F-measures from the reference scorer, no stemming (as LaMP)."""
        if "rouge" not in self._cache:
            from rouge_score import rouge_scorer

            scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
            rows = []
            for g, o in zip(self.golds, self.outputs, strict=True):
                s = scorer.score(str(g).strip(), str(o).strip())
                rows.append((s["rouge1"].fmeasure, s["rougeL"].fmeasure))
            self._cache["rouge"] = np.array(rows, dtype=np.float64).reshape(-1, 2)
        return self._cache["rouge"]


@dataclass(frozen=True)
class Metric:
    name: str
    output_types: tuple[str, ...]
    stats: Callable[[Scored], np.ndarray]  # -> (n, d)
    reduce: Callable[[np.ndarray], Any]  # column means (..., d) -> value(s)
    higher_is_better: bool = True


_REGISTRY: dict[str, Metric] = {}
_FACTORIES: dict[str, Callable[[int], Metric]] = {}


def register_metric(metric: Metric) -> Metric:
    _REGISTRY[metric.name] = metric
    return metric


def metric_names() -> list[str]:
    return sorted(_REGISTRY) + [f"{p}@K" for p in sorted(_FACTORIES)]


def get_metric(name: str) -> Metric:
    if name in _REGISTRY:
        return _REGISTRY[name]
    m = re.fullmatch(r"([a-z_]+)@(\d+)", name)
    if m and m.group(1) in _FACTORIES and int(m.group(2)) > 0:
        return _FACTORIES[m.group(1)](int(m.group(2)))
    raise KeyError(f"unknown metric {name!r}; known: {metric_names()}")


def _first(m: np.ndarray) -> np.ndarray:
    return m[..., 0]


def _col(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1, 1)


def _f1_stats(s: Scored) -> np.ndarray:
    n_lab = len(s.labels)
    gold, pred = s.gold_index, s.classes.index
    out = np.zeros((s.n, 3 * n_lab))
    rows = np.arange(s.n)
    right = pred == gold
    out[rows[right], gold[right]] = 1  # true positive for the gold class
    wrong = ~right
    out[rows[wrong], 2 * n_lab + gold[wrong]] = 1  # false negative for the gold class
    fp = wrong & (pred >= 0)  # an out-of-label output is a wrong class but no label's false positive
    out[rows[fp], n_lab + pred[fp]] = 1
    return out


def _f1_reduce(m: np.ndarray) -> np.ndarray:
    n_lab = m.shape[-1] // 3
    tp, fp, fn = m[..., :n_lab], m[..., n_lab : 2 * n_lab], m[..., 2 * n_lab :]
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)
    return f1.mean(axis=-1)  # over all labels, absent ones scoring 0 (sklearn's macro over a label list)


def _rank_of_targets(s: Scored) -> list[tuple[list[int], int]]:
    """Per example: 1-based ranks of the distinct targets found, and the number of targets."""
    if "ranks" not in s._cache:
        out = []
        for ranked, targets in zip(s.ranked, s.targets, strict=True):
            seen: set[str] = set()
            ranks = []
            for pos, item in enumerate(ranked, start=1):
                if item in targets and item not in seen:
                    ranks.append(pos)
                seen.add(item)
            out.append((ranks, len(targets)))
        s._cache["ranks"] = out
    return s._cache["ranks"]


def _shared_ranking(s: Scored, key: str, k: int) -> np.ndarray | None:
    """Single-target lists go through the shared protocol in :mod:`llmrec.evaluation.ranking`."""
    if any(len(t) != 1 for t in s.targets):
        return None
    from llmrec.evaluation.ranking import ranking_metrics

    res = ranking_metrics(s.ranked, [next(iter(t)) for t in s.targets], ks=(k,))
    return _col(res.per_example[key])


def _recall_at(k: int) -> Metric:
    def stats(s: Scored) -> np.ndarray:
        shared = _shared_ranking(s, f"recall@{k}", k)
        if shared is not None:
            return shared
        return _col([sum(r <= k for r in ranks) / max(n_t, 1) for ranks, n_t in _rank_of_targets(s)])

    return Metric(f"recall@{k}", ("rank_items",), stats, _first)


def _ndcg_at(k: int) -> Metric:
    def stats(s: Scored) -> np.ndarray:
        shared = _shared_ranking(s, f"ndcg@{k}", k)
        if shared is not None:
            return shared
        vals = []  # several targets: binary relevance, ideal DCG over min(#targets, k)
        for ranks, n_t in _rank_of_targets(s):
            dcg = sum(1.0 / math.log2(r + 1) for r in ranks if r <= k)
            idcg = sum(1.0 / math.log2(r + 1) for r in range(1, min(n_t, k) + 1))
            vals.append(dcg / idcg if idcg else 0.0)
        return _col(vals)

    return Metric(f"ndcg@{k}", ("rank_items",), stats, _first)


def _mrr_stats(s: Scored) -> np.ndarray:
    shared = _shared_ranking(s, "mrr", 1)
    if shared is not None:
        return shared
    return _col([1.0 / ranks[0] if ranks else 0.0 for ranks, _ in _rank_of_targets(s)])


register_metric(Metric("accuracy", ("classify",), lambda s: _col(s.classes.index == s.gold_index), _first))
register_metric(Metric("macro_f1", ("classify",), _f1_stats, _f1_reduce))
register_metric(
    Metric("mae", ("regress",), lambda s: _col(np.abs(s.numbers.value - s.gold_value)), _first, False)
)
register_metric(
    Metric("rmse", ("regress",), lambda s: _col((s.numbers.value - s.gold_value) ** 2), lambda m: np.sqrt(m[..., 0]),
           False)
)
register_metric(Metric("rouge1", ("generate",), lambda s: s.rouge()[:, :1], _first))
register_metric(Metric("rougeL", ("generate",), lambda s: s.rouge()[:, 1:], _first))
register_metric(Metric("mrr", ("rank_items",), _mrr_stats, _first))
register_metric(
    Metric("parse_failure_rate", OUTPUT_TYPES, lambda s: _col(s.failure_flags()[0]), _first, False)
)
register_metric(
    Metric("invalid_output_rate", OUTPUT_TYPES, lambda s: _col(s.failure_flags()[1]), _first, False)
)
_FACTORIES["recall"] = _recall_at
_FACTORIES["ndcg"] = _ndcg_at


class Bootstrap:
    """Resample rows once (seeded) and reuse the draws for every metric, so intervals are comparable."""

    def __init__(self, n: int, n_boot: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        dtype = np.int32 if n < 2**31 else np.int64
        self.idx = rng.integers(0, n, size=(n_boot, n), dtype=dtype)
        self.n = n
        self._weights: np.ndarray | None = None

    def means(self, stats: np.ndarray) -> np.ndarray:
        """(n_boot, d) column means of the resampled rows."""
        if stats.shape[1] <= 4:  # gather is cheapest for narrow statistics
            return np.stack([stats[:, j][self.idx].mean(axis=1) for j in range(stats.shape[1])], axis=1)
        if self._weights is None:  # wide (macro-F1): resample counts times the statistics
            self._weights = np.stack([np.bincount(row, minlength=self.n) for row in self.idx]).astype(np.float32)
        return (self._weights @ stats.astype(np.float32)).astype(np.float64) / self.n


def bootstrap_means(stats: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    return Bootstrap(stats.shape[0], n_boot, seed).means(stats)


def compute_metrics(
    scored: Scored,
    names: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, float]]:
    """``{name: {"value", "ci_low", "ci_high"}}``; percentile bootstrap over examples (``n_boot=0``: no CI)."""
    results: dict[str, dict[str, float]] = {}
    alpha = (1 - confidence) / 2
    boot = Bootstrap(scored.n, n_boot, seed) if n_boot > 0 else None
    for name in names:
        metric = get_metric(name)
        if scored.output_type not in metric.output_types:
            raise DataError(f"metric {name!r} does not apply to output type {scored.output_type!r}")
        stats = metric.stats(scored)
        row = {"value": float(metric.reduce(stats.mean(axis=0)))}
        if boot is not None:
            boots = np.asarray(metric.reduce(boot.means(stats)), dtype=np.float64)
            row["ci_low"], row["ci_high"] = (float(x) for x in np.quantile(boots, [alpha, 1 - alpha]))
        results[name] = row
    return results


def per_example(scored: Scored, name: str) -> np.ndarray:
    """The per-example score (first statistic column) of a mean-type metric, e.g. absolute errors for MAE."""
    return get_metric(name).stats(scored)[:, 0]
