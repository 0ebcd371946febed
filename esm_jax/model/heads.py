"""Output heads: the tied masked-language-model head and the contact-regression head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from esm_jax.model.config import ModelConfig
from esm_jax.model.layers import LayerNorm, dense, gelu, partitioned


class LMHead(nnx.Module):
    """RoBERTa head: dense → GELU → LayerNorm → projection onto the (tied) token embeddings."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d = config.embed_dim
        self.dtype = config.dtype
        self.dense = dense(d, d, ("embed", "embed_out"), config.dtype, rngs)
        self.layer_norm = LayerNorm(d, config.layer_norm_eps)
        self.bias = nnx.Param(
            partitioned(nnx.initializers.zeros_init(), ("vocab",))(rngs.params(), (config.vocab_size,))
        )

    def __call__(self, x: jax.Array, embedding: jax.Array) -> jax.Array:
        hidden = self.layer_norm(gelu(self.dense(x).astype(jnp.float32)))
        logits = jnp.einsum(
            "btd,vd->btv",
            hidden.astype(self.dtype),
            embedding.astype(self.dtype),
            preferred_element_type=jnp.float32,
        )
        return logits + self.bias[...]


def symmetrize(x: jax.Array) -> jax.Array:
    """``x + xᵀ`` over the last two axes."""
    return x + jnp.swapaxes(x, -1, -2)


def average_product_correct(x: jax.Array) -> jax.Array:
    """Average product correction (APC, Dunn et al. 2008) over the last two axes."""
    row = x.sum(-1, keepdims=True)
    column = x.sum(-2, keepdims=True)
    total = x.sum((-1, -2), keepdims=True)
    return x - row * column / total


class ContactHead(nnx.Module):
    """Logistic regression over symmetrised, APC-corrected attention maps of every head.

    EOS rows/columns are zeroed, BOS and the last position dropped, giving contacts of shape
    (B, T-2, T-2) for tokens of shape (B, T).
    """

    def __init__(self, config: ModelConfig, eos_idx: int, *, rngs: nnx.Rngs):
        self.eos_idx = eos_idx
        self.regression = dense(config.num_layers * config.attention_heads, 1, (None, None), jnp.float32, rngs)

    def __call__(self, tokens: jax.Array, attentions: jax.Array) -> jax.Array:
        not_eos = (tokens != self.eos_idx).astype(jnp.float32)
        pair_mask = not_eos[:, None, :] * not_eos[:, :, None]
        maps = (attentions.astype(jnp.float32) * pair_mask[:, None, None])[..., 1:-1, 1:-1]
        batch, layers, heads, length, _ = maps.shape
        maps = average_product_correct(symmetrize(maps.reshape(batch, layers * heads, length, length)))
        features = jnp.moveaxis(maps, 1, -1)
        return jax.nn.sigmoid(self.regression(features)[..., 0])
