"""Remote-homology metrics: AUC, Hit-10, SCOP pair rules and the blocked nearest-neighbour search vs brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from eval.common import ranking
from eval.homology import metrics as homology_metrics
from eval.homology import nearest_neighbors, scop_pairs


def pairwise_auc(scores, positive):
    """Direct definition: over all (positive, negative) pairs, 1 if the positive scores higher, 1/2 on ties."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg) / (len(pos) * len(neg))


def test_roc_auc_on_hand_made_rankings():
    assert ranking.roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert ranking.roc_auc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert ranking.roc_auc([0.5, 0.5, 0.5], [1, 0, 0]) == 0.5
    # positives 3 and 1 against negatives 2 and 0: 3 beats both, 1 beats one -> 3/4
    assert ranking.roc_auc([3, 2, 1, 0], [1, 0, 1, 0]) == 0.75


def tied_scores(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 6, size=80).astype(float), rng.random(80) < 0.3


def test_roc_auc_matches_pairwise_count_and_scipy_mann_whitney_on_tied_scores():
    from scipy.stats import mannwhitneyu

    scores, positive = tied_scores()
    auc = ranking.roc_auc(scores, positive)
    assert auc == pytest.approx(pairwise_auc(scores, positive), abs=1e-12)
    u = mannwhitneyu(scores[positive], scores[~positive]).statistic
    assert auc == pytest.approx(u / (positive.sum() * (~positive).sum()), abs=1e-12)


def test_roc_auc_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is not installed")
    scores, positive = tied_scores(1)
    assert ranking.roc_auc(scores, positive) == pytest.approx(metrics.roc_auc_score(positive, scores), abs=1e-12)


def test_roc_auc_rejects_undefined_and_mismatched_inputs():
    with pytest.raises(ValueError, match="positives and negatives"):
        ranking.roc_auc([1.0, 2.0], [1, 1])
    with pytest.raises(ValueError, match="one label per score"):
        ranking.roc_auc([1.0, 2.0, 3.0], [1, 0])
    with pytest.raises(ValueError, match="NaN"):
        ranking.roc_auc([np.nan, 1.0], [1, 0])


def test_hit_at_k_on_a_toy_ranking():
    ranked = np.array(
        [
            [0, 0, 1, 0],  # positive at rank 3
            [0, 0, 0, 1],  # positive at rank 4
            [1, 0, 0, 0],
            [0, 0, 0, 0],
        ],
        bool,
    )
    np.testing.assert_array_equal(ranking.hit_at_k(ranked, 3), [True, False, True, False])
    np.testing.assert_array_equal(ranking.hit_at_k(ranked, 10), [True, True, True, False])
    with pytest.raises(ValueError, match="at least 1"):
        ranking.hit_at_k(ranked, 0)


LABELS = ["a.1.1.1", "a.1.1.2", "a.1.2.1", "a.2.1.1", "b.1.1.1", "a.1.1.1"]


