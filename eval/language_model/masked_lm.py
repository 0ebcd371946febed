"""Masked-LM loss of a frozen model and the paper's exponentiated cross-entropy (ECE).

ECE = exp(mean negative log-likelihood per masked token), the perplexity per masked token (Rives et al., PNAS
2021, Table 1: 25 for uniform guessing over the amino acids, 1 for a perfect model). The log-likelihood is the model's
log-softmax over its whole output vocabulary at each position selected for masking, as in training.
"""

from __future__ import annotations

import contextlib
import math

import jax
import numpy as np
from flax import nnx

from esm_jax.model import ESM, BiLSTMLM
from esm_jax.train.loss import masked_lm_sums


def ece(total_nll: float, tokens: int) -> float:
    """exp(total negative log-likelihood / number of predicted tokens)."""
    if tokens <= 0:
        raise ValueError("ECE needs at least one predicted token")
    return math.exp(total_nll / tokens)


def _masked_nll(graphdef, state, tokens, targets, loss_mask):
    """Summed NLL and target count, by the training loss's own definition (:func:`masked_lm_sums`)."""
    logits = nnx.merge(graphdef, state).forward(tokens)["logits"]
    total, count, _ = masked_lm_sums(logits, targets, loss_mask)
    return total, count


def _masked_row_nll(graphdef, state, tokens, targets, loss_mask):
    """Summed NLL and target count of each row: :func:`masked_lm_sums` mapped over the rows."""
    logits = nnx.merge(graphdef, state).forward(tokens)["logits"]
    totals, counts, _ = jax.vmap(masked_lm_sums)(logits, targets, loss_mask)
    return totals, counts


class MaskedLmScorer:
    """Sums the masked-token NLL of a frozen model over batches; compiled once per batch shape.

    The parameters are split off once and passed to the jitted function as an input; nothing updates them.
    """

    def __init__(self, model: ESM | BiLSTMLM):
        self._model = model
        self._graphdef, self._state = nnx.split(model)
        self._step = jax.jit(_masked_nll, static_argnums=0)
        self._row_step = jax.jit(_masked_row_nll, static_argnums=0)

    def batch_nll(self, tokens: np.ndarray, targets: np.ndarray, loss_mask: np.ndarray) -> tuple[float, int]:
        """(summed NLL in nats, number of masked tokens) of one batch (split over the ESM model's mesh, if any)."""
        total, count = self._run(self._step, tokens, targets, loss_mask)
        return float(total), int(count)

    def row_nll(self, tokens: np.ndarray, targets: np.ndarray, loss_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(summed NLL in nats, number of masked tokens) of each row of one batch, as float64 and int64 arrays.

        Per sequence, so held-out ECE can be bootstrapped over sequences; rows the mesh adds are dropped.
        """
        totals, counts = self._run(self._row_step, tokens, targets, loss_mask)
        rows = len(tokens)
        return np.asarray(totals[:rows], np.float64), np.rint(counts[:rows]).astype(np.int64)

    def _run(self, step, tokens: np.ndarray, targets: np.ndarray, loss_mask: np.ndarray):
        batch = (np.asarray(tokens, np.int32), np.asarray(targets, np.int32), np.asarray(loss_mask, np.float32))
        on_mesh = isinstance(self._model, ESM)
        batch = self._model.place_rows(*batch) if on_mesh else batch  # added rows are masked out of the sums
        with self._model.mesh_context() if on_mesh else contextlib.nullcontext():
            return jax.device_get(step(self._graphdef, self._state, *batch))
