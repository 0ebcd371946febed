"""The CPU attention kernel's hand-written backward pass: exact gradients without keeping the scores."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esm_jax.model import attention_kernels

BATCH, LENGTH, HEADS, HEAD_DIM = 3, 17, 4, 8
PADDING = np.zeros((BATCH, LENGTH), bool)
PADDING[1, 12:] = True
PADDING[2, 5:] = True
SEGMENTS = np.array([[1] * 6 + [2] * 9 + [0] * 2, [1] * 17, [1] * 3 + [2] * 3 + [3] * 11], np.int32)
MASKS = {"padding": (None, PADDING), "packed": (SEGMENTS, None), "no mask": (None, None)}


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(shape, dtype=np.float32)) for _ in range(4)]


def _gradients(kernel, masks, inputs, dtype=jnp.float32):
    query, key, value, weights = inputs

    def loss(q, k, v):
        context = kernel(q.astype(dtype), k.astype(dtype), v.astype(dtype), *masks, dtype)
        return jnp.sum(context.astype(jnp.float32) * weights)

    return jax.grad(loss, argnums=(0, 1, 2))(query, key, value)


def _dense(query, key, value, segment_ids, key_padding_mask, dtype):
    return attention_kernels.dense_attention(query, key, value, segment_ids, key_padding_mask, dtype)[0]


@pytest.mark.parametrize("mask", sorted(MASKS))
def test_per_head_gradients_equal_autodiff_of_dense_attention(mask):
    inputs = _inputs((BATCH, LENGTH, HEADS, HEAD_DIM))
    ours = _gradients(attention_kernels.per_head_attention, MASKS[mask], inputs)
    reference = _gradients(_dense, MASKS[mask], inputs)
    for name, a, b in zip(("query", "key", "value"), ours, reference, strict=True):
        assert float(jnp.max(jnp.abs(a - b))) < 2e-5, name


def test_per_head_bfloat16_gradients_stay_close_to_float32():
    inputs = _inputs((BATCH, LENGTH, HEADS, HEAD_DIM), seed=1)
    half = _gradients(attention_kernels.per_head_attention, MASKS["padding"], inputs, jnp.bfloat16)
    full = _gradients(_dense, MASKS["padding"], inputs)
    for a, b in zip(half, full, strict=True):
        assert float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) < 3e-2


def test_per_head_backward_keeps_no_score_matrices_alive():
    batch, length, heads, head_dim = 2, 512, 8, 16
    inputs = _inputs((batch, length, heads, head_dim))
    masks = (None, jnp.zeros((batch, length), bool))

    def temporary_bytes(kernel):
        step = jax.jit(lambda *args: _gradients(kernel, masks, args))
        return step.lower(*inputs).compile().memory_analysis().temp_size_in_bytes

    all_scores = batch * heads * length * length * 4
    assert temporary_bytes(_dense) >= all_scores
    # One loop step holds heads_per_step(512) = 2 of the 16 (row, head) score matrices, and a few buffers of each.
    assert temporary_bytes(attention_kernels.per_head_attention) < all_scores / 2
