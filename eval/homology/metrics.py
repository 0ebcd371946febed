"""Hit-10 and ROC AUC of remote-homology searches, per query, at fold or superfamily level.

For a query, the database is ranked by score after removing the pairs :mod:`eval.homology.scop_pairs` ignores (the
query itself always among them). **Hit-10**: a positive is among the 10 best-ranked entries. **AUC**: the ROC
AUC of the query's scores over its positives vs its negatives (ties count one half). Both are averaged over
the queries that have at least one positive at that level. Embedding searches run blocked on device
(:mod:`eval.homology.nearest_neighbors`); dense score matrices (the HMM baseline) are scored on the host with the
reference definitions of :mod:`eval.common.ranking`, ties in rank broken towards the lower database index in both.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from eval.common import ranking
from eval.homology import nearest_neighbors, scop_pairs
from eval.homology.scop_pairs import ScopLabels


@dataclasses.dataclass(frozen=True)
class QueryScores:
    """Per-query results: database indices of the queries, Hit-k flags and AUCs."""

    queries: np.ndarray
    hits: np.ndarray
    aucs: np.ndarray

    def summary(self, among: np.ndarray | None = None) -> dict[str, float | int]:
        """Mean Hit-k and AUC, over all queries or only those whose database index is in ``among``."""
        chosen = np.ones(self.queries.size, bool) if among is None else np.isin(self.queries, among)
        if not chosen.any():
            return {"hit10": float("nan"), "auc": float("nan"), "queries": 0}
        return {
            "hit10": float(self.hits[chosen].mean()),
            "auc": float(np.nanmean(self.aucs[chosen])),
            "queries": int(chosen.sum()),
        }


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
    search = {
        "metric": metric,
        "query_labels": labels.subset(queries).as_tuple(),
        "database_labels": labels.as_tuple(),
        "show_progress": show_progress,
    }
    _, neighbours = nearest_neighbors.top_k_neighbors(
        embeddings[queries], embeddings, k, ignore=scop_pairs.ignore_rule(level), **search
    )
    hits = ranking.hit_at_k(_positive_flags(level, labels, queries, neighbours), k)
    aucs = nearest_neighbors.per_query_auc(
        embeddings[queries], embeddings, categories=scop_pairs.category_rule(level), **search
    )
    return QueryScores(queries, hits, aucs)


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
    return QueryScores(queries, hits, aucs)
