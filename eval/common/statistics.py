"""Intervals for reported numbers: percentile bootstrap over the units measured (proteins, checkpoints)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

RESAMPLES = 2000


def bootstrap_mean(values: Sequence[float], seed: int = 0, resamples: int = RESAMPLES) -> dict[str, float]:
    """The mean of ``values`` and its 95% percentile-bootstrap interval (NaNs ignored)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite value to average")
    draws = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    means = values[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "ci95_low": float(low), "ci95_high": float(high), "n": int(values.size)}


def linear_trend(x: Sequence[float], y: Sequence[float], seed: int = 0, resamples: int = RESAMPLES) -> dict:
    """Least-squares slope of ``y`` on ``x`` and Pearson r, each with a 95% bootstrap interval over the points.

    Resamples whose ``x`` (or ``y``) are all equal have no slope (or no r) and are left out; with fewer than three
    points no interval is given.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"need two equal-length series of at least 2 points, got {x.shape} and {y.shape}")
    slope, r = _slope_and_r(x, y)
    result = {"points": int(x.size), "slope": slope, "r": r}
    if x.size >= 3:
        draws = np.random.default_rng(seed).integers(0, x.size, size=(resamples, x.size))
        fits = np.array([_slope_and_r(x[d], y[d]) for d in draws])
        for name, column in (("slope", fits[:, 0]), ("r", fits[:, 1])):
            finite = column[np.isfinite(column)]
            if finite.size:
                result[f"{name}_ci95"] = [float(v) for v in np.percentile(finite, [2.5, 97.5])]
    return result


def _slope_and_r(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    slope = float(dx @ dy) / sxx if sxx > 0 else float("nan")
    r = float(dx @ dy) / np.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")
    return slope, float(r)


def resample_counts(count: int, seed: int = 0, resamples: int = RESAMPLES) -> np.ndarray:
    """(resamples, count): how often each of ``count`` items is drawn in each bootstrap resample.

    For statistics that are not a mean of per-item values (a pooled AUC): weight each item's contribution.
    """
    return np.concatenate(list(resample_count_chunks(count, seed=seed, resamples=resamples)))


def resample_count_chunks(
    count: int, seed: int = 0, resamples: int = RESAMPLES, max_cells: int = 2**24
) -> Iterator[np.ndarray]:
    """:func:`resample_counts`' table (the same draws) in row blocks of at most ``max_cells`` entries.

    For many items (a held-out split of millions of sequences) the whole table would not fit in memory.
    """
    if count < 1:
        raise ValueError("no item to resample")
    rng, rows = np.random.default_rng(seed), max(1, max_cells // count)
    for start in range(0, resamples, rows):
        draws = rng.integers(0, count, size=(min(rows, resamples - start), count))
        yield np.stack([np.bincount(row, minlength=count) for row in draws])


def resample_indices(count: int, seed: int = 0, resamples: int = RESAMPLES) -> np.ndarray:
    """(resamples, count): the item indices of each bootstrap resample, drawn with replacement.

    The same ``seed`` gives the same resamples, so statistics of two methods on the same items can be paired.
    """
    if count < 1:
        raise ValueError("no item to resample")
    return np.random.default_rng(seed).integers(0, count, size=(resamples, count))


def bootstrap_statistic(statistic: Callable[[np.ndarray], float], draws: np.ndarray) -> np.ndarray:
    """``statistic`` of each resample: called with one row of ``draws`` (item indices) at a time."""
    return np.array([statistic(row) for row in draws], dtype=np.float64)


def percentile_interval(values: Sequence[float]) -> list[float] | None:
    """The 95% percentile interval of the finite bootstrap ``values`` (None when none is finite).

    Resamples where a statistic is undefined (a constant resample has no rank correlation) are left out.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


def pooled_ratio_interval(
    numerators: Sequence[float], denominators: Sequence[float], counts: np.ndarray
) -> list[float] | None:
    """95% bootstrap interval of ``sum(numerators) / sum(denominators)`` with the items resampled.

    For a statistic pooled over items of different sizes (residues correct over residues scored, per protein):
    ``counts`` is :func:`resample_counts`' table, one resample per row; resamples with no denominator are left out.
    """
    return percentile_interval(pooled_ratio_draws(numerators, denominators, counts))


def paired_difference(
    first: Sequence[float], second: Sequence[float], seed: int = 0, resamples: int = RESAMPLES
) -> dict[str, float | bool]:
    """Mean of ``first - second`` over the same items, with its 95% bootstrap interval (items resampled in pairs).

    Items where either value is NaN are left out; ``excludes_zero`` says whether the interval lies on one side of 0.
    """
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"need two equal-length series over the same items, got {first.shape} and {second.shape}")
    result = bootstrap_mean(first - second, seed=seed, resamples=resamples)
    return result | {"excludes_zero": bool(result["ci95_low"] > 0 or result["ci95_high"] < 0)}


def pooled_ratio_draws(numerators: Sequence[float], denominators: Sequence[float], counts: np.ndarray) -> np.ndarray:
    """``sum(numerators) / sum(denominators)`` in each resample of :func:`resample_counts`' table ``counts``.

    The draws themselves, so two statistics over the same resamples can be compared (a paired difference);
    a resample with no denominator gives NaN, which :func:`percentile_interval` leaves out.
    """
    numerators, denominators = np.asarray(numerators, np.float64), np.asarray(denominators, np.float64)
    if numerators.shape != denominators.shape or counts.shape[-1:] != numerators.shape:
        raise ValueError(f"{numerators.shape} numerators, {denominators.shape} denominators, counts {counts.shape}")
    totals = counts @ denominators
    return np.divide(counts @ numerators, totals, out=np.full(totals.shape, np.nan), where=totals > 0)


def difference_interval(difference: float, draws: np.ndarray) -> dict:
    """A paired difference, its 95% percentile interval over bootstrap ``draws`` and whether that excludes 0."""
    interval = percentile_interval(draws)
    excludes = interval is not None and (interval[0] > 0 or interval[1] < 0)
    return {"difference": float(difference), "ci95": interval, "excludes_zero": bool(excludes)}
