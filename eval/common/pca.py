"""Principal component analysis in numpy: centred SVD, with a deterministic sign for each component."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Pca:
    """``points`` (N, k) in the first k components, ``components`` (k, D), ``explained`` variance ratios (k,)."""

    points: np.ndarray
    components: np.ndarray
    explained: np.ndarray


def pca(data: np.ndarray, components: int = 2) -> Pca:
    """Project ``data`` (N, D) onto its first ``components`` principal axes.

    Each axis is signed so that its largest-magnitude loading is positive, so repeated runs (and other
    SVD implementations) give the same picture.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"PCA needs an (N >= 2, D) array, got shape {data.shape}")
    if not 1 <= components <= min(data.shape):
        raise ValueError(f"components must be in 1..{min(data.shape)}, got {components}")
    centred = data - data.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:components]
    signs = np.sign(axes[np.arange(components), np.argmax(np.abs(axes), axis=1)])
    axes = axes * signs[:, None]
    variance = singular**2
    explained = variance[:components] / variance.sum() if variance.sum() > 0 else np.zeros(components)
    return Pca(centred @ axes.T, axes, explained)
