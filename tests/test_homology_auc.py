"""Remote-homology AUC pooled over all pairs vs averaged per query, bootstrap intervals and paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from eval.common import ranking, statistics
from eval.homology import metrics as homology_metrics
from eval.homology import scop_pairs


def hand_made_counts() -> homology_metrics.PooledCounts:
    """Query 0: one positive (0.9) above its negatives; query 1: three positives (0.3) below its negatives."""
    scores = np.array([[0.9, 0.5, 0.2, 7.0, 7.0], [0.3, 0.3, 0.3, 0.4, 0.6]])
    positive = np.array([[1, 0, 0, 0, 0], [1, 1, 1, 0, 0]], bool)
    ignored = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], bool)
    return homology_metrics.pooled_counts(lambda: [(scores, positive, ignored)])


def test_pooled_auc_on_a_hand_made_score_matrix_differs_from_the_per_query_mean():
    auc, error = hand_made_counts().auc(np.ones((1, 2)))
    # per query: 1.0 and 0.0, mean 0.5; pooled: 0.9 beats all 4 negatives, each 0.3 beats only 0.2: 7 of 16 pairs
    assert auc[0] == pytest.approx(7 / 16)
    assert error[0] == 0.0
    assert hand_made_counts().auc(np.array([[2.0, 0.0]]))[0][0] == 1.0  # only query 0, drawn twice


def test_pooled_auc_of_dense_search_equals_one_roc_auc_over_all_kept_pairs_with_ties():
    rng = np.random.default_rng(0)
    sccs = [f"a.{rng.integers(1, 4)}.{rng.integers(1, 3)}.{rng.integers(1, 3)}" for _ in range(30)]
    labels = scop_pairs.parse_sccs(sccs)
    scores = rng.integers(0, 6, (30, 30)).astype(np.float64)  # many ties
    for level in scop_pairs.LEVELS:
        result = homology_metrics.dense_search(scores, np.arange(30), labels, level)
        query = tuple(a[result.queries][:, None] for a in labels.as_tuple())
        positive, ignored = scop_pairs.pair_categories(level, query, tuple(a[None, :] for a in labels.as_tuple()))
        kept = scores[result.queries][~ignored]
        expected = ranking.roc_auc(kept, positive[~ignored])
        summary = result.summary()
        assert summary["auc_pooled"] == pytest.approx(expected, abs=1e-12)
        assert summary["auc_pooled_max_error"] == 0.0
        assert summary["auc"] == pytest.approx(np.nanmean(result.aucs))


def test_quantile_cells_stay_within_their_error_bound():
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((8, 200))
    positive = rng.random((8, 200)) < 0.3
    ignored = np.zeros_like(positive)
    counts = homology_metrics.pooled_counts(lambda: [(scores, positive, ignored)], edges=6)
    (auc,), (error,) = counts.auc(np.ones((1, 8)))
    assert 0.0 < error < 0.1
    assert abs(auc - ranking.roc_auc(scores, positive)) <= error


def random_query_scores(rng, queries: int) -> homology_metrics.QueryScores:
    scores = rng.standard_normal((queries, 40))
    positive = rng.random((queries, 40)) < 0.2
    positive[:, 0] = True
    scores[positive] += 1.0
    ignored = np.zeros_like(positive)
    aucs = np.array([ranking.roc_auc(s, p) for s, p in zip(scores, positive, strict=True)])
    hits = rng.random(queries) < 0.6
    pooled = homology_metrics.pooled_counts(lambda: [(scores, positive, ignored)])
    return homology_metrics.QueryScores(np.arange(queries), hits, aucs, pooled)


def test_intervals_contain_the_estimate_and_shrink_with_more_queries():
    rng = np.random.default_rng(2)
    few, many = random_query_scores(rng, 15).summary(), random_query_scores(rng, 400).summary()
    for key in ("hit10", "auc", "auc_pooled"):
        for summary in (few, many):
            low, high = summary[f"{key}_ci95"]
            assert low <= summary[key] <= high
        assert np.diff(many[f"{key}_ci95"])[0] < np.diff(few[f"{key}_ci95"])[0]


def test_summary_of_a_subset_of_queries_and_of_none():
    result = random_query_scores(np.random.default_rng(3), 30)
    assert result.summary(np.arange(10))["queries"] == 10
    empty = result.summary(np.array([99]))
    assert empty["queries"] == 0 and np.isnan(empty["auc_pooled"])


def test_resample_counts_draw_each_resample_in_full():
    counts = statistics.resample_counts(7, seed=0, resamples=50)
    assert counts.shape == (50, 7)
    assert (counts.sum(axis=1) == 7).all()
    np.testing.assert_array_equal(counts, statistics.resample_counts(7, seed=0, resamples=50))


def test_paired_difference_over_the_same_items():
    rng = np.random.default_rng(4)
    base = rng.random(200)
    shifted = statistics.paired_difference(base + 0.1, base)
    assert shifted["mean"] == pytest.approx(0.1)
    assert shifted["ci95_low"] == pytest.approx(0.1) and shifted["excludes_zero"]
    noisy = statistics.paired_difference(base, rng.permutation(base))
    assert noisy["ci95_low"] <= noisy["mean"] <= noisy["ci95_high"]
    assert not noisy["excludes_zero"]
    assert statistics.paired_difference([1.0, np.nan, 3.0], [0.0, 1.0, np.nan])["n"] == 1
    with pytest.raises(ValueError, match="equal-length"):
        statistics.paired_difference([1.0, 2.0], [1.0])
