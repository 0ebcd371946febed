"""Sequence packing: whole sequences back to back in rows of ``T`` tokens, planned from a block's length profile.

Like the other shape policies (:mod:`data_pipeline.input.batch_plan`), the plan sees only the block's ascending,
host-combined length profile (tokens per sequence, ``<cls>``/``<eos>`` included, 0 for "no sequence"), so every
host packs the same ranks into the same rows of the same batches; each host then lays its own record of each rank
out back to back in that row (its lengths are at most the combined ones, so they fit).

Rows are filled by best-fit decreasing: from the longest sequence down, each goes into the row with the least room
that still holds it, or opens a new row. On the UniRef50 sample this fills rows of 1024 tokens to ~99.9%. The rows
are then dealt round-robin to ``ceil(rows / rows_per_batch)`` batches, so every batch mixes long and short
sequences and the few empty rows the block's last batch would hold are spread over all of its batches. Those empty
rows are what packing cannot avoid: a block whose tokens fill only a few batches loses up to one batch in
``batches per block``, so a block should hold many batches' worth of tokens. On the UniRef50 sample at 2**20 tokens
per batch, 91% of a process's tokens are real with blocks of 16,384 records (~4.6 batches) and 98.4% with the
pretraining configs' 131,072 (bucketed batches: 50.6%); 99.7% at 2**14 tokens per batch and 16,384-record blocks
(``benchmarks/data_pipeline_throughput.py``).
"""

from __future__ import annotations

import bisect
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PackedBatch:
    """``rows x length`` tokens; ``segments[r]`` lists the block ranks packed into row ``r``, left to right.

    Rows from ``len(segments)`` to ``rows`` are empty.
    """

    rows: int
    length: int
    segments: tuple[tuple[int, ...], ...]


def plan_packed(profile: np.ndarray, token_budget: int, row_length: int) -> list[PackedBatch]:
    """Batches of ``token_budget // row_length`` rows of ``row_length`` tokens holding every non-zero rank once."""
    profile = np.asarray(profile, dtype=np.int64)
    _refuse_overlong(profile, row_length)
    rows = _best_fit_decreasing(profile, row_length)
    per_batch = token_budget // row_length
    count = -(-len(rows) // per_batch)
    return [PackedBatch(per_batch, row_length, tuple(rows[batch::count])) for batch in range(count)]


def _refuse_overlong(profile: np.ndarray, row_length: int) -> None:
    too_long = np.flatnonzero(profile > row_length)
    if too_long.size:
        rank = int(too_long[0])
        raise ValueError(
            f"rank {rank} of the block's length profile is a sequence of {int(profile[rank])} tokens (<cls> and "
            f"<eos> included), longer than the packed row length T = {row_length} (the last bucket): raise the last "
            f"bucket to at least {int(profile.max())} tokens or lower max_residues to at most {row_length - 2}"
        )


def _best_fit_decreasing(profile: np.ndarray, capacity: int) -> list[tuple[int, ...]]:
    """Ranks per row, longest first (equal lengths by descending rank); equal room goes to the older row."""
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, row), ascending
    for rank in np.flatnonzero(profile)[::-1]:
        need = int(profile[rank])
        slot = bisect.bisect_left(room, (need, -1))
        if slot == len(room):
            row, free = len(rows), capacity
            rows.append([])
        else:
            free, row = room.pop(slot)
        rows[row].append(int(rank))
        if free > need:
            bisect.insort(room, (free - need, row))
    return [tuple(row) for row in rows]


def packed_positions(
    rows: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, width: int, row_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Where unpacked sequences go: the ``(n, width)`` mask of their tokens and those tokens' flat packed positions.

    Sequence ``i`` (``sizes[i]`` tokens) starts at column ``offsets[i]`` of row ``rows[i]`` of the packed array.
    """
    columns = np.arange(width)
    inside = columns[None, :] < sizes[:, None]
    destination = (rows * row_length + offsets)[:, None] + columns[None, :]
    return inside, destination[inside]