def test_scop_pair_rules_at_fold_and_superfamily_level():
    labels = scop_pairs.parse_sccs(LABELS)
    query = tuple(a[0:1, None] for a in labels.as_tuple())
    target = tuple(a[None, :] for a in labels.as_tuple())
    positive, ignored = scop_pairs.pair_categories("fold", query, target)
    # fold: same fold other superfamily (a.1.2.1) positive; same superfamily (0, 1, 5) ignored; others negative
    np.testing.assert_array_equal(positive[0], [0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(ignored[0], [1, 1, 0, 0, 0, 1])
    positive, ignored = scop_pairs.pair_categories("superfamily", query, target)
    # superfamily: same superfamily other family (a.1.1.2) positive; same family ignored; every other superfamily,
    # the same fold's a.1.2.1 included, negative ("any domain with a different superfamily is a negative")
    np.testing.assert_array_equal(positive[0], [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(ignored[0], [1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(scop_pairs.positives_per_query("fold", labels), [1, 1, 3, 0, 0, 1])
    np.testing.assert_array_equal(scop_pairs.positives_per_query("superfamily", labels), [1, 2, 0, 0, 0, 1])


@pytest.mark.parametrize("label", ["a.1.1", "z.1.1.1", "a.1.x.1", "", None])
def test_unknown_scop_labels_are_refused_naming_the_domain(label):
    with pytest.raises(ValueError, match="d1abc_: SCOP label"):
        scop_pairs.parse_sccs(["a.1.1.1", label], names=["d1xyz_", "d1abc_"])


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="level must be one of"):
        scop_pairs.category_rule("family")


def exact_vectors(rng, count, metric):
    """Vectors whose scores are exact in float32, so ties are real ties for both implementations.

    Cosine: unit vectors with four entries of +-0.5 among eight (dot products are multiples of 1/4);
    Euclidean: small integers.
    """
    if metric == "euclidean":
        return rng.integers(-2, 3, size=(count, 6)).astype(np.float32)
    vectors = np.zeros((count, 8), np.float32)
    for row in vectors:
        row[rng.choice(8, size=4, replace=False)] = rng.choice([-0.5, 0.5], size=4)
    return vectors


def brute_force_top_k(queries, database, k, metric, ignored=None):
    q = nearest_neighbors.prepare(queries, metric).astype(np.float64)
    d = nearest_neighbors.prepare(database, metric).astype(np.float64)
    scores = q @ d.T if metric == "cosine" else -((q[:, None, :] - d[None, :, :]) ** 2).sum(-1)
    if ignored is not None:
        scores = np.where(ignored, -np.inf, scores)
    order = np.stack([np.lexsort((np.arange(d.shape[0]), -row)) for row in scores])[:, :k]
    top = np.take_along_axis(scores, order, axis=1)
    return top, np.where(np.isfinite(top), order, -1)


@pytest.mark.parametrize("metric", nearest_neighbors.METRICS)
def test_blocked_top_k_equals_brute_force_with_ties_and_partial_blocks(metric):
    rng = np.random.default_rng(1)
    database = exact_vectors(rng, 103, metric)  # many exact ties; 103 = 4 x 25 + 3
    queries = np.concatenate([database[:5], exact_vectors(rng, 14, metric)])
    scores, indices = nearest_neighbors.top_k_neighbors(queries, database, 7, metric=metric, query_block=8, db_block=25)
    expected_scores, expected_indices = brute_force_top_k(queries, database, 7, metric)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6, atol=1e-5)


def test_blocked_top_k_with_ignored_pairs_and_too_few_candidates():
    rng = np.random.default_rng(2)
    database = rng.standard_normal((11, 4)).astype(np.float32)
    groups = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2], np.int32)
    same_group = lambda q, d: q[0] == d[0]  # noqa: E731
    scores, indices = nearest_neighbors.top_k_neighbors(
        database,
        database,
        9,
        query_labels=(groups,),
        database_labels=(groups,),
        ignore=same_group,
        query_block=4,
        db_block=3,
    )
    expected_scores, expected_indices = brute_force_top_k(database, database, 9, "cosine", groups[:, None] == groups)
    np.testing.assert_array_equal(indices, expected_indices)
    assert (indices[:3] >= 0).sum(axis=1).tolist() == [8, 8, 8]  # only 8 candidates outside group 0
    assert np.all(scores[:3, 8] == -np.inf)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6, atol=1e-6)


def test_top_k_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="dimension"):
        nearest_neighbors.top_k_neighbors(np.ones((2, 3)), np.ones((4, 5)), 1)
    with pytest.raises(ValueError, match="database labels"):
        nearest_neighbors.top_k_neighbors(
            np.ones((2, 3)), np.ones((4, 3)), 1, query_labels=(np.zeros(2),), database_labels=(np.zeros(3),)
        )
    with pytest.raises(ValueError, match="NaN"):
        nearest_neighbors.top_k_neighbors(np.full((1, 2), np.nan), np.ones((2, 2)), 1)


