"""Arrays padded to the fixed shapes a jitted function compiles for (the padding is masked out by the caller)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad_rows(array: np.ndarray, rows: int, fill: float | int = 0) -> np.ndarray:
    """``array`` with rows of ``fill`` appended up to ``rows``."""
    if array.shape[0] == rows:
        return array
    padding = np.full((rows - array.shape[0], *array.shape[1:]), fill, dtype=array.dtype)
    return np.concatenate([array, padding])


def pad_stack(arrays: Sequence[np.ndarray], rows: int, width: int, fill: float = 0.0) -> np.ndarray:
    """``(rows, width, ...)`` with ``arrays[i]`` (L_i, ...) in row i; the rest ``fill``."""
    out = np.full((rows, width, *arrays[0].shape[1:]), fill, dtype=arrays[0].dtype)
    for row, array in enumerate(arrays):
        out[row, : array.shape[0]] = array
    return out


def pad_pairs(arrays: Sequence[np.ndarray], rows: int, width: int, fill: float = 0.0) -> np.ndarray:
    """``(rows, width, width, ...)`` with ``arrays[i]`` (L_i, L_i, ...) in row i; the rest ``fill``."""
    out = np.full((rows, width, width, *arrays[0].shape[2:]), fill, dtype=arrays[0].dtype)
    for row, array in enumerate(arrays):
        out[row, : array.shape[0], : array.shape[1]] = array
    return out
