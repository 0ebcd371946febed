"""The pre-LayerNorm Transformer block shared by ESM-1b, ESM-1v and ESM-2."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from esm_jax.model.attention import SelfAttention
from esm_jax.model.config import ModelConfig
from esm_jax.model.layers import LayerNorm, dense, gelu_then_dense, layer_norm_then_dense


class TransformerBlock(nnx.Module):
    """``x + attn(LN(x))`` then ``x + fc2(gelu(fc1(LN(x))))``; the residual stream stays float32."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, f, dtype = config.embed_dim, config.ffn_embed_dim, config.dtype
        self.self_attn_layer_norm = LayerNorm(d, config.layer_norm_eps)
        self.self_attn = SelfAttention(config, rngs=rngs)
        self.final_layer_norm = LayerNorm(d, config.layer_norm_eps)
        self.fc1 = dense(d, f, ("embed", "mlp"), dtype, rngs)
        self.fc2 = dense(f, d, ("mlp", "embed"), dtype, rngs)

    def __call__(
        self,
        x: jax.Array,
        key_padding_mask: jax.Array | None,
        need_weights: bool,
        segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array | None]:
        projections = layer_norm_then_dense(self.self_attn_layer_norm, self.self_attn.input_projections, x)
        attended, probs = self.self_attn(projections, key_padding_mask, need_weights, segment_ids, positions)
        return self._feed_forward(x + attended.astype(jnp.float32)), probs

    def at_positions(self, x: jax.Array, positions: jax.Array, key_padding_mask: jax.Array | None) -> jax.Array:
        """The block's output at ``positions`` (B, K) only: (B, K, D), attending over every key of ``x`` (B, T, D)."""
        normed = self.self_attn_layer_norm(x)
        attended = self.self_attn.at_positions(normed, positions, key_padding_mask)
        x = jnp.take_along_axis(x, positions[:, :, None], axis=1)
        return self._feed_forward(x + attended.astype(jnp.float32))

    def _feed_forward(self, x: jax.Array) -> jax.Array:
        (pre_activation,) = layer_norm_then_dense(self.final_layer_norm, (self.fc1,), x)
        pre_activation = pre_activation.astype(jnp.float32)
        return x + gelu_then_dense(self.fc2, pre_activation).astype(jnp.float32)
