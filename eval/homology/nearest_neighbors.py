"""Exact nearest-neighbour search and per-query ROC AUC over embeddings, blocked so N x N never exists.

:func:`top_k_neighbors` walks the database in blocks inside one jitted ``lax.scan`` per query block,
merging each block's scores into a running top-k, so memory is ``query_block x (db_block + k)`` whatever
the database size (10^5-10^6 embeddings are fine). :func:`per_query_auc` needs every score of a query, so it
holds ``query_block x N`` at a time, choosing the block so that stays under ~64 MB of scores.

Scores: ``cosine`` similarity (embeddings L2-normalised first) or ``euclidean`` (the negative squared
distance), higher = nearer. A ``pair_rule`` (a function of the query's and the candidate's labels, e.g.
:func:`eval.homology.scop_pairs.pair_categories`) marks pairs to ignore; ties are broken towards the lower database
index, as a stable sort of the brute-force scores would.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from eval.common.padding import pad_rows

Metric = Literal["cosine", "euclidean"]
METRICS = ("cosine", "euclidean")
Labels = tuple[np.ndarray, ...]
# (query labels, candidate labels) -> ignored mask, or -> (positive, ignored) for per_query_auc
PairRule = Callable[[tuple, tuple], object]
_SCORES_PER_AUC_BLOCK = 1 << 24


def prepare(embeddings: np.ndarray, metric: Metric) -> np.ndarray:
    """float32 (N, D) embeddings ready for ``metric`` (unit length for cosine; zero vectors stay zero)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    values = np.asarray(embeddings, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("embeddings contain NaN or infinity")
    if metric == "cosine":
        norms = np.linalg.norm(values, axis=1, keepdims=True)
        values = values / np.where(norms > 0, norms, 1.0)
    return values


def _scores(queries: jax.Array, block: jax.Array, metric: str) -> jax.Array:
    dots = jnp.matmul(queries, block.T, precision=jax.lax.Precision.HIGHEST)
    if metric == "cosine":
        return dots
    q_sq = jnp.sum(queries * queries, axis=1)[:, None]
    d_sq = jnp.sum(block * block, axis=1)[None, :]
    return 2.0 * dots - q_sq - d_sq


def _check_labels(labels: Labels | None, count: int, what: str) -> Labels:
    if labels is None:
        return (np.zeros(count, dtype=np.int32),)
    labels = tuple(np.asarray(array, dtype=np.int32) for array in labels)
    for array in labels:
        if array.shape != (count,):
            raise ValueError(f"{what} labels have shape {array.shape} but there are {count} {what} embeddings")
    return labels


def _search_block(q, q_labels, blocks, block_labels, n_valid, *, k: int, metric: str, rule: PairRule | None):
    """Top-k (scores, indices) of one query block over every database block."""
    rows = q.shape[0]
    width = blocks.shape[1]

    def merge(carry, inputs):
        best_scores, best_index = carry
        block, labels, start = inputs
        index = start + jnp.arange(width)
        scores = _scores(q, block, metric)
        invalid = (index >= n_valid)[None, :]
        if rule is not None:
            invalid = invalid | rule(tuple(a[:, None] for a in q_labels), tuple(a[None, :] for a in labels))
        scores = jnp.where(invalid, -jnp.inf, scores)
        scores = jnp.concatenate([best_scores, scores], axis=1)
        indices = jnp.concatenate([best_index, jnp.broadcast_to(index, (rows, width))], axis=1)
        top, where = jax.lax.top_k(scores, k)
        return (top, jnp.take_along_axis(indices, where, axis=1)), None

    starts = jnp.arange(blocks.shape[0]) * width
    init = (jnp.full((rows, k), -jnp.inf, jnp.float32), jnp.full((rows, k), -1, jnp.int32))
    (scores, indices), _ = jax.lax.scan(merge, init, (blocks, block_labels, starts))
    return scores, jnp.where(jnp.isfinite(scores), indices, -1)


def top_k_neighbors(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    metric: Metric = "cosine",
    query_labels: Labels | None = None,
    database_labels: Labels | None = None,
    ignore: PairRule | None = None,
    query_block: int = 256,
    db_block: int = 8192,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best database entries of every query: ``(scores (Q, k), indices (Q, k))``, best first.

    ``ignore(query_labels, candidate_labels) -> mask`` removes pairs before ranking (labels are tuples of
    int arrays, one entry per embedding). Where fewer than ``k`` candidates remain, indices are -1 and
    scores -inf.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    q = prepare(queries, metric)
    d = prepare(database, metric)
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but the database has {d.shape[1]}")
    q_labels = _check_labels(query_labels, q.shape[0], "query")
    d_labels = _check_labels(database_labels, d.shape[0], "database")
    if len(q_labels) != len(d_labels):
        raise ValueError("queries and database need the same kinds of labels")
    n = d.shape[0]
    width = max(1, min(db_block, n))
    n_blocks = -(-n // width)
    blocks = jnp.asarray(pad_rows(d, n_blocks * width, 0.0).reshape(n_blocks, width, -1))
    block_labels = tuple(jnp.asarray(pad_rows(a, n_blocks * width, -1).reshape(n_blocks, width)) for a in d_labels)
    search = jax.jit(functools.partial(_search_block, k=k, metric=metric, rule=ignore))
    rows = max(1, min(query_block, q.shape[0]))
    scores = np.empty((q.shape[0], k), np.float32)
    indices = np.empty((q.shape[0], k), np.int64)
    with tqdm(total=q.shape[0], unit="query", desc=f"top-{k} {metric}", disable=not show_progress) as bar:
        for start in range(0, q.shape[0], rows):
            stop = min(start + rows, q.shape[0])
            block_q = pad_rows(q[start:stop], rows, 0.0)
            block_l = tuple(pad_rows(a[start:stop], rows, -1) for a in q_labels)
            top, where = jax.device_get(search(block_q, block_l, blocks, block_labels, n))
            scores[start:stop], indices[start:stop] = top[: stop - start], where[: stop - start]
            bar.update(stop - start)
    return scores, indices


def _query_auc(scores: np.ndarray, positive: np.ndarray, ignored: np.ndarray) -> float:
    """Mann-Whitney AUC of one query's positives against its negatives (ignored pairs left out); NaN if undefined.

    Only the negatives are sorted: each positive's count of negatives below it (ties one half) is two binary searches.
    """
    negatives = np.sort(scores[~positive & ~ignored])
    positives = scores[positive & ~ignored]
    if positives.size == 0 or negatives.size == 0:
        return float("nan")
    twice_below = (
        np.searchsorted(negatives, positives, "left").sum() + np.searchsorted(negatives, positives, "right").sum()
    )
    return float(twice_below) / (2.0 * positives.size * negatives.size)


def per_query_auc(
    queries: np.ndarray,
    database: np.ndarray,
    *,
    metric: Metric,
    query_labels: Labels,
    database_labels: Labels,
    categories: PairRule,
    query_block: int = 256,
    show_progress: bool = False,
) -> np.ndarray:
    """ROC AUC (ties count one half) of each query's scores over its positives vs negatives.

    ``categories(query_labels, candidate_labels) -> (positive, ignored)``. NaN where a query has no
    positive or no negative. Scores are computed on the device; the ranking runs on the host, where NumPy's
    sort is an order of magnitude faster than XLA:CPU's.
    """
    search = {"metric": metric, "query_labels": query_labels, "database_labels": database_labels}
    aucs = np.empty(len(queries), np.float64)
    done = 0
    with tqdm(total=len(queries), unit="query", desc=f"AUC {metric}", disable=not show_progress) as bar:
        for scores, positive, ignored in score_blocks(
            queries, database, categories=categories, query_block=query_block, **search
        ):
            for row in range(len(scores)):
                aucs[done + row] = _query_auc(scores[row], positive[row], ignored[row])
            done += len(scores)
            bar.update(len(scores))
    return aucs


def _query_blocks(queries, database, metric: Metric, query_labels: Labels, database_labels: Labels, query_block: int):
    """``(start, stop, (padded query block, its labels, database, database labels))`` over the queries.

    Blocks have one padded size (one compilation) and hold under ~64 MB of scores against the whole database.
    """
    q = prepare(queries, metric)
    d = prepare(database, metric)
    q_labels = _check_labels(query_labels, q.shape[0], "query")
    d_labels = tuple(jnp.asarray(a) for a in _check_labels(database_labels, d.shape[0], "database"))
    rows = max(1, min(query_block, _SCORES_PER_AUC_BLOCK // max(d.shape[0], 1), q.shape[0]))
    d_device = jnp.asarray(d)
    for start in range(0, q.shape[0], rows):
        stop = min(start + rows, q.shape[0])
        block_labels = tuple(pad_rows(a[start:stop], rows, -1) for a in q_labels)
        yield start, stop, (pad_rows(q[start:stop], rows, 0.0), block_labels, d_device, d_labels)


def _categorised_scores(q, q_labels, d, d_labels, *, metric: str, rule: PairRule):
    positive, ignored = rule(tuple(a[:, None] for a in q_labels), tuple(a[None, :] for a in d_labels))
    return _scores(q, d, metric), positive & ~ignored, ignored


def score_blocks(
    queries: np.ndarray,
    database: np.ndarray,
    *,
    metric: Metric,
    query_labels: Labels,
    database_labels: Labels,
    categories: PairRule,
    query_block: int = 256,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(scores, positive, ignored)`` of successive blocks of queries against the whole database, on the host.

    The same scores and pair categories as :func:`per_query_auc`, for statistics that pool every query's pairs;
    each block holds under ~64 MB of scores.
    """
    compute = jax.jit(functools.partial(_categorised_scores, metric=metric, rule=categories))
    for start, stop, arguments in _query_blocks(queries, database, metric, query_labels, database_labels, query_block):
        scores, positive, ignored = jax.device_get(compute(*arguments))
        yield scores[: stop - start], positive[: stop - start], ignored[: stop - start]
