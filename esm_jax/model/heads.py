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


def attention_contact_maps(tokens: jax.Array, probs: jax.Array, eos_idx: int, padding_idx: int) -> jax.Array:
    """The contact regression's inputs (B, H, T-2, T-2) from attention probabilities (B, H, T, T).

    EOS and padding rows/columns are zeroed, BOS and the last position dropped, then each map is
    symmetrised and APC-corrected.
    """
    keep = ((tokens != eos_idx) & (tokens != padding_idx)).astype(jnp.float32)
    maps = (probs.astype(jnp.float32) * (keep[:, None, :] * keep[:, :, None])[:, None])[..., 1:-1, 1:-1]
    return average_product_correct(symmetrize(maps))


class ContactHead(nnx.Module):
    """Logistic regression over symmetrised, APC-corrected attention maps of every head.

    Padding and EOS rows/columns are zeroed, BOS and the last position dropped, giving contacts
    of shape (B, T-2, T-2) for tokens of shape (B, T). The regression is linear in the maps,
    so it can be accumulated layer by layer (:meth:`layer_logits`) without keeping every
    layer's attention in memory.
    """

    def __init__(self, config: ModelConfig, eos_idx: int, padding_idx: int, *, rngs: nnx.Rngs):
        self.eos_idx = eos_idx
        self.padding_idx = padding_idx
        self.heads = config.attention_heads
        self.regression = dense(config.num_layers * config.attention_heads, 1, (None, None), jnp.float32, rngs)

    def layer_logits(self, tokens: jax.Array, probs: jax.Array, layer: int | jax.Array) -> jax.Array:
        """This layer's share (B, T-2, T-2) of the contact logits, from its probabilities (B, H, T, T)."""
        maps = attention_contact_maps(tokens, probs, self.eos_idx, self.padding_idx)
        weights = jax.lax.dynamic_slice_in_dim(self.regression.kernel[...][:, 0], layer * self.heads, self.heads)
        return jnp.einsum("bhij,h->bij", maps, weights)

    def finish(self, logits: jax.Array) -> jax.Array:
        """Contact probabilities from the logits summed over every layer."""
        return jax.nn.sigmoid(logits + self.regression.bias[...][0])

    def __call__(self, tokens: jax.Array, attentions: jax.Array) -> jax.Array:
        """Contacts from the attention maps of all layers (B, L, H, T, T)."""
        total = sum(self.layer_logits(tokens, attentions[:, layer], layer) for layer in range(attentions.shape[1]))
        return self.finish(total)
