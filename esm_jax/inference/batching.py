"""Group sequences into padded batches of a few fixed shapes, so each shape compiles once.

Sequences are sorted by length and padded up to the next width of a geometric ladder
(64, 80, 96, 128, 160, 192, 256, ...: three widths per doubling, so at most 25% padding); a
bucket of width ``T`` holds up to ``max(1, toks_per_batch // T)`` rows, and a batch's row count is
padded to a power of two (or that maximum) with empty ``<cls><eos>`` sequences, so a bucket
compiles for a handful of shapes at most. Padding never changes a sequence's outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from esm_jax.alphabet import Alphabet


@dataclasses.dataclass(frozen=True)
class Batch:
    """Rows ``0..len(indices)-1`` of ``tokens`` hold the sequences ``indices``; the rest is padding."""

    indices: tuple[int, ...]
    tokens: np.ndarray

    @property
    def real_tokens(self) -> int:
        return int(np.sum(self.tokens[: len(self.indices)] != Alphabet().padding_idx))


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
