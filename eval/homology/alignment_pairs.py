"""Residue pairs of two aligned sequences: those the alignment puts in one column, and a matched background.

A row of an alignment is a sequence with ``-`` gaps; its residues are numbered 0.. in order. Two residues
are *aligned* when they sit in the same column of the two rows. The *unaligned* background is drawn
uniformly from every other (residue of a, residue of b) combination, as many as there are aligned pairs.
"""

from __future__ import annotations

import numpy as np

GAP = "-"


def residue_numbers(row: str) -> np.ndarray:
    """For each column, the 0-based number of the row's residue there, or -1 at a gap."""
    is_residue = np.array([char != GAP for char in row], dtype=bool)
    return np.where(is_residue, np.cumsum(is_residue) - 1, -1)


def ungapped(row: str) -> str:
    return row.replace(GAP, "")


def aligned_pairs(row_a: str, row_b: str) -> tuple[np.ndarray, np.ndarray]:
    """Residue numbers ``(i, j)`` of every column where both rows have a residue."""
    if len(row_a) != len(row_b):
        raise ValueError(f"aligned rows differ in width ({len(row_a)} vs {len(row_b)} columns)")
    a, b = residue_numbers(row_a), residue_numbers(row_b)
    both = (a >= 0) & (b >= 0)
    return a[both], b[both]


def unaligned_pairs(
    length_a: int, length_b: int, aligned: tuple[np.ndarray, np.ndarray], count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` distinct residue pairs ``(i, j)`` drawn uniformly from those not in ``aligned``."""
    taken = aligned[0].astype(np.int64) * length_b + aligned[1]
    free = np.setdiff1d(np.arange(length_a * length_b, dtype=np.int64), taken, assume_unique=False)
    chosen = rng.choice(free, size=min(count, free.size), replace=False)
    return chosen // length_b, chosen % length_b
