"""Spearman's ρ as scipy.stats.spearmanr computes it: average ranks for ties, NaN for undefined cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from esm_jax.inference.rank_correlation import average_ranks, finite_spearman, spearman

stats = pytest.importorskip("scipy.stats")


def test_hand_made_cases():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)  # 1 - 6·2 / (3·8)
    # ties: ranks of x are (1, 2.5, 2.5, 4); of y (1, 2, 3, 4): ρ = Pearson of the ranks = 0.9486833
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / math.sqrt(10))
    np.testing.assert_array_equal(average_ranks([3.0, 1.0, 3.0, 2.0, 3.0]), [4, 1, 4, 2, 4])


def test_undefined_cases_give_nan_like_scipy():
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1, 2, np.nan], [1, 2, 3]))
    assert math.isnan(spearman([1], [2]))
    with pytest.raises(ValueError, match="two 1-D arrays of one length"):
        spearman([1, 2], [1, 2, 3])


@pytest.mark.parametrize("seed", range(8))
def test_random_samples_with_ties_match_scipy(seed):
    generator = np.random.default_rng(seed)
    size = int(generator.integers(3, 400))
    x = generator.integers(0, 12, size).astype(float)  # many ties
    y = x * generator.normal(0, 1) + generator.normal(0, 3, size)
    y[: size // 5] = np.round(y[: size // 5])
    expected = stats.spearmanr(x, y).statistic
    assert spearman(x, y) == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(average_ranks(y), stats.rankdata(y, method="average"))


def test_finite_spearman_skips_missing_pairs():
    rho, count = finite_spearman([1, 2, 3, np.nan, 5], [2, 4, np.inf, 8, 10])
    assert count == 3 and rho == pytest.approx(1.0)
