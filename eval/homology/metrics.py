"""Hit-10 and ROC AUC of remote-homology searches, per query, at fold or superfamily level.

For a query, the database is ranked by score after removing the pairs :mod:`eval.homology.scop_pairs` ignores (the
query itself always among them). **Hit-10**: a positive is among the 10 best-ranked entries. **AUC**: the ROC
AUC of the query's scores over its positives vs its negatives (ties count one half). Both are averaged over
the queries that have at least one positive at that level. **Pooled AUC**: one ROC AUC over every query's positive
and negative pairs together (same pair rules), so queries with many pairs weigh more and scores must be comparable
across queries; kept as per-query histograms (:class:`PooledCounts`) so that queries can be resampled. Every
summary carries a 95% bootstrap interval over queries. Embedding searches run blocked on device
(:mod:`eval.homology.nearest_neighbors`); dense score matrices (the HMM baseline) are scored on the host with the
reference definitions of :mod:`eval.common.ranking`, ties in rank broken towards the lower database index in both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import numpy as np

from eval.common import ranking, statistics
from eval.homology import nearest_neighbors, scop_pairs
from eval.homology.scop_pairs import ScopLabels

POOLED_EDGES = 512
ScoreBlocks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]]


@dataclasses.dataclass(frozen=True)
class PooledCounts:
    """Each query's positives and negatives counted in shared score cells, for one AUC over all pairs pooled.

    The cells are, in order, the open interval below each edge and the edge itself (edges: every distinct positive
    score, or ``POOLED_EDGES`` quantiles of them when there are more), then everything above the last edge. A
    positive beats the negatives of lower cells and half of those in its own cell, so the AUC is exact when every
    positive lies on an edge and otherwise within the error bound that :meth:`auc` returns beside it.
    """

    positives: np.ndarray
    negatives: np.ndarray

    def auc(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pooled AUC and its binning error bound for each row of ``weights`` (rows x queries: how often drawn)."""
        pos, neg = weights @ self.positives, weights @ self.negatives
        below = np.cumsum(neg, axis=1) - 0.5 * neg
        pairs = pos.sum(axis=1) * neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = np.sum(pos * below, axis=1) / pairs
            error = 0.5 * np.sum((pos * neg)[:, 0::2], axis=1) / pairs
        return auc, error


def pooled_counts(blocks: ScoreBlocks, edges: int = POOLED_EDGES) -> PooledCounts:
    """:class:`PooledCounts` from ``blocks()``, which yields ``(scores, positive, ignored)`` for successive queries.

    ``blocks`` is called twice: once for the positive scores that place the cell edges, once to count.
    """
    positive_scores = np.concatenate([np.ravel(s[p & ~i]) for s, p, i in blocks()] + [np.zeros(0)])
    cuts = _edges(positive_scores, edges)
    positives, negatives = [], []
    for scores, positive, ignored in blocks():
        cells = _cells(np.asarray(scores), cuts)
        positive = positive & ~ignored
        positives.append(_cell_counts(cells, positive, 2 * cuts.size + 1))
        negatives.append(_cell_counts(cells, ~positive & ~ignored, 2 * cuts.size + 1))
    if not positives:
        return PooledCounts(np.zeros((0, 2 * cuts.size + 1), np.int32), np.zeros((0, 2 * cuts.size + 1), np.int32))
    return PooledCounts(np.concatenate(positives), np.concatenate(negatives))


def _edges(positive_scores: np.ndarray, count: int) -> np.ndarray:
    distinct = np.unique(positive_scores)
    if distinct.size <= count:
        return distinct
    return np.unique(distinct[np.linspace(0, distinct.size - 1, count).round().astype(int)])


