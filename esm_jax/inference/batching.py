"""Group sequences into batches of a few fixed shapes, so each shape compiles once.

Bucketed (:func:`plan_batches`): sequences are sorted by length and padded up to the next width of
a geometric ladder (64, 80, 96, 128, 160, 192, 256, ...: three widths per doubling, so at most 25%
padding); a bucket of width ``T`` holds up to ``max(1, toks_per_batch // T)`` rows, and a batch's
row count is padded to a power of two (or that maximum) with empty ``<cls><eos>`` sequences, so a
bucket compiles for a handful of shapes at most.

Packed (:func:`plan_packed_batches`): several ``<cls> … <eos>`` sequences share a row of one fixed
width, told apart by segment ids (:mod:`esm_jax.model.packing`), so short sequences fill the room
that bucketing spends on padding. Rows are budgeted and padded to a power of two as above.

Neither padding nor packing changes a sequence's outputs.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar, NamedTuple

import numpy as np

from esm_jax.alphabet import Alphabet

# Widest default packed row. A packed row attends over its whole width (segments are masked, not
# skipped), so attention per token grows with the row width, not with the sequence's own length.
PACKED_ROW_WIDTH = 1024


class Placement(NamedTuple):
    """Sequence ``index`` sits in row ``row`` of its batch with its ``<cls>`` at column ``start``."""

    index: int
    row: int
    start: int


@dataclasses.dataclass(frozen=True)
class Batch:
    """Rows ``0..len(indices)-1`` of ``tokens`` hold the sequences ``indices``; the rest is padding."""

    indices: tuple[int, ...]
    tokens: np.ndarray

    segment_ids: ClassVar[None] = None  # one sequence per row, no segments

    @property
    def placements(self) -> tuple[Placement, ...]:
        return tuple(Placement(index, row, 0) for row, index in enumerate(self.indices))

    @property
    def real_tokens(self) -> int:
        return int(np.sum(self.tokens[: len(self.indices)] != Alphabet().padding_idx))


@dataclasses.dataclass(frozen=True)
class PackedBatch:
    """Rows of several sequences: ``segment_ids`` is k on a row's k-th sequence, 0 on padding.

    Rows past the last one named in ``placements`` are padding (one empty ``<cls><eos>`` each).
    """

    placements: tuple[Placement, ...]
    tokens: np.ndarray
    segment_ids: np.ndarray

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(placement.index for placement in self.placements)

    @property
    def real_tokens(self) -> int:
        rows = 1 + max(placement.row for placement in self.placements)
        return int(np.count_nonzero(self.segment_ids[:rows]))


def bucket_width(tokens: int, smallest: int = 64) -> int:
    """The smallest ladder width (``smallest · 2^k · {1, 1.25, 1.5}``) holding ``tokens``."""
    octave = smallest
    while True:
        for factor in (1.0, 1.25, 1.5):
            if int(octave * factor) >= tokens:
                return int(octave * factor)
        octave *= 2


def plan_batches(
    encoded: Sequence[Sequence[int]], toks_per_batch: int, max_width: int | None = None
) -> Iterator[Batch]:
    """Batches covering every sequence of ``encoded`` (token ids without BOS/EOS) exactly once.

    ``max_width`` caps the padded width (a model's maximum number of tokens).
    """
    alphabet = Alphabet()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    buckets: dict[int, list[int]] = {}
    for index in order:
        needed = len(encoded[index]) + 2
        width = bucket_width(needed)
        if max_width is not None:
            width = max(min(width, max_width), needed)
        buckets.setdefault(width, []).append(index)
    for width, members in buckets.items():
        most = max(1, toks_per_batch // width)
        for start in range(0, len(members), most):
            chosen = members[start : start + most]
            rows = min(most, 1 << (len(chosen) - 1).bit_length())
            tokens = np.full((rows, width), alphabet.padding_idx, dtype=np.int32)
            tokens[:, 0] = alphabet.cls_idx
            tokens[len(chosen) :, 1] = alphabet.eos_idx
            for row, index in enumerate(chosen):
                ids = encoded[index]
                tokens[row, 1 : len(ids) + 1] = ids
                tokens[row, len(ids) + 1] = alphabet.eos_idx
            yield Batch(tuple(chosen), tokens)


def default_row_width(encoded: Sequence[Sequence[int]], max_width: int | None = None) -> int:
    """The ladder width of the longest sequence (BOS and EOS included), at most 1024 and ``max_width``.

    Rows no wider than the longest sequence keep the extra attention that packing costs small
    for sets of short proteins; 1024 tokens hold any ESM-1b sequence, and an ESM-2 sequence
    longer than that gets a bucketed batch of its own.
    """
    needed = max((len(ids) + 2 for ids in encoded), default=2)
    width = min(bucket_width(needed), PACKED_ROW_WIDTH)
    return width if max_width is None else min(width, max_width)


def pack_rows(sizes: Sequence[int], row_width: int) -> list[list[int]]:
    """Best-fit decreasing: positions of ``sizes`` (each at most ``row_width``) grouped into rows of ``row_width``.

    Longest first, each into the fullest row that still has room (the lowest such row on ties),
    so the result depends on the sizes alone. A row lists its members longest first.
    """
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, row), ascending
    for position in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        slot = bisect.bisect_left(room, (sizes[position], -1))
        if slot == len(room):
            free, row = row_width, len(rows)
            rows.append([])
        else:
            free, row = room.pop(slot)
        rows[row].append(position)
        if free > sizes[position]:
            bisect.insort(room, (free - sizes[position], row))
    return rows


def plan_packed_batches(
    encoded: Sequence[Sequence[int]], toks_per_batch: int, row_width: int, max_width: int | None = None
) -> Iterator[PackedBatch | Batch]:
    """Batches covering every sequence of ``encoded`` (token ids without BOS/EOS) exactly once.

    Sequences of at most ``row_width`` tokens (BOS and EOS included) are packed (:func:`pack_rows`)
    into batches of ``(rows, row_width)``, ``rows`` at most ``max(1, toks_per_batch // row_width)``
    and a power of two; longer ones are not split but go to bucketed batches (:func:`plan_batches`,
    ``max_width`` capping their width), after the packed ones.
    """
    if row_width < 3:
        raise ValueError(f"row_width {row_width} cannot hold a sequence (<cls>, a residue and <eos> take 3 tokens)")
    fits = [i for i, ids in enumerate(encoded) if len(ids) + 2 <= row_width]
    too_long = [i for i, ids in enumerate(encoded) if len(ids) + 2 > row_width]
    rows = [[fits[j] for j in row] for row in pack_rows([len(encoded[i]) + 2 for i in fits], row_width)]
    most = max(1, toks_per_batch // row_width)
    for start in range(0, len(rows), most):
        yield _packed_batch(encoded, rows[start : start + most], row_width, most)
    for batch in plan_batches([encoded[i] for i in too_long], toks_per_batch, max_width):
        yield dataclasses.replace(batch, indices=tuple(too_long[i] for i in batch.indices))


def _packed_batch(encoded: Sequence[Sequence[int]], rows: list[list[int]], row_width: int, most: int) -> PackedBatch:
    """``rows`` (sequence indices per row) laid out, plus empty ``<cls><eos>`` rows up to a power of two."""
    alphabet = Alphabet()
    count = min(most, 1 << (len(rows) - 1).bit_length())
    tokens = np.full((count, row_width), alphabet.padding_idx, dtype=np.int32)
    segment_ids = np.zeros((count, row_width), dtype=np.int32)
    tokens[len(rows) :, :2] = (alphabet.cls_idx, alphabet.eos_idx)
    segment_ids[len(rows) :, :2] = 1
    placements = []
    for row, members in enumerate(rows):
        start = 0
        for segment, index in enumerate(members, start=1):
            ids = encoded[index]
            stop = start + len(ids) + 2
            tokens[row, start] = alphabet.cls_idx
            tokens[row, start + 1 : stop - 1] = ids
            tokens[row, stop - 1] = alphabet.eos_idx
            segment_ids[row, start:stop] = segment
            placements.append(Placement(index, row, start))
            start = stop
    return PackedBatch(tuple(placements), tokens, segment_ids)


def real_token_share(batches: Iterable[Batch | PackedBatch]) -> float:
    """The fraction of all batch positions that hold a sequence's token rather than padding."""
    real = total = 0
    for batch in batches:
        real += batch.real_tokens
        total += batch.tokens.size
    return real / max(total, 1)
