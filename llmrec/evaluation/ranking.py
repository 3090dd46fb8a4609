"""The one ranking protocol every recommender is scored with (popularity, SASRec, the generative LLM).

Leave-one-out with a single relevant item per example, so Recall@K is the hit rate and
NDCG@K = 1 / log2(rank + 1) when the target is within the top K (the ideal DCG is 1).

Two entry points share the same definitions:

* :func:`ranking_metrics` scores ranked lists (what a generative model emits); MRR is the reciprocal rank
  within the list, 0 when the target is absent; with ``valid_items`` it also reports ``invalid_rate``.
* :func:`full_catalogue_metrics` scores a score matrix over the whole catalogue under both protocols:
  ``rated_removed`` (the user's history items cannot be recommended; the main protocol, since ml-100k has no
  repeat ratings) and ``rated_kept``. Its MRR comes from the target's full (untruncated) rank.

Ties are always broken by catalogue index (lower index first), so every figure is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from llmrec.errors import DataError

PROTOCOLS = ("rated_removed", "rated_kept")


@dataclass
class RankingResult:
    """Mean metrics (``summary``) and the per-example values behind them (``per_example``, for bootstrap CIs)."""

    summary: dict[str, float]
    per_example: dict[str, np.ndarray] = field(repr=False)
    n: int = 0

    def __getitem__(self, key: str) -> float:
        return self.summary[key]

    def ci(self, metric: str, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
        """Percentile bootstrap confidence interval of a metric's mean over examples."""
        return bootstrap_ci(self.per_example[metric], n_boot=n_boot, level=level, seed=seed)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = (5, 10)) -> RankingResult:
    """Metrics from 1-based ranks of the target (``0`` or ``inf`` = not ranked/absent)."""
    ks = _check_ks(ks)
    ranks = np.asarray(ranks, dtype=np.float64)
    found = np.isfinite(ranks) & (ranks >= 1)
    safe = np.where(found, ranks, np.inf)
    per: dict[str, np.ndarray] = {}
    for k in ks:
        hit = safe <= k
        per[f"recall@{k}"] = hit.astype(np.float64)
        with np.errstate(divide="ignore"):
            per[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(np.where(hit, safe, 1.0) + 1.0), 0.0)
    per["mrr"] = np.where(found, 1.0 / np.where(found, safe, 1.0), 0.0)
    summary = {name: float(v.mean()) if v.size else 0.0 for name, v in per.items()}
    return RankingResult(summary, per, int(ranks.size))


def ranking_metrics(
    ranked: Sequence[Sequence[str]],
    targets: Sequence[str],
    ks: Sequence[int] = (5, 10),
    valid_items: Iterable[str] | None = None,
) -> RankingResult:
    """Recall@K, NDCG@K and MRR of ranked lists against one target each.

    A target counts at its first occurrence in the list. With ``valid_items``, ``invalid_rate`` is the fraction
    of lists that contain an item outside ``valid_items`` or the same item twice (metrics are still computed
    on the list as given, so an invalid list is never rewarded by being repaired here).
    """
    if len(ranked) != len(targets):
        raise DataError(f"{len(ranked)} ranked lists but {len(targets)} targets", field="targets")
    ranks = np.zeros(len(targets), dtype=np.float64)
    for i, (items, target) in enumerate(zip(ranked, targets, strict=True)):
        if isinstance(items, str):
            raise DataError("a ranked list must be a sequence of item ids, not a string", record=i)
        for pos, item in enumerate(items):
            if item == target:
                ranks[i] = pos + 1
                break
    result = metrics_from_ranks(ranks, ks)
    if valid_items is not None:
        valid = valid_items if isinstance(valid_items, (set, frozenset, Mapping)) else set(valid_items)
        bad = np.array(
            [len(set(items)) != len(items) or any(x not in valid for x in items) for items in ranked],
            dtype=np.float64,
        )
        result.per_example["invalid"] = bad
        result.summary["invalid_rate"] = float(bad.mean()) if bad.size else 0.0
    return result


def _exclusion_mask(
    n_users: int, item_index: Mapping[str, int], exclude: Sequence[Iterable[str]] | None
) -> np.ndarray | None:
    if exclude is None:
        return None
    if len(exclude) != n_users:
        raise DataError(f"{len(exclude)} exclusion sets for {n_users} score rows", field="exclude")
    mask = np.zeros((n_users, len(item_index)), dtype=bool)
    for row, items in enumerate(exclude):
        cols = [item_index[x] for x in items if x in item_index]  # unknown history items cannot be ranked anyway
        mask[row, cols] = True
    return mask