def reference_query_aucs(embeddings, labels, level, metric):
    """Per-query AUC computed densely in numpy with the reference roc_auc."""
    e = nearest_neighbors.prepare(embeddings, metric).astype(np.float64)
    scores = e @ e.T if metric == "cosine" else -((e[:, None] - e[None]) ** 2).sum(-1)
    query = tuple(a[:, None] for a in labels.as_tuple())
    target = tuple(a[None, :] for a in labels.as_tuple())
    positive, ignored = scop_pairs.pair_categories(level, query, target)
    out = []
    for i in range(len(labels)):
        keep = ~ignored[i]
        has_both = 0 < positive[i][keep].sum() < keep.sum()
        out.append(ranking.roc_auc(scores[i][keep], positive[i][keep]) if has_both else np.nan)
    return np.array(out)


def random_scop_labels(rng, count):
    sccs = [
        f"{rng.choice(['a', 'b'])}.{rng.integers(1, 3)}.{rng.integers(1, 3)}.{rng.integers(1, 3)}" for _ in range(count)
    ]
    return scop_pairs.parse_sccs(sccs)


@pytest.mark.parametrize(("level", "metric"), list(itertools.product(scop_pairs.LEVELS, nearest_neighbors.METRICS)))
def test_blocked_per_query_auc_equals_dense_reference(level, metric):
    rng = np.random.default_rng(3)
    labels = random_scop_labels(rng, 45)
    embeddings = exact_vectors(rng, 45, metric)  # ties on purpose
    aucs = nearest_neighbors.per_query_auc(
        embeddings,
        embeddings,
        metric=metric,
        query_labels=labels.as_tuple(),
        database_labels=labels.as_tuple(),
        categories=scop_pairs.category_rule(level),
        query_block=8,
    )
    np.testing.assert_allclose(aucs, reference_query_aucs(embeddings, labels, level, metric), atol=1e-6)


def test_embedding_search_and_dense_search_agree_on_the_same_scores():
    rng = np.random.default_rng(4)
    labels = random_scop_labels(rng, 40)
    embeddings = rng.standard_normal((40, 5)).astype(np.float32)
    unit = nearest_neighbors.prepare(embeddings, "cosine").astype(np.float64)
    for level in scop_pairs.LEVELS:
        blocked = homology_metrics.embedding_search(embeddings, labels, level, "cosine")
        queries = homology_metrics.query_indices(level, labels)
        dense = homology_metrics.dense_search(unit[queries] @ unit.T, queries, labels, level)
        np.testing.assert_array_equal(blocked.queries, dense.queries)
        np.testing.assert_array_equal(blocked.hits, dense.hits)
        np.testing.assert_allclose(blocked.aucs, dense.aucs, atol=1e-6)


def test_dense_search_hit_10_on_a_hand_made_score_matrix():
    labels = scop_pairs.parse_sccs(["a.1.1.1", "a.1.2.1"] + [f"b.{n}.1.1" for n in range(1, 13)])
    scores = np.full((1, 14), -np.inf)
    scores[0, 2:12] = np.arange(10, 0, -1)  # ten negatives reported above the positive
    scores[0, 1] = 0.5
    result = homology_metrics.dense_search(scores, np.array([0]), labels, "fold")
    assert result.hits.tolist() == [False]
    assert result.aucs[0] == pytest.approx(2 / 12)  # beats only the two unreported negatives (-inf)
    scores[0, 1] = 5.5
    result = homology_metrics.dense_search(scores, np.array([0]), labels, "fold")
    assert result.hits.tolist() == [True]


def test_mismatched_embeddings_and_labels_are_refused():
    labels = scop_pairs.parse_sccs(LABELS)
    with pytest.raises(ValueError, match="one label per domain"):
        homology_metrics.embedding_search(np.ones((5, 3)), labels, "fold", "cosine")
    with pytest.raises(ValueError, match="does not match"):
        homology_metrics.dense_search(np.ones((1, 5)), np.array([0]), labels, "fold")
