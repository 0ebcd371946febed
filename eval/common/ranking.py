"""Ranking metrics on host arrays: ROC AUC with ties (Mann-Whitney) and Hit-k over ranked neighbour lists.

These are the reference definitions every evaluation uses; the blocked device versions in
:mod:`eval.homology.nearest_neighbors` are tested against them.
"""

from __future__ import annotations

import numpy as np

from esm_jax.inference.rank_correlation import average_ranks


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` separating ``positive`` from the rest.

    Equals P(score of a random positive > score of a random negative) + 0.5 P(tie): the
    Mann-Whitney statistic, which is exactly the trapezoidal area of the ROC curve.
    Raises when either class is empty (the AUC is undefined).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    if scores.shape != positive.shape:
        raise ValueError(f"{scores.size} scores but {positive.size} labels; give one label per score")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; an AUC needs every score to be comparable")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs positives and negatives, got {n_pos} positives and {n_neg} negatives")
    rank_sum = float(average_ranks(scores)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def hit_at_k(ranked_positive: np.ndarray, k: int = 10) -> np.ndarray:
    """Per query: does a positive occur among the first ``k`` entries of its ranked list?

    ``ranked_positive`` is (queries, ranked candidates) of booleans, best candidate first.
    """
    ranked_positive = np.asarray(ranked_positive, dtype=bool)
    if ranked_positive.ndim != 2:
        raise ValueError(f"expected (queries, candidates) flags, got shape {ranked_positive.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return ranked_positive[:, :k].any(axis=1)
