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
        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
        if key_padding_mask is not None:
            scores = jnp.where(key_padding_mask[:, None, None, :], -jnp.inf, scores)
        probs = jax.nn.softmax(scores, axis=-1)
        context = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), value)
        out = self.out_proj(context.reshape(*x.shape[:2], -1))
        return out, (probs if need_weights else None)
