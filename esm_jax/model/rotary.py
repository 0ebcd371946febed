"""Rotary position embeddings in ESM-2's half-split layout (RoFormer, Su et al. 2021)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class RotaryFrequencies(nnx.Variable):
    """Inverse rotary frequencies; a buffer, loaded from checkpoints and never trained.

    ESM-2 checkpoints store them rounded to float16, so they are loaded rather than recomputed
    to reproduce fair-esm bit for bit.
    """


def default_inverse_frequencies(head_dim: int) -> jax.Array:
    """``1 / 10000^(2i/head_dim)`` for ``i < head_dim/2``, in float32."""
    return 1.0 / (10000.0 ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))


def _rotate_half(x: jax.Array) -> jax.Array:
    first, second = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-second, first], axis=-1)


def apply_rotary(x: jax.Array, inverse_frequencies: jax.Array, positions: jax.Array | None = None) -> jax.Array:
    """Rotate ``x`` of shape (batch, time, heads, head_dim) by its ``positions`` (B, T); default 0..T-1.

    Packed rows give each sequence positions that restart at 0 on its ``<cls>``.
    """
    if positions is None:
        positions = jnp.arange(x.shape[1])[None, :]
    angles = positions.astype(jnp.float32)[..., None] * inverse_frequencies.astype(jnp.float32)
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    rotated = x.astype(jnp.float32) * jnp.cos(angles) + _rotate_half(x.astype(jnp.float32)) * jnp.sin(angles)
    return rotated.astype(x.dtype)
