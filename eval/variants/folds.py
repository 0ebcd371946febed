"""Seeded training-fraction subsets of the variants outside a test fold.

The folds themselves are :func:`eval.common.splits.random_folds`: a seeded permutation of the variants cut into
``k`` near-equal parts, so every variant is tested exactly once and the same seed gives the same folds.
"""

from __future__ import annotations

import numpy as np


def training_subset(train: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded random subset of ``size`` indices of ``train`` (sorted); ``size`` must fit in ``train``."""
    if not 1 <= size <= len(train):
        raise ValueError(f"cannot draw {size} training variants from {len(train)}")
    return np.sort(np.random.default_rng(seed).choice(train, size=size, replace=False))


def fraction_size(fraction: float, total: int, available: int) -> int:
    """Training variants for ``fraction`` of an assay of ``total``, at least 2, drawn from ``available``.

    Uneven folds can leave one variant fewer outside a test fold than ``fraction`` asks for (0.8 of 4,996 is
    3,997 but one fold leaves 3,996); that one is forgiven, a larger shortfall is an error.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"training fraction must be in (0, 1], got {fraction}")
    size = max(2, int(round(fraction * total)))
    if size > available + 1:
        raise ValueError(
            f"a training fraction of {fraction} needs {size} variants but only {available} lie outside the test fold"
        )
    return min(size, available)
