"""The CPU attention kernel's hand-written backward pass: exact gradients without keeping the scores.

Each per-head test runs twice: with the fused C++ kernels (``cpu_attention``) and with the XLA loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esm_jax.model import attention_kernels, cpu_attention
from esm_jax.model.rotary import default_inverse_frequencies, rotate, rotation_tables, unrotate

BATCH, LENGTH, HEADS, HEAD_DIM = 3, 17, 4, 8
PADDING = np.zeros((BATCH, LENGTH), bool)
PADDING[1, 12:] = True
PADDING[2, 5:] = True
SEGMENTS = np.array([[1] * 6 + [2] * 9 + [0] * 2, [1] * 17, [1] * 3 + [2] * 3 + [3] * 11], np.int32)
MASKS = {"padding": (None, PADDING), "packed": (SEGMENTS, None), "no mask": (None, None)}


@pytest.fixture(params=["fused", "xla"])
def cpu_forward(request, monkeypatch):
    """Which CPU kernels per-head attention runs: the fused C++ forward and backward, or XLA's loop."""
    if request.param == "fused" and not cpu_attention.registered():
        pytest.skip("the fused CPU attention kernel could not be built here (no C++ compiler?)")
    monkeypatch.setenv("ESM_JAX_CPU_ATTENTION", "1" if request.param == "fused" else "0")
    return request.param


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
def test_per_head_gradients_equal_autodiff_of_dense_attention(mask, cpu_forward):
    inputs = _inputs((BATCH, LENGTH, HEADS, HEAD_DIM))
    ours = _gradients(attention_kernels.per_head_attention, MASKS[mask], inputs)
    reference = _gradients(_dense, MASKS[mask], inputs)
    for name, a, b in zip(("query", "key", "value"), ours, reference, strict=True):
        assert float(jnp.max(jnp.abs(a - b))) < 2e-5, name


def test_per_head_bfloat16_gradients_stay_close_to_float32(cpu_forward):
    inputs = _inputs((BATCH, LENGTH, HEADS, HEAD_DIM), seed=1)
    half = _gradients(attention_kernels.per_head_attention, MASKS["padding"], inputs, jnp.bfloat16)
    full = _gradients(_dense, MASKS["padding"], inputs)
    for a, b in zip(half, full, strict=True):
        assert float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) < 3e-2


def _rotation():
    cos, sin = rotation_tables(default_inverse_frequencies(HEAD_DIM), None, LENGTH)
    return cos[0], sin[0]


def _rotating_per_head(query, key, value, segment_ids, key_padding_mask, dtype):
    """The per-head kernel rotating float32 queries and keys itself (``dtype`` applies after the rotation)."""
    query, key = query.astype(jnp.float32), key.astype(jnp.float32)
    kernel = attention_kernels.per_head_attention
    return kernel(query, key, value, segment_ids, key_padding_mask, dtype, rotation=_rotation())


def _rotated_dense(query, key, value, segment_ids, key_padding_mask, dtype):
    """Dense attention on queries and keys rotated beforehand, as the other kernels get them."""
    cos, sin = (table[None, :, None, :] for table in _rotation())
    query, key = (rotate(part.astype(jnp.float32), cos, sin).astype(dtype) for part in (query, key))
    return _dense(query, key, value, segment_ids, key_padding_mask, dtype)


def test_rotation_tables_rotate_as_fair_esm_rotate_half():
    x = _inputs((BATCH, LENGTH, HEADS, HEAD_DIM))[0]
    angles = np.arange(LENGTH, dtype=np.float32)[:, None] * np.asarray(default_inverse_frequencies(HEAD_DIM))
    angles = np.concatenate([angles, angles], axis=-1)[None, :, None, :]
    half = HEAD_DIM // 2
    rotate_half = np.concatenate([-np.asarray(x)[..., half:], np.asarray(x)[..., :half]], axis=-1)
    expected = np.asarray(x) * np.cos(angles) + rotate_half * np.sin(angles)
    cos, sin = (table[:, :, None, :] for table in rotation_tables(default_inverse_frequencies(HEAD_DIM), None, LENGTH))
    np.testing.assert_allclose(np.asarray(rotate(x, cos, sin)), expected, atol=2e-6)


def test_unrotate_is_the_transpose_of_rotate():
    x, y = _inputs((LENGTH, HEAD_DIM))[:2]
    cos, sin = _rotation()
    assert float(jnp.sum(rotate(x, cos, sin) * y)) == pytest.approx(float(jnp.sum(x * unrotate(y, cos, sin))), rel=1e-5)


@pytest.mark.parametrize("mask", ["padding", "no mask"])
def test_per_head_rotation_equals_rotating_before(mask, cpu_forward):
    inputs = _inputs((BATCH, LENGTH, HEADS, HEAD_DIM), seed=2)
    forward = _rotating_per_head(*inputs[:3], *MASKS[mask], jnp.float32)
    expected = _rotated_dense(*inputs[:3], *MASKS[mask], jnp.float32)
    assert float(jnp.max(jnp.abs(forward - expected))) < 2e-5
    ours = _gradients(_rotating_per_head, MASKS[mask], inputs)
    reference = _gradients(_rotated_dense, MASKS[mask], inputs)
    for name, a, b in zip(("query", "key", "value"), ours, reference, strict=True):
        assert float(jnp.max(jnp.abs(a - b))) < 2e-5, name


def test_per_head_rotation_in_bfloat16_stays_close_to_float32(cpu_forward):
    inputs = _inputs((BATCH, LENGTH, HEADS, HEAD_DIM), seed=3)
    half = _gradients(_rotating_per_head, MASKS["padding"], inputs, jnp.bfloat16)
    full = _gradients(_rotated_dense, MASKS["padding"], inputs)
    for a, b in zip(half, full, strict=True):
        assert float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) < 3e-2


def test_per_head_backward_keeps_no_score_matrices_alive(cpu_forward):
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
