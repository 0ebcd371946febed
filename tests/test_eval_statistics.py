"""Bootstrap intervals and linear trends of reported numbers."""

from __future__ import annotations

import numpy as np
import pytest

from eval.common.statistics import bootstrap_mean, linear_trend


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
