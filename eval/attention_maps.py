"""Symmetrised, APC-corrected attention maps of every layer and head, as the contact head's input features.

This is the feature set of Rao et al., "Transformer protein language models are unsupervised structure
learners" (ICLR 2021): for each head, ``APC(A + Aᵀ)`` of its attention over residues (BOS/EOS removed, EOS and
padding zeroed first, exactly as the model's contact head prepares them). The backbone runs inside one
``jax.jit`` per batch shape over its frozen state; batches come from the shared planner (padding rows and
positions are dropped before anything is returned).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from esm_jax.inference.batching import plan_batches
from esm_jax.inference.embedding import encode_records
from esm_jax.model import ESM
from esm_jax.model.heads import average_product_correct, symmetrize
from eval.representations import residue_window


def _maps(graphdef, state, tokens: jax.Array) -> jax.Array:
    """``(B, T-2, T-2, layers·heads)`` APC-corrected symmetric attention maps."""
    model = nnx.merge(graphdef, state)
    attentions = model.forward(tokens, (), need_head_weights=True)["attentions"]
    batch, layers, heads, width, _ = attentions.shape
    keep = ((tokens != model.eos_idx) & (tokens != model.padding_idx)).astype(jnp.float32)
    maps = attentions.astype(jnp.float32) * (keep[:, None, :] * keep[:, :, None])[:, None, None]
    maps = maps.reshape(batch, layers * heads, width, width)[..., 1:-1, 1:-1]
    return jnp.moveaxis(average_product_correct(symmetrize(maps)), 1, -1)


_compiled_maps = jax.jit(_maps, static_argnums=0)


def feature_count(model: ESM) -> int:
    """Number of maps per residue pair: layers × heads."""
    return model.config.num_layers * model.config.attention_heads


def iter_attention_features(
    model: ESM, records: Sequence[tuple[str, str]], toks_per_batch: int = 2048
) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, (L, L, layers·heads) float32)`` for every record (in length order, each once)."""
    encoded = encode_records(records, truncation_seq_length=residue_window(model))
    graphdef, state = nnx.split(model)
    for batch in plan_batches(encoded, toks_per_batch, max_width=model.config.max_batch_width):
        maps = np.asarray(_compiled_maps(graphdef, state, jnp.asarray(batch.tokens)))
        for row, index in enumerate(batch.indices):
            length = len(encoded[index])
            yield index, maps[row, :length, :length]