def _check_scores(scores: np.ndarray, n_items: int) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] != n_items:
        raise DataError(f"scores must have shape [n_users, {n_items}], got {scores.shape}", field="scores")
    if np.isnan(scores).any():
        raise DataError("scores contain NaN", field="scores")
    return scores


def topk_from_scores(
    scores: np.ndarray,
    item_ids: Sequence[str],
    exclude: Sequence[Iterable[str]] | None = None,
    k: int = 10,
) -> list[list[str]]:
    """Top-``k`` item ids per row, highest score first, ties broken by item index; excluded items never appear."""
    scores = _check_scores(scores, len(item_ids)).astype(np.float64, copy=True)
    index = {item: i for i, item in enumerate(item_ids)}
    mask = _exclusion_mask(scores.shape[0], index, exclude)
    if mask is not None:
        scores[mask] = -np.inf
    # a stable sort on the negated scores keeps equal scores in index order
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out = []
    for row, cols in enumerate(order):
        allowed = cols if mask is None else cols[~mask[row, cols]]
        out.append([item_ids[c] for c in allowed])
    return out


def full_ranks(
    scores: np.ndarray,
    target_idx: Sequence[int],
    exclude_mask: np.ndarray | None = None,
) -> np.ndarray:
    """1-based rank of each row's target among the non-excluded items, ties by item index.

    The target itself is never excluded: if a user re-consumes an item it stays rankable.
    """
    scores = np.asarray(scores, dtype=np.float64)
    target_idx = np.asarray(target_idx, dtype=np.int64)
    rows = np.arange(scores.shape[0])
    t = scores[rows, target_idx][:, None]
    cols = np.arange(scores.shape[1])[None, :]
    ahead = (scores > t) | ((scores == t) & (cols < target_idx[:, None]))
    if exclude_mask is not None:
        ahead &= ~exclude_mask
    return ahead.sum(axis=1) + 1


def full_catalogue_metrics(
    scores: np.ndarray,
    item_ids: Sequence[str],
    targets: Sequence[str],
    histories: Sequence[Iterable[str]],
    ks: Sequence[int] = (5, 10),
    protocols: Sequence[str] = PROTOCOLS,
) -> dict[str, RankingResult]:
    """Full-catalogue leave-one-out metrics under ``rated_removed`` and/or ``rated_kept``.

    ``scores[i, j]`` scores ``item_ids[j]`` for example ``i``; ``histories[i]`` are the items that example's user
    had already rated (removed from the ranking under ``rated_removed``). Adds ``mean_rank`` and
    ``median_rank`` (of the full rank) to each summary.
    """
    scores = _check_scores(scores, len(item_ids))
    if not (len(targets) == len(histories) == scores.shape[0]):
        raise DataError(
            f"{scores.shape[0]} score rows, {len(targets)} targets, {len(histories)} histories", field="targets"
        )
    index = {item: i for i, item in enumerate(item_ids)}
    try:
        target_idx = [index[t] for t in targets]
    except KeyError as exc:
        raise DataError(f"target item {exc.args[0]!r} is not in the catalogue", field="targets") from None
    out: dict[str, RankingResult] = {}
    for protocol in protocols:
        if protocol == "rated_removed":
            mask = _exclusion_mask(scores.shape[0], index, histories)
        elif protocol == "rated_kept":
            mask = None
        else:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
        out[protocol] = full_rank_metrics(full_ranks(scores, target_idx, mask), ks)
    return out


def full_rank_metrics(ranks: np.ndarray, ks: Sequence[int] = (5, 10)) -> RankingResult:
    """:func:`metrics_from_ranks` of full (untruncated) 1-based ranks, plus ``mean_rank`` / ``median_rank`` and
    the per-example ``rank``: what :func:`full_catalogue_metrics` reports, also for ranks gathered from shards."""
    ranks = np.asarray(ranks)
    result = metrics_from_ranks(ranks, ks)
    result.per_example["rank"] = ranks.astype(np.float64)
    result.summary["mean_rank"] = float(ranks.mean()) if ranks.size else math.nan
    result.summary["median_rank"] = float(np.median(ranks)) if ranks.size else math.nan
    return result


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (deterministic for a seed)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def summaries(results: Mapping[str, RankingResult], digits: int = 4) -> dict[str, dict[str, float]]:
    """``{protocol: summary}`` rounded for JSON output."""
    return {p: {k: round(v, digits) for k, v in r.summary.items()} for p, r in results.items()}
