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


def rotation_tables(
    inverse_frequencies: jax.Array, positions: jax.Array | None, length: int
) -> tuple[jax.Array, jax.Array]:
    """float32 ``(cos, sin)`` tables (B or 1, T, head_dim) for :func:`rotate` at ``positions`` (B, T).

    Without ``positions`` every row is at 0..T-1; packed rows give each sequence positions that restart
    at 0 on its ``<cls>``. The sine's first half is negated, so a rotation is two products and a swap of
    halves (see :func:`rotate`). Tables are made once per layer call: computing them inside a fused
    per-element loop costs more than the rotation itself on CPUs.
    """
    if positions is None:
        positions = jnp.arange(length)[None, :]
    angles = positions.astype(jnp.float32)[..., None] * inverse_frequencies.astype(jnp.float32)
    sine = jnp.sin(angles)
    return jnp.cos(jnp.concatenate([angles, angles], axis=-1)), jnp.concatenate([-sine, sine], axis=-1)


def _swap_halves(x: jax.Array) -> jax.Array:
    first, second = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([second, first], axis=-1)


def rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """``x * cos + rotate_half(x) * sin`` as fair-esm computes it, with tables from :func:`rotation_tables`."""
    return x * cos + _swap_halves(x) * sin


def unrotate(gradient: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """The transpose of :func:`rotate` (a rotation by minus the angle), for hand-written backward passes."""
    return gradient * cos + _swap_halves(gradient * sin)
