"""Train and score contact predictors (linear or deep) over frozen per-protein features, fold by fold.

A predictor is an NNX module with a ``forward(module, batch) -> (B, W, W) logits`` function; batches hold the
padded per-residue features ``x`` (B, W, D), optional pair features ``pair`` (B, W, W, C), ``valid`` residues
and true ``contacts``. Training minimises the logistic loss over pairs at least 6 apart; scoring returns each
protein's ``(L, L)`` probabilities, with padding removed, for every protein asked for.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np
from flax import nnx

from eval.common.linear_probes import pair_logistic_loss
from eval.common.padding import pad_pairs, pad_stack
from eval.common.probe_training import Batch, fit_adam, protein_batches
from eval.structure.contacts.metrics import contact_precisions
from eval.structure.contacts.sets import ContactProtein

Forward = Callable[[nnx.Module, Batch], jax.Array]


def contact_batches(
    proteins: Sequence[ContactProtein],
    residue_features: Sequence[np.ndarray],
    indices: Sequence[int],
    *,
    pair_features: Sequence[np.ndarray] | None = None,
    tokens_per_batch: int = 4096,
) -> list[tuple[tuple[int, ...], Batch]]:
    """Padded batches of the proteins ``indices`` as ``(protein indices, batch)``; every protein appears once."""
    out = []
    for rows_of, rows, width in protein_batches([len(proteins[i].sequence) for i in indices], tokens_per_batch):
        chosen = [indices[r] for r in rows_of]
        for i in chosen:
            if residue_features[i].shape[0] != len(proteins[i].sequence):
                raise ValueError(
                    f"{proteins[i].name}: {residue_features[i].shape[0]} feature rows for "
                    f"{len(proteins[i].sequence)} residues"
                )
        batch = {
            "x": pad_stack([residue_features[i] for i in chosen], rows, width),
            "valid": pad_stack([proteins[i].valid for i in chosen], rows, width, fill=False),
            "present": pad_stack([np.ones(len(proteins[i].sequence), bool) for i in chosen], rows, width, fill=False),
            "contacts": pad_pairs([proteins[i].contacts for i in chosen], rows, width, fill=False),
        }
        if pair_features is not None:
            batch["pair"] = pad_pairs([pair_features[i] for i in chosen], rows, width)
        out.append((tuple(chosen), batch))
    return out


@dataclasses.dataclass(frozen=True)
class PairLoss:
    """Masked pair logistic loss of a predictor's ``forward``; compares by value, so compiled steps are reused."""

    forward: Forward

    def __call__(self, module: nnx.Module, batch: Batch) -> jax.Array:
        return pair_logistic_loss(self.forward(module, batch), batch)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _probabilities(graphdef, forward: Forward, state, batch):
    return jax.nn.sigmoid(forward(nnx.merge(graphdef, state), batch))


def train_predictor(
    module: nnx.Module, forward: Forward, batches: Sequence[Batch], *, steps: int, learning_rate: float, seed: int
) -> list[float]:
    """Fit ``module`` in place on ``batches`` with the masked pair logistic loss (``forward`` module-level)."""
    return fit_adam(
        module,
        PairLoss(forward),
        batches,
        steps=steps,
        learning_rate=learning_rate,
        seed=seed,
        desc=f"contacts seed {seed}",
    )


def predict(
    module: nnx.Module, forward: Forward, batches: Sequence[tuple[tuple[int, ...], Batch]], lengths: dict[int, int]
) -> dict[int, np.ndarray]:
    """``{protein index: (L, L) contact probabilities}`` for every protein in ``batches``."""
    graphdef, state = nnx.split(module)
    out = {}
    for chosen, batch in batches:
        values = np.asarray(_probabilities(graphdef, forward, state, batch))
        for row, index in enumerate(chosen):
            out[index] = values[row, : lengths[index], : lengths[index]]
    return out


def cross_validated_precisions(
    proteins: Sequence[ContactProtein],
    residue_features: Sequence[np.ndarray],
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    make_module: Callable[[int], nnx.Module],
    forward: Forward,
    *,
    steps: int,
    learning_rate: float,
    seed: int = 0,
    pair_features: Sequence[np.ndarray] | None = None,
    tokens_per_batch: int = 4096,
) -> list[dict[str, float]]:
    """Per-protein precisions of every test protein (in index order), each scored by the fold that held it out."""
    lengths = {i: len(p.sequence) for i, p in enumerate(proteins)}
    scores = {}
    for train, test in folds:
        common = {"pair_features": pair_features, "tokens_per_batch": tokens_per_batch}
        train_batches = [b for _, b in contact_batches(proteins, residue_features, list(train), **common)]
        module = make_module(seed)
        train_predictor(module, forward, train_batches, steps=steps, learning_rate=learning_rate, seed=seed)
        test_batches = contact_batches(proteins, residue_features, list(test), **common)
        for index, probs in predict(module, forward, test_batches, lengths).items():
            scores[index] = contact_precisions(probs, proteins[index].contacts, proteins[index].valid)
    return [scores[i] for i in sorted(scores)]
