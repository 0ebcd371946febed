"""Spearman's rank correlation as ``scipy.stats.spearmanr`` computes it, without depending on SciPy.

Ranks are 1-based with ties given the average of the ranks they span; ρ is the Pearson correlation of
the two rank vectors. Like SciPy's default, any NaN gives NaN, and so does a constant input (ρ undefined).
"""

from __future__ import annotations

import numpy as np


def average_ranks(values) -> np.ndarray:
    """1-based ranks of ``values`` (1-D), ties sharing the mean of the ranks they occupy."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"ranks need a 1-D array, got shape {values.shape}")
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman's ρ of two equally long 1-D samples (NaN when either has a NaN or is constant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-D arrays of one length, got shapes {x.shape} and {y.shape}")
    if len(x) < 2 or np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    rx, ry = average_ranks(x), average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denominator = np.sqrt(np.dot(rx, rx) * np.dot(ry, ry))
    if denominator == 0:
        return float("nan")
    return float(np.clip(np.dot(rx, ry) / denominator, -1.0, 1.0))


def finite_spearman(x, y) -> tuple[float, int]:
    """Spearman's ρ over the pairs where both values are finite, and how many pairs that is."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    return spearman(x[keep], y[keep]), int(keep.sum())
