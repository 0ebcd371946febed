"""Secondary-structure accuracy (Q8, Q3): the fraction of evaluated residues whose state is predicted correctly.

Accuracy is per residue over the whole test set (as NetSurfP-2.0, Klausen et al. 2019, and ESM-1b report Q8/Q3),
counting only residues whose mask is set (residues with coordinates).
"""

from __future__ import annotations

import numpy as np

from data_pipeline.readers import netsurfp
from data_pipeline.readers.netsurfp import SS3_STATES, SS8_STATES

__all__ = ["SS3_STATES", "SS8_STATES", "SS8_TO_SS3", "accuracy", "encode_states", "majority_accuracy", "ss8_to_ss3"]
# index in SS3_STATES of each 8-state under the reader's reduction (H, G, I -> H; E, B -> E; T, S, C -> C)
SS8_TO_SS3 = np.array([SS3_STATES.index(s) for s in netsurfp.ss8_to_ss3(SS8_STATES)], dtype=np.int32)


def encode_states(labels: str, states: str, where: str = "labels") -> np.ndarray:
    """Indices of each character of ``labels`` in ``states``; an unknown state raises naming its position."""
    lookup = {state: index for index, state in enumerate(states)}
    try:
        return np.array([lookup[c] for c in labels], dtype=np.int32)
    except KeyError:
        position = next(i for i, c in enumerate(labels) if c not in lookup)
        raise ValueError(
            f"{where}: state {labels[position]!r} at position {position + 1} is not one of {states}"
        ) from None


def accuracy(predicted: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction of residues (where ``mask``) with ``predicted == labels``; all arrays 1-D and equal length."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    mask = np.ones(labels.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if not predicted.shape == labels.shape == mask.shape or labels.ndim != 1:
        raise ValueError(f"predicted {predicted.shape}, labels {labels.shape} and mask {mask.shape} differ")
    if not mask.any():
        raise ValueError("no residue to evaluate: the mask is empty")
    return float(np.mean(predicted[mask] == labels[mask]))


def ss8_to_ss3(indices: np.ndarray) -> np.ndarray:
    """8-state indices (in SS8_STATES order) reduced to 3-state indices (in SS3_STATES order)."""
    return SS8_TO_SS3[np.asarray(indices)]


def majority_accuracy(train_labels: np.ndarray, train_mask: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
    """Chance level: the accuracy of always predicting the state most frequent among the training residues."""
    train_mask = np.asarray(train_mask, dtype=bool) & (np.asarray(train_labels) >= 0)
    majority = np.bincount(np.asarray(train_labels)[train_mask]).argmax()
    return accuracy(np.full(np.shape(labels), majority), labels, mask)
