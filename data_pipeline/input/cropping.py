"""Random crop of long sequences to the model's maximum, as ESM-1b trains (1022 residues + BOS/EOS = 1024 tokens)."""

from __future__ import annotations

import numpy as np

from data_pipeline import counter_random

DEFAULT_MAX_RESIDUES = 1022


def crop_windows(
    lengths: np.ndarray, max_residues: int, seed: int, streams: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(start, cropped_length)`` per sequence: a uniformly placed window of ``max_residues`` when too long.

    ``streams`` holds one counter-based random stream per sequence, so a crop depends only on the seed and
    the sequence's place in the data stream.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    spare = np.maximum(lengths - max_residues, 0)
    starts = np.where(spare > 0, counter_random.below(seed, streams, 0, spare + 1), 0)
    return starts.astype(np.int64), np.minimum(lengths, max_residues)