def _cells(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Cell of each score: 2j below edge j (and above edge j-1), 2j+1 on edge j."""
    index = np.searchsorted(edges, scores, side="left")
    on_edge = edges[np.minimum(index, edges.size - 1)] == scores if edges.size else np.zeros(scores.shape, bool)
    return 2 * index + (on_edge & (index < edges.size))


def _cell_counts(cells: np.ndarray, chosen: np.ndarray, width: int) -> np.ndarray:
    rows = np.broadcast_to(np.arange(cells.shape[0])[:, None], cells.shape)
    flat = (rows * width + cells)[chosen]
    return np.bincount(flat, minlength=cells.shape[0] * width).reshape(cells.shape[0], width).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class QueryScores:
    """Per-query results: database indices of the queries, Hit-k flags, AUCs and counts for the pooled AUC."""

    queries: np.ndarray
    hits: np.ndarray
    aucs: np.ndarray
    pooled: PooledCounts

    def summary(self, among: np.ndarray | None = None, seed: int = 0) -> dict[str, float | int | list[float]]:
        """Mean Hit-k, per-query AUC (``auc``) and pooled AUC, each with a 95% bootstrap interval over queries.

        Over all queries or only those whose database index is in ``among``.
        """
        chosen = np.ones(self.queries.size, bool) if among is None else np.isin(self.queries, among)
        if not chosen.any():
            return {"hit10": float("nan"), "auc": float("nan"), "auc_pooled": float("nan"), "queries": 0}
        result: dict[str, float | int | list[float]] = {}
        for name, values in (("hit10", self.hits[chosen]), ("auc", self.aucs[chosen])):
            if np.isfinite(values).any():
                interval = statistics.bootstrap_mean(values.astype(np.float64), seed=seed)
                result |= {name: interval["mean"], f"{name}_ci95": [interval["ci95_low"], interval["ci95_high"]]}
            else:
                result[name] = float("nan")
        result |= self._pooled_summary(chosen, seed)
        return result | {"queries": int(chosen.sum())}

    def _pooled_summary(self, chosen: np.ndarray, seed: int) -> dict[str, float | list[float]]:
        counts = PooledCounts(self.pooled.positives[chosen], self.pooled.negatives[chosen])
        (auc,), (error,) = counts.auc(np.ones((1, int(chosen.sum()))))
        draws, _ = counts.auc(statistics.resample_counts(int(chosen.sum()), seed=seed).astype(np.float64))
        draws = draws[np.isfinite(draws)]
        interval = [float(v) for v in np.percentile(draws, [2.5, 97.5])] if draws.size else [float("nan")] * 2
        return {"auc_pooled": float(auc), "auc_pooled_ci95": interval, "auc_pooled_max_error": float(error)}


def query_indices(level: str, labels: ScopLabels) -> np.ndarray:
    """Domains with at least one positive at ``level``: the queries of that level."""
    return np.flatnonzero(scop_pairs.positives_per_query(level, labels) > 0)


def _positive_flags(level: str, labels: ScopLabels, queries: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    query = tuple(a[queries][:, None] for a in labels.as_tuple())
    found = tuple(a[np.maximum(neighbours, 0)] for a in labels.as_tuple())
    positive, _ = scop_pairs.pair_categories(level, query, found)
    return positive & (neighbours >= 0)


def embedding_search(
    embeddings: np.ndarray,
    labels: ScopLabels,
    level: str,
    metric: nearest_neighbors.Metric,
    k: int = 10,
    show_progress: bool = False,
) -> QueryScores:
    """Hit-k and AUC of nearest-neighbour search over ``embeddings`` (one per domain, in label order)."""
    if len(embeddings) != len(labels):
        raise ValueError(f"{len(embeddings)} embeddings but {len(labels)} SCOP labels; give one label per domain")
    queries = query_indices(level, labels)
    search = {"metric": metric, "query_labels": labels.subset(queries).as_tuple(), "database_labels": labels.as_tuple()}
    _, neighbours = nearest_neighbors.top_k_neighbors(
        embeddings[queries], embeddings, k, ignore=scop_pairs.ignore_rule(level), show_progress=show_progress, **search
    )
    hits = ranking.hit_at_k(_positive_flags(level, labels, queries, neighbours), k)
    search["categories"] = scop_pairs.category_rule(level)
    aucs = nearest_neighbors.per_query_auc(embeddings[queries], embeddings, show_progress=show_progress, **search)
    pooled = pooled_counts(lambda: nearest_neighbors.score_blocks(embeddings[queries], embeddings, **search))
    return QueryScores(queries, hits, aucs, pooled)


def dense_search(scores: np.ndarray, searched: np.ndarray, labels: ScopLabels, level: str, k: int = 10) -> QueryScores:
    """Hit-k and AUC from a (queries, N) score matrix whose row i belongs to domain ``searched[i]``.

    Rows of domains without a positive at ``level`` are skipped.
    """
    scores = np.asarray(scores, dtype=np.float64)
    searched = np.asarray(searched)
    if scores.shape != (searched.size, len(labels)):
        raise ValueError(f"score matrix {scores.shape} does not match {searched.size} queries x {len(labels)} domains")
    has_positive = scop_pairs.positives_per_query(level, labels)[searched] > 0
    queries, rows = searched[has_positive], scores[has_positive]
    query = tuple(a[queries][:, None] for a in labels.as_tuple())
    positive, ignored = scop_pairs.pair_categories(level, query, tuple(a[None, :] for a in labels.as_tuple()))
    hits = np.zeros(queries.size, bool)
    aucs = np.full(queries.size, np.nan)
    for i in range(queries.size):
        keep = ~ignored[i]
        kept_scores, kept_positive = rows[i][keep], positive[i][keep]
        order = np.lexsort((np.flatnonzero(keep), -kept_scores))
        ranked = kept_positive[order][:k] & np.isfinite(kept_scores[order][:k])
        hits[i] = ranked.any()
        if 0 < kept_positive.sum() < kept_positive.size:
            aucs[i] = ranking.roc_auc(kept_scores, kept_positive)
    return QueryScores(queries, hits, aucs, pooled_counts(lambda: [(rows, positive, ignored)]))
