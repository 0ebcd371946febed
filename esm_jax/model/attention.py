"""Multi-head self-attention with key padding masks and optional rotary positions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from esm_jax.model.config import ModelConfig
from esm_jax.model.layers import dense
from esm_jax.model.rotary import RotaryFrequencies, apply_rotary, default_inverse_frequencies


class SelfAttention(nnx.Module):
    """Bidirectional attention; softmax in float32 whatever the compute dtype.

    As in fair-esm, queries are scaled by ``head_dim**-0.5`` after projection and before the
    rotary rotation, and padded keys get ``-inf`` scores.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, dtype = config.embed_dim, config.dtype
        self.num_heads = config.attention_heads
        self.head_dim = config.head_dim
        self.dtype = dtype
        self.implementation = config.attention_impl
        self.q_proj = dense(d, d, ("embed", "heads"), dtype, rngs)
        self.k_proj = dense(d, d, ("embed", "heads"), dtype, rngs)
        self.v_proj = dense(d, d, ("embed", "heads"), dtype, rngs)
        self.out_proj = dense(d, d, ("heads", "embed"), dtype, rngs)
        if config.uses_rotary:
            self.rotary_frequencies = RotaryFrequencies(
                default_inverse_frequencies(config.head_dim), out_sharding=(None,), eager_sharding=False
            )
        else:
            self.rotary_frequencies = None

    def _split_heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:2], self.num_heads, self.head_dim)

    def __call__(
        self, x: jax.Array, key_padding_mask: jax.Array | None, need_weights: bool
    ) -> tuple[jax.Array, jax.Array | None]:
        """``x`` (B, T, D), ``key_padding_mask`` (B, T) True at padding → (out (B, T, D), probs (B, H, T, T))."""
        query = self._split_heads(self.q_proj(x) * self.head_dim**-0.5)
        key = self._split_heads(self.k_proj(x))
        value = self._split_heads(self.v_proj(x))
        if self.rotary_frequencies is not None:
            query = apply_rotary(query, self.rotary_frequencies[...])
            key = apply_rotary(key, self.rotary_frequencies[...])
        implementation = self.implementation
        if implementation == "auto":
            implementation = "per_head" if jax.default_backend() == "cpu" else "dense"
        if need_weights or implementation == "dense":
            context, probs = _dense_attention(query, key, value, key_padding_mask, self.dtype)
        else:
            context, probs = _attention_head_by_head(query, key, value, key_padding_mask, self.dtype), None
        out = self.out_proj(context.reshape(*x.shape[:2], -1))
        return out, probs


def _scores_to_probabilities(scores: jax.Array, key_padding_mask: jax.Array | None) -> jax.Array:
    if key_padding_mask is not None:
        scores = jnp.where(key_padding_mask, -jnp.inf, scores)
    return jax.nn.softmax(scores, axis=-1)


def _dense_attention(query, key, value, key_padding_mask, dtype) -> tuple[jax.Array, jax.Array]:
    """All heads at once; materialises the (B, H, T, T) probabilities, which are returned."""
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    probs = _scores_to_probabilities(scores, mask)
    context = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(dtype), value)
    return context, probs


def _attention_head_by_head(query, key, value, key_padding_mask, dtype) -> jax.Array:
    """One (sequence, head) at a time, so each T×T score matrix stays in the CPU cache.

    On CPUs attention is bound by memory bandwidth when the (B, H, T, T) scores are written
    to RAM; looping keeps them in L2 and is several times faster. The softmax normalisation is
    applied to the (T, head_dim) context instead of the (T, T) weights: the same result up to
    rounding, one pass over the scores fewer.
    """
    batch, length, heads, head_dim = query.shape

    def per_head(x):
        return jnp.swapaxes(x, 1, 2).reshape(batch * heads, length, head_dim)

    if key_padding_mask is None:
        key_padding_mask = jnp.zeros((batch, length), bool)
    masks = jnp.repeat(key_padding_mask, heads, axis=0)

    def one_head(args):
        q, k, v, mask = args
        scores = jnp.einsum("qd,kd->qk", q, k, preferred_element_type=jnp.float32)
        scores = jnp.where(mask[None, :], -jnp.inf, scores)
        unnormalised = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
        context = jnp.einsum("qk,kd->qd", unnormalised.astype(dtype), v, preferred_element_type=jnp.float32)
        return (context / jnp.sum(unnormalised, axis=-1, keepdims=True)).astype(dtype)

    context = jax.lax.map(one_head, (per_head(query), per_head(key), per_head(value), masks))
    return jnp.swapaxes(context.reshape(batch, heads, length, head_dim), 1, 2)
