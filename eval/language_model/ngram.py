"""n-gram amino-acid language models with Laplace (additive) smoothing: the Table 1 baselines.

Rives et al. (PNAS 2021, Table 1 and its note b) report "the best n-gram model across a range of context
sizes and Laplace-smoothing settings", trained on UR50/S. An order-``n`` model here predicts a residue from
the ``n - 1`` residues immediately to its LEFT (a standard left-to-right n-gram; positions before the
sequence start are a begin symbol), with

    P(x | c) = (count(c, x) + alpha) / (count(c) + alpha * V),   V = 25 amino-acid letters,

counts taken over every position of every training sequence. Order 1 is the unigram model (amino-acid
frequencies). ESM's masked LM sees both sides of a masked position; the n-gram sees only the true left
context (never the masked input), which is the usual n-gram language model the paper compares against.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from esm_jax.alphabet import RESIDUE_TOKENS, Alphabet

_ALPHABET = Alphabet()
LETTERS = "".join(tok for tok in RESIDUE_TOKENS if tok.isalpha())
VOCAB = len(LETTERS)  # 25: the 20 standard amino acids and X, B, U, Z, O (the paper's uniform ECE of 25)
FIRST_ID = _ALPHABET.get_idx(LETTERS[0])
BEGIN = VOCAB  # symbol for "before the sequence start"
BASE = VOCAB + 1


def symbols(token_ids: np.ndarray) -> np.ndarray:
    """Token ids of amino-acid letters as symbols 0..24; raises on any other token."""
    token_ids = np.asarray(token_ids)
    values = token_ids.astype(np.int64) - FIRST_ID
    bad = (values < 0) | (values >= VOCAB)
    if bad.any():
        position = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(
            f"token id {int(token_ids.ravel()[position])} at position {position} is not an amino-acid letter; "
            "n-gram models count and predict only the 25 letters of the ESM alphabet"
        )
    return values


def _window_keys(padded: np.ndarray, count: int, width: int) -> np.ndarray:
    """Base-26 integer of each window ``padded[i : i + width]``, ``i = 0 .. count - 1``."""
    key = np.zeros(count, dtype=np.int64)
    for offset in range(width):
        key = key * BASE + padded[offset : offset + count]
    return key


@dataclasses.dataclass(frozen=True)
class NgramModel:
    """Counts of an order-``order`` model: sorted n-gram keys and sorted context keys with their counts."""

    order: int
    gram_keys: np.ndarray
    gram_counts: np.ndarray
    context_keys: np.ndarray
    context_counts: np.ndarray

    @classmethod
    def fit(cls, sequences: Iterable[np.ndarray], order: int) -> NgramModel:
        """Count every n-gram of ``sequences`` (token-id arrays of amino-acid letters, no BOS/EOS)."""
        if order < 1:
            raise ValueError(f"n-gram order must be at least 1, got {order}")
        keys = []
        for ids in sequences:
            padded = np.concatenate([np.full(order - 1, BEGIN, np.int64), symbols(ids)])
            keys.append(_window_keys(padded, len(ids), order))
        if not keys or sum(k.size for k in keys) == 0:
            raise ValueError("no training residues: an n-gram model needs at least one sequence")
        gram_keys, gram_counts = np.unique(np.concatenate(keys), return_counts=True)
        context_of = gram_keys // BASE
        context_keys, first = np.unique(context_of, return_index=True)
        context_counts = np.add.reduceat(gram_counts, first)
        return cls(order, gram_keys, gram_counts, context_keys, context_counts)

    @property
    def residues(self) -> int:
        return int(self.gram_counts.sum())

    def log_probs(self, contexts: np.ndarray, targets: np.ndarray, alpha: float) -> np.ndarray:
        """Natural-log P(target | context) with add-``alpha`` smoothing.

        ``contexts`` (M, order - 1) and ``targets`` (M,) are symbols (0..24, ``BEGIN`` allowed in contexts).
        """
        if alpha <= 0:
            raise ValueError(f"Laplace smoothing needs alpha > 0 (1 = add-one), got {alpha}")
        contexts = np.asarray(contexts, np.int64).reshape(len(targets), self.order - 1)
        context_key = np.zeros(len(targets), np.int64)
        for column in range(self.order - 1):
            context_key = context_key * BASE + contexts[:, column]
        gram = _lookup(self.gram_keys, self.gram_counts, context_key * BASE + np.asarray(targets, np.int64))
        seen = _lookup(self.context_keys, self.context_counts, context_key)
        return np.log(gram + alpha) - np.log(seen + alpha * VOCAB)


def _lookup(keys: np.ndarray, counts: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    where = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
    return np.where(keys[where] == wanted, counts[where], 0).astype(np.float64)


def left_contexts(tokens: np.ndarray, rows: np.ndarray, columns: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` symbols left of ``tokens[rows, columns]`` in BOS-first batches (begin symbol before residues).

    ``tokens`` (B, T) hold the ORIGINAL (unmasked) sequences laid out ``<cls>`` residues ``<eos>`` padding.
    """
    tokens = np.asarray(tokens)
    as_symbols = np.where((tokens >= FIRST_ID) & (tokens < FIRST_ID + VOCAB), tokens.astype(np.int64) - FIRST_ID, BEGIN)
    padded = np.concatenate([np.full((tokens.shape[0], width), BEGIN, np.int64), as_symbols], axis=1)
    offsets = np.arange(width)[None, :]
    return padded[np.asarray(rows)[:, None], np.asarray(columns)[:, None] + offsets]
