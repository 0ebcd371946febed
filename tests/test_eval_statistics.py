"""Bootstrap intervals and linear trends of reported numbers."""

from __future__ import annotations

import numpy as np
import pytest

from esm_jax.inference.rank_correlation import spearman
from eval.common.statistics import (
    bootstrap_mean,
    bootstrap_statistic,
    difference_interval,
    linear_trend,
    percentile_interval,
    pooled_ratio_draws,
    pooled_ratio_interval,
    resample_count_chunks,
    resample_counts,
    resample_indices,
)


def test_bootstrap_mean_interval_holds_the_mean_and_narrows_with_more_values():
    rng = np.random.default_rng(0)
    few, many = bootstrap_mean(rng.normal(1.0, 1.0, 20)), bootstrap_mean(rng.normal(1.0, 1.0, 2000))
    for summary in (few, many):
        assert summary["ci95_low"] < summary["mean"] < summary["ci95_high"]
    assert many["ci95_high"] - many["ci95_low"] < (few["ci95_high"] - few["ci95_low"]) / 5
    assert many["ci95_low"] > 0.9 and many["ci95_high"] < 1.1
    assert bootstrap_mean([1.0, np.nan, 3.0])["n"] == 2
    with pytest.raises(ValueError, match="no finite value"):
        bootstrap_mean([np.nan])


def test_linear_trend_recovers_slope_and_r_with_intervals():
    x = np.linspace(10, 20, 8)
    y = 0.9 - 0.02 * x + np.random.default_rng(1).normal(0, 0.005, x.size)
    trend = linear_trend(x, y)
    assert trend["points"] == 8 and trend["slope"] == pytest.approx(-0.02, abs=0.003) and trend["r"] < -0.9
    assert trend["slope_ci95"][0] < trend["slope"] < trend["slope_ci95"][1] < 0
    assert trend["r_ci95"][1] < 0
    two = linear_trend([1.0, 2.0], [3.0, 1.0])
    assert two["slope"] == -2.0 and two["r"] == pytest.approx(-1.0) and "slope_ci95" not in two
    with pytest.raises(ValueError, match="at least 2 points"):
        linear_trend([1.0], [2.0])


def test_bootstrap_statistic_pairs_statistics_over_the_same_resamples():
    draws = resample_indices(50, seed=3, resamples=400)
    assert draws.shape == (400, 50) and draws.min() >= 0 and draws.max() < 50
    # the same seed draws the same items as resample_counts counts
    assert (np.stack([np.bincount(row, minlength=50) for row in draws]) == resample_counts(50, 3, 400)).all()
    x = np.random.default_rng(0).normal(size=50)
    rho = bootstrap_statistic(lambda rows: spearman(x[rows], 2 * x[rows] + 1), draws)
    assert rho.shape == (400,) and np.allclose(rho, 1.0)
    low, high = percentile_interval(bootstrap_statistic(lambda rows: float(x[rows].mean()), draws))
    assert low < x.mean() < high


def test_percentile_interval_leaves_out_undefined_resamples():
    assert percentile_interval([np.nan, 1.0, 3.0, np.inf]) == [pytest.approx(1.05), pytest.approx(2.95)]
    assert percentile_interval([np.nan, np.nan]) is None


def test_pooled_ratio_interval_weights_items_by_their_size():
    # one large item at 0.9 and nine small ones at 0.1: the pooled ratio (0.5) is no mean of the items' ratios (0.18)
    numerators, denominators = np.array([90.0] + [1.0] * 9), np.array([100.0] + [10.0] * 9)
    counts = resample_counts(10, seed=0)
    low, high = pooled_ratio_interval(numerators, denominators, counts)
    assert low >= 0.1 and high <= 0.9 and low < numerators.sum() / denominators.sum() < high
    assert pooled_ratio_interval([1.0], [0.0], resample_counts(1)) is None
    with pytest.raises(ValueError, match="numerators"):
        pooled_ratio_interval(numerators, denominators[:3], counts)


def test_pooled_ratio_draws_pair_two_statistics_over_the_same_resamples():
    numerators, denominators = np.array([90.0] + [1.0] * 9), np.array([100.0] + [10.0] * 9)
    counts = resample_counts(10, seed=0)
    draws = pooled_ratio_draws(numerators, denominators, counts)
    assert draws.shape == (counts.shape[0],)
    assert percentile_interval(draws) == pooled_ratio_interval(numerators, denominators, counts)
    shifted = pooled_ratio_draws(numerators + 0.1 * denominators, denominators, counts)
    np.testing.assert_allclose(shifted - draws, 0.1)  # paired: the per-resample gap is exact, not bootstrap noise
    assert np.isnan(pooled_ratio_draws([1.0], [0.0], resample_counts(1))).all()
    with pytest.raises(ValueError, match="numerators"):
        pooled_ratio_draws(numerators, denominators[:3], counts)


def test_difference_interval_says_whether_zero_is_excluded():
    assert difference_interval(-0.5, np.linspace(-1.0, -0.1, 101)) == {
        "difference": -0.5,
        "ci95": [pytest.approx(-0.9775), pytest.approx(-0.1225)],
        "excludes_zero": True,
    }
    assert not difference_interval(0.1, np.linspace(-1.0, 1.0, 101))["excludes_zero"]
    assert difference_interval(0.0, np.array([np.nan])) == {"difference": 0.0, "ci95": None, "excludes_zero": False}


def test_resample_count_chunks_are_resample_counts_in_bounded_blocks():
    blocks = list(resample_count_chunks(50, seed=3, resamples=400, max_cells=50 * 30))
    assert max(len(block) for block in blocks) == 30 and len(blocks) == 14
    assert (np.concatenate(blocks) == resample_counts(50, seed=3, resamples=400)).all()
