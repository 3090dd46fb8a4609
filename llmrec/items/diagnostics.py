"""How good is a semantic-ID table: codebook use, collisions, reconstruction, and semantic coherence."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from llmrec.items.quantizers import Quantizer, row_chunks
from llmrec.items.semantic_ids import SemanticIds, collision_rate


def level_usage(codes: np.ndarray, size: int) -> tuple[float, float]:
    """(utilisation = share of codes used by at least one item, perplexity = exp(entropy of code use))."""
    counts = np.bincount(codes, minlength=size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float((counts > 0).mean()), float(np.exp(-(p * np.log(p)).sum()))


def category_coherence(
    first_codes: np.ndarray, categories: Sequence[Collection[str]], max_exact: int = 5000, seed: int = 0
) -> float | None:
    """P(two items with the same first code share a category) / P(two random items share a category): how much
    purer in the dataset's category attribute (MovieLens: genre) a first-level SID prefix is than chance.

    Exact over all pairs up to ``max_exact`` items, else over 500k seeded random pairs. ``None`` without
    categories.
    """
    n = len(first_codes)
    vocab = sorted({g for gs in categories for g in gs})
    if n < 2 or not vocab:
        return None
    col = {g: j for j, g in enumerate(vocab)}
    multi = np.zeros((n, len(vocab)), dtype=np.float32)
    for i, gs in enumerate(categories):
        multi[i, [col[g] for g in gs]] = 1.0
    if n <= max_exact:
        share = (multi @ multi.T) > 0
        upper = np.triu_indices(n, 1)
        base = share[upper].mean()
        same = (first_codes[:, None] == first_codes[None, :])[upper]
        within = share[upper][same].mean() if same.any() else np.nan
    else:
        rng = np.random.default_rng(seed)
        a, b = rng.integers(0, n, 500_000), rng.integers(0, n, 500_000)
        keep = a != b
        base = ((multi[a[keep]] * multi[b[keep]]).sum(1) > 0).mean()
        order = np.argsort(first_codes, kind="stable")
        sorted_codes = first_codes[order]
        starts = np.searchsorted(sorted_codes, first_codes[a])
        ends = np.searchsorted(sorted_codes, first_codes[a], side="right")
        partner = order[starts + (rng.random(len(a)) * (ends - starts)).astype(np.int64)]
        keep = partner != a
        within = ((multi[a[keep]] * multi[partner[keep]]).sum(1) > 0).mean()
    return float(within / base) if base > 0 and np.isfinite(within) else None


def diagnostics(
    sids: SemanticIds,
    vectors: np.ndarray | None = None,
    quantizer: Quantizer | None = None,
    categories: Sequence[Collection[str]] | None = None,
) -> dict[str, Any]:
    """Per-level utilisation/perplexity (quantized levels only; the disambiguation level is used fully by
    construction), collision rates, reconstruction error (with ``vectors``), ``category_coherence`` (with
    ``categories``: each item's categories, catalogue order)."""
    quantized = sids.codes[:, :-1]
    usage = [level_usage(quantized[:, level], size) for level, size in enumerate(sids.codebook_sizes[:-1])]
    _, group_sizes = np.unique(quantized, axis=0, return_counts=True) if quantized.shape[1] else (None, [len(sids)])
    group_sizes = np.asarray(group_sizes)
    out: dict[str, Any] = {
        "items": len(sids),
        "levels": sids.levels,
        "codebook_sizes": list(sids.codebook_sizes),
        "unique_fraction": sids.unique_fraction,
        "collision_rate": sids.collision_rate,
        "colliding_items_fraction": float(group_sizes[group_sizes > 1].sum() / len(sids)),
        "max_collision_group": int(group_sizes.max()),
        "utilization": [u for u, _ in usage],
        "perplexity": [p for _, p in usage],
    }
    quantizer = quantizer or sids.quantizer
    if vectors is not None and quantizer is not None:
        x = np.asarray(vectors, dtype=np.float32)
        out["collision_rate_nearest"] = collision_rate(quantizer.encode(x, collision_aware=False))
        # Per-row sums in chunks (no [n, d] temporaries at a million items); the means are as before.
        chunks = row_chunks(len(x), quantizer.config.chunk_size)
        err = np.concatenate([((x[lo:hi] - quantizer.reconstruct(quantized[lo:hi])) ** 2).sum(1) for lo, hi in chunks])
        norm = np.concatenate([(x[lo:hi].astype(np.float64) ** 2).sum(1) for lo, hi in chunks])
        out["reconstruction_mse"] = float(err.mean())
        out["reconstruction_rel"] = float(err.mean() / max(norm.mean(), 1e-12))
    if categories is not None:
        out["category_coherence"] = category_coherence(quantized[:, 0], categories) if quantized.shape[1] else None
    return out
