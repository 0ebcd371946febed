"""Exact t-SNE in numpy (van der Maaten & Hinton, JMLR 2008), for small sets such as the 20 amino acids.

Every pairwise affinity is computed exactly (no Barnes-Hut); cost is O(N^2) per iteration, fine for
hundreds of points. Settings follow the paper's recipe as scikit-learn implements it: per-point Gaussian
bandwidths found by bisection to match the perplexity, symmetrised P, early exaggeration 12 for 250
iterations with momentum 0.5, then momentum 0.8, and per-parameter adaptive gains.
"""

from __future__ import annotations

import dataclasses

import numpy as np

_EXAGGERATION = 12.0
_EXAGGERATION_STEPS = 250
_MIN_PROBABILITY = 1e-12


@dataclasses.dataclass(frozen=True)
class Tsne:
    """``points`` (N, 2) and the final Kullback-Leibler divergence KL(P || Q)."""

    points: np.ndarray
    kl_divergence: float


def squared_distances(data: np.ndarray) -> np.ndarray:
    sq = np.sum(data * data, axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * data @ data.T, 0.0)


def conditional_probabilities(distances: np.ndarray, perplexity: float, tol: float = 1e-5) -> np.ndarray:
    """Rows P(j | i) of Gaussian kernels whose entropy is log(perplexity), by bisection on the precision."""
    n = distances.shape[0]
    target = np.log(perplexity)
    probabilities = np.zeros((n, n))
    for i in range(n):
        others = np.delete(distances[i], i)
        low, high, beta = 0.0, np.inf, 1.0
        for _ in range(200):
            shifted = np.exp(-(others - others.min()) * beta)
            row = shifted / shifted.sum()
            entropy = -np.sum(row * np.log(np.maximum(row, _MIN_PROBABILITY)))
            if abs(entropy - target) < tol:
                break
            if entropy > target:
                low = beta
                beta = beta * 2.0 if high == np.inf else (beta + high) / 2.0
            else:
                high = beta
                beta = (beta + low) / 2.0
        probabilities[i, np.arange(n) != i] = row
    return probabilities


def tsne(
    data: np.ndarray,
    *,
    perplexity: float = 5.0,
    iterations: int = 1000,
    learning_rate: float | None = None,
    seed: int = 0,
) -> Tsne:
    """Embed ``data`` (N, D) in 2-D. ``learning_rate`` defaults to max(N / 12 / 4, 50) (scikit-learn's auto)."""
    data = np.asarray(data, dtype=np.float64)
    n = data.shape[0]
    if data.ndim != 2 or n < 3:
        raise ValueError(f"t-SNE needs an (N >= 3, D) array, got shape {data.shape}")
    if not 1.0 <= perplexity < n - 1:
        raise ValueError(f"perplexity must be in [1, N - 1) = [1, {n - 1}), got {perplexity}")
    conditional = conditional_probabilities(squared_distances(data), perplexity)
    p = np.maximum((conditional + conditional.T) / (2.0 * n), _MIN_PROBABILITY)
    rate = learning_rate if learning_rate is not None else max(n / _EXAGGERATION / 4.0, 50.0)
    y = np.random.default_rng(seed).standard_normal((n, 2)) * 1e-4
    update = np.zeros_like(y)
    gains = np.ones_like(y)
    for step in range(iterations):
        early = step < _EXAGGERATION_STEPS
        gradient = _gradient(p * _EXAGGERATION if early else p, y)
        momentum = 0.5 if early else 0.8
        reversing = update * gradient < 0.0
        gains = np.maximum(np.where(reversing, gains + 0.2, gains * 0.8), 0.01)
        update = momentum * update - rate * gains * gradient
        y = y + update
    return Tsne(y - y.mean(axis=0), _kl_divergence(p, y))


def _affinities(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kernel = 1.0 / (1.0 + squared_distances(y))
    np.fill_diagonal(kernel, 0.0)
    return kernel, np.maximum(kernel / kernel.sum(), _MIN_PROBABILITY)


def _gradient(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    kernel, q = _affinities(y)
    weights = (p - q) * kernel
    np.fill_diagonal(weights, 0.0)
    return 4.0 * (np.diag(weights.sum(axis=1)) - weights) @ y


def _kl_divergence(p: np.ndarray, y: np.ndarray) -> float:
    _, q = _affinities(y)
    off_diagonal = ~np.eye(p.shape[0], dtype=bool)
    return float(np.sum(p[off_diagonal] * np.log(p[off_diagonal] / q[off_diagonal])))
