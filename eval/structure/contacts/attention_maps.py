"""Symmetrised, APC-corrected attention maps of every layer and head, as the contact head's input features.

This is the feature set of Rao et al., "Transformer protein language models are unsupervised structure
learners" (ICLR 2021): for each head, ``APC(A + Aᵀ)`` of its attention over residues (BOS/EOS removed, EOS and
padding zeroed first, exactly as the model's contact head prepares them). The backbone runs inside one
``jax.jit`` per batch shape over its frozen state; batches come from the shared planner (padding rows and
positions are dropped before anything is returned).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from esm_jax.inference.batching import plan_batches
from esm_jax.inference.embedding import encode_records
from esm_jax.model import ESM
from esm_jax.model.heads import attention_contact_maps
from eval.common.representations import residue_window


def _maps(graphdef, state, tokens: jax.Array) -> jax.Array:
    """``(B, T-2, T-2, layers·heads)`` APC-corrected symmetric attention maps."""
    model = nnx.merge(graphdef, state)
    attentions = model.forward(tokens, (), need_head_weights=True)["attentions"]
    batch, layers, heads, width, _ = attentions.shape
    probs = attentions.reshape(batch, layers * heads, width, width)
    return jnp.moveaxis(attention_contact_maps(tokens, probs, model.eos_idx, model.padding_idx), 1, -1)


def _logits(graphdef, state, tokens: jax.Array, weights: jax.Array, intercept: jax.Array) -> jax.Array:
    """``(B, T-2, T-2)`` logits of a linear head over the maps."""
    return _maps(graphdef, state, tokens) @ weights + intercept


_compiled_maps = jax.jit(_maps, static_argnums=0)
_compiled_logits = jax.jit(_logits, static_argnums=0)


def feature_count(model: ESM) -> int:
    """Number of maps per residue pair: layers × heads."""
    return model.config.num_layers * model.config.attention_heads


def _per_record(
    model: ESM, records: Sequence[tuple[str, str]], toks_per_batch: int, compute: Callable[[jax.Array], jax.Array]
) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, compute(tokens)[row, :L, :L])`` for every record, batched by the shared planner."""
    encoded = encode_records(records, truncation_seq_length=residue_window(model))
    for batch in plan_batches(encoded, toks_per_batch, max_width=model.config.max_batch_width):
        values = np.asarray(compute(jnp.asarray(batch.tokens)))
        for row, index in enumerate(batch.indices):
            length = len(encoded[index])
            yield index, values[row, :length, :length]


def iter_attention_features(
    model: ESM, records: Sequence[tuple[str, str]], toks_per_batch: int = 2048
) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, (L, L, layers·heads) float32)`` for every record (in length order, each once)."""
    graphdef, state = nnx.split(model)
    return _per_record(model, records, toks_per_batch, functools.partial(_compiled_maps, graphdef, state))


def iter_contact_logits(
    model: ESM, records: Sequence[tuple[str, str]], weights: np.ndarray, intercept: float, toks_per_batch: int = 2048
) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, (L, L) logits)`` of the linear head ``maps @ weights + intercept`` (the maps stay on the device)."""
    graphdef, state = nnx.split(model)
    weights, intercept = jnp.asarray(weights, jnp.float32), jnp.asarray(intercept, jnp.float32)

    def compute(tokens: jax.Array) -> jax.Array:
        return _compiled_logits(graphdef, state, tokens, weights, intercept)

    return _per_record(model, records, toks_per_batch, compute)
