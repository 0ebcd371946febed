"""Multi-head self-attention with padding masks or packed segments, and optional rotary positions."""

from __future__ import annotations

import jax
from flax import nnx

from esm_jax.model import attention_kernels
from esm_jax.model.config import ModelConfig
from esm_jax.model.layers import dense
from esm_jax.model.rotary import RotaryFrequencies, apply_rotary, default_inverse_frequencies


class SelfAttention(nnx.Module):
    """Bidirectional attention; softmax in float32 whatever the compute dtype.

    As in fair-esm, queries are scaled by ``head_dim**-0.5`` after projection and before the
    rotary rotation, and padded keys get ``-inf`` scores. ``config.attention_impl`` picks the
    kernel (:mod:`esm_jax.model.attention_kernels`); returning the attention maps always takes the
    exact dense path.
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
        self,
        x: jax.Array,
        key_padding_mask: jax.Array | None,
        need_weights: bool,
        segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array | None]:
        """``x`` (B, T, D) → (out (B, T, D), probs (B, H, T, T) when ``need_weights``).

        ``key_padding_mask`` (B, T) is True at padding; ``segment_ids`` (B, T), when given, confines
        attention to each packed sequence; ``positions`` (B, T) are the rotary positions (default 0..T-1).
        """
        query = self._split_heads(self.q_proj(x) * self.head_dim**-0.5)
        key = self._split_heads(self.k_proj(x))
        value = self._split_heads(self.v_proj(x))
        if self.rotary_frequencies is not None:
            query = apply_rotary(query, self.rotary_frequencies[...], positions)
            key = apply_rotary(key, self.rotary_frequencies[...], positions)
        query, key, value = (part.astype(self.dtype) for part in (query, key, value))
        implementation = attention_kernels.resolve(self.implementation)
        masks = (segment_ids, key_padding_mask, self.dtype)
        if need_weights or implementation == "dense":
            context, probs = attention_kernels.dense_attention(query, key, value, *masks)
        else:
            context, probs = attention_kernels.KERNELS[implementation](query, key, value, *masks), None
        out = self.out_proj(context.reshape(*x.shape[:2], -1))
        return out, probs
