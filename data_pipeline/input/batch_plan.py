"""Token-budget batching with length bucketing, planned from a block's sorted sequence lengths.

The planner sees only a sorted length profile (tokens per sequence, BOS/EOS included, ascending, 0 for "no
sequence"), never the sequences, so every host can plan the same batches from a profile combined across hosts
(:mod:`data_pipeline.input.host_agreement`): batch ``i`` covers the same ranks and has the same shape everywhere.

Three shape policies:

* ``fixed``: a batch of bucket ``b`` is ``(token_budget // b, b)``; the few last batches of a bucket are completed
  with empty rows. At most one compiled train step per bucket.
* ``tight``: as many sequences as fit the budget, padded to the longest of them rounded up to a multiple of 8.
  Less padding, many more shapes.
* ``packed``: every batch is ``(token_budget // T, T)`` with ``T`` the last bucket, each row holding several whole
  sequences back to back (:mod:`data_pipeline.input.packing`). Almost no padding and a single compiled train step, but
  the model must keep the sequences of a row apart (the batch's ``segment_ids``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipeline.input.packing import PackedBatch, plan_packed

FIXED = "fixed"
TIGHT = "tight"
PACKED = "packed"
SHAPES = (FIXED, TIGHT, PACKED)
DEFAULT_BUCKETS = (64, 128, 256, 512, 1024)
_TIGHT_MULTIPLE = 8


@dataclasses.dataclass(frozen=True)
class PlannedBatch:
    """Ranks ``[start, stop)`` of the sorted block, laid out as ``rows x length`` tokens (``rows >= stop - start``)."""

    start: int
    stop: int
    rows: int
    length: int


def bucket_of(lengths: np.ndarray, boundaries: tuple[int, ...]) -> np.ndarray:
    """Index of the smallest boundary that holds each length."""
    index = np.searchsorted(np.asarray(boundaries), lengths, side="left")
    if np.any(index >= len(boundaries)):
        raise ValueError(f"a sequence of {int(np.max(lengths))} tokens exceeds the largest bucket {boundaries[-1]}")
    return index


def plan_batches(
    profile: np.ndarray, token_budget: int, boundaries: tuple[int, ...], shapes: str
) -> list[PlannedBatch] | list[PackedBatch]:
    """Batches covering every non-zero rank of the ascending ``profile`` once (in rank order unless packed)."""
    if shapes not in SHAPES:
        raise ValueError(f"shapes must be one of {SHAPES}, got {shapes!r}")
    if token_budget < boundaries[-1]:
        raise ValueError(f"token budget {token_budget} is smaller than the largest bucket {boundaries[-1]}")
    profile = np.asarray(profile, dtype=np.int64)
    if shapes == PACKED:
        return plan_packed(profile, token_budget, boundaries[-1])
    first = int(np.searchsorted(profile, 1, side="left"))
    if shapes == FIXED:
        return _plan_fixed(profile, first, token_budget, boundaries)
    return _plan_tight(profile, first, token_budget)


def _plan_fixed(profile: np.ndarray, first: int, budget: int, boundaries: tuple[int, ...]) -> list[PlannedBatch]:
    buckets = bucket_of(profile[first:], boundaries)
    plan: list[PlannedBatch] = []
    for bucket, boundary in enumerate(boundaries):
        ranks = np.flatnonzero(buckets == bucket) + first
        if ranks.size == 0:
            continue
        rows = budget // boundary
        for start in range(int(ranks[0]), int(ranks[-1]) + 1, rows):
            plan.append(PlannedBatch(start, min(start + rows, int(ranks[-1]) + 1), rows, boundary))
    return plan


def _plan_tight(profile: np.ndarray, first: int, budget: int) -> list[PlannedBatch]:
    plan: list[PlannedBatch] = []
    start = first
    while start < profile.size:
        stop = start + 1
        while stop < profile.size and (stop + 1 - start) * _round_up(int(profile[stop])) <= budget:
            stop += 1
        plan.append(PlannedBatch(start, stop, stop - start, _round_up(int(profile[stop - 1]))))
        start = stop
    return plan


def _round_up(length: int) -> int:
    return -(-length // _TIGHT_MULTIPLE) * _TIGHT_MULTIPLE
