"""Multi-head self-attention with padding masks or packed segments, and optional rotary positions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from esm_jax.model import attention_kernels
from esm_jax.model.config import ModelConfig
from esm_jax.model.layers import dense
from esm_jax.model.rotary import RotaryFrequencies, default_inverse_frequencies, rotate, rotation_tables


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

    @property
    def input_projections(self) -> tuple[nnx.Linear, nnx.Linear, nnx.Linear]:
        """The query, key and value layers, whose outputs :meth:`__call__` takes."""
        return self.q_proj, self.k_proj, self.v_proj

    def __call__(
        self,
        projections: tuple[jax.Array, jax.Array, jax.Array],
        key_padding_mask: jax.Array | None,
        need_weights: bool,
        segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array | None]:
        """The :attr:`input_projections` of the input, each (B, T, D) → (out (B, T, D), probs (B, H, T, T) when
        ``need_weights``).

        The block computes the projections with its LayerNorm (:func:`esm_jax.model.layers.layer_norm_then_dense`).
        ``key_padding_mask`` (B, T) is True at padding; ``segment_ids`` (B, T), when given, confines
        attention to each packed sequence; ``positions`` (B, T) are the rotary positions (default 0..T-1).
        """
        query, key, value = projections
        query = self._split_heads(query * self.head_dim**-0.5)
        key = self._split_heads(key)
        value = self._split_heads(value).astype(self.dtype)
        implementation = attention_kernels.resolve(self.implementation, dtype=self.dtype)
        if need_weights:
            implementation = "dense"
        masks = (segment_ids, key_padding_mask, self.dtype)
        rotation = None
        if self.rotary_frequencies is not None:
            cos, sin = rotation_tables(self.rotary_frequencies[...], positions, key.shape[1])
            if implementation == "per_head" and positions is None:
                rotation = (cos[0], sin[0])  # shared by every row: the kernel rotates each head in its loop
            else:
                query, key = (rotate(part, cos[:, :, None], sin[:, :, None]) for part in (query, key))
        if rotation is None:
            query, key = query.astype(self.dtype), key.astype(self.dtype)
        if implementation == "dense":
            context, probs = attention_kernels.dense_attention(query, key, value, *masks)
        elif implementation == "per_head":
            context, probs = attention_kernels.KERNELS["per_head"](query, key, value, *masks, rotation=rotation), None
        else:
            context, probs = attention_kernels.KERNELS[implementation](query, key, value, *masks), None
        out = self.out_proj(context.reshape(*key.shape[:2], -1))
        return out, probs

    def at_positions(self, x: jax.Array, positions: jax.Array, key_padding_mask: jax.Array | None) -> jax.Array:
        """Attention output (B, K, D) for the queries at ``positions`` (B, K) of ``x`` (B, T, D) over all its keys.

        Rows are unpacked, so rotary positions are the token indices. With a few queries per row the
        (B, H, K, T) scores are small, so all heads run at once.
        """
        picked = jnp.take_along_axis(x, positions[:, :, None], axis=1)
        query = self._split_heads(self.q_proj(picked) * self.head_dim**-0.5)
        key = self._split_heads(self.k_proj(x))
        value = self._split_heads(self.v_proj(x)).astype(self.dtype)
        if self.rotary_frequencies is not None:
            frequencies = self.rotary_frequencies[...]
            cos, sin = rotation_tables(frequencies, positions, positions.shape[1])
            query = rotate(query, cos[:, :, None], sin[:, :, None])
            cos, sin = rotation_tables(frequencies, None, x.shape[1])
            key = rotate(key, cos[:, :, None], sin[:, :, None])
        query, key = query.astype(self.dtype), key.astype(self.dtype)
        context, _ = attention_kernels.dense_attention(query, key, value, None, key_padding_mask, self.dtype)
        return self.out_proj(context.reshape(*picked.shape[:2], -1))
