"""Sequence and alignment features: one-hot residues, integer-encoded query-anchored MSAs, weights and profiles.

An MSA here is ``(N, L)`` integers over the query's residues (row 0 is the query): 0..19 the standard amino acids
in :data:`AMINO_ACIDS` order, 20 a gap (or a non-standard letter). Sequence weights down-weight redundant rows as
CCMpred (Seemayer et al., Bioinformatics 2014) and plmc do: a row's weight is 1 over the number of rows at least
80% identical to it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

AMINO_ACIDS = "ARNDCQEGHILKMFPSTWYV"
GAP = 20
STATES = 21
_LOOKUP = np.full(256, GAP, dtype=np.int8)
for _index, _letter in enumerate(AMINO_ACIDS):
    _LOOKUP[ord(_letter)] = _index


def encode_msa(rows: list[str] | tuple[str, ...]) -> np.ndarray:
    """``(N, L)`` int8 states of equal-width aligned rows (upper-case letters; anything else is a gap)."""
    if not rows:
        raise ValueError("an MSA needs at least one row")
    width = len(rows[0])
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ValueError(f"MSA row {number} has {len(row)} columns but row 1 has {width}")
    data = np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8).reshape(len(rows), width)
    return _LOOKUP[data]


def one_hot(msa: np.ndarray, states: int = STATES) -> jax.Array:
    """``(N, L, states)`` float32 one-hot of an integer MSA."""
    return jax.nn.one_hot(jnp.asarray(msa, dtype=jnp.int32), states, dtype=jnp.float32)


def sequence_weights(msa: np.ndarray, identity: float = 0.8, block: int = 256) -> np.ndarray:
    """``(N,)`` weights 1 / #{rows with identity >= ``identity``} (identity = shared states / L, gaps included)."""
    msa = np.asarray(msa)
    count, width = msa.shape
    encoded = np.eye(int(msa.max()) + 1, dtype=np.float32)[msa].reshape(count, -1)
    threshold = identity * width - 1e-3
    neighbours = np.empty(count, dtype=np.int64)
    for start in range(0, count, block):
        neighbours[start : start + block] = np.sum(encoded[start : start + block] @ encoded.T >= threshold, axis=1)
    return 1.0 / neighbours


def profile(msa: np.ndarray, weights: np.ndarray | None = None, pseudocount: float = 1.0) -> np.ndarray:
    """``(L, 21)`` position-specific state frequencies (weighted, with ``pseudocount`` spread over the states)."""
    msa = np.asarray(msa)
    weights = np.ones(msa.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    counts = np.stack([(msa == state).T.astype(np.float64) @ weights for state in range(STATES)], axis=1)
    return ((counts + pseudocount / STATES) / (weights.sum() + pseudocount)).astype(np.float32)


def one_hot_features(sequence: str) -> np.ndarray:
    """``(L, 21)`` one-hot amino acids (last column: anything non-standard)."""
    index = np.array([AMINO_ACIDS.index(c) if c in AMINO_ACIDS else 20 for c in sequence])
    return np.eye(21, dtype=np.float32)[index]
