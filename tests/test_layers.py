"""GELU with a hand-written gradient: the same values as exact GELU, the same gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from esm_jax.model.layers import gelu


def _exact_gelu_float64_gradient(x: np.ndarray, d_output: np.ndarray) -> np.ndarray:
    with jax.enable_x64():
        _, pullback = jax.vjp(lambda v: jax.nn.gelu(v, approximate=False), jnp.asarray(x, jnp.float64))
        return np.asarray(pullback(jnp.asarray(d_output, jnp.float64))[0])


def test_gelu_equals_exact_gelu_and_its_gradient_equals_float64_autodiff():
    rng = np.random.default_rng(1)
    x, d_output = (rng.standard_normal((4, 1920)).astype(np.float32) * 3.0 for _ in range(2))
    x[0, :5] = [-40.0, -6.0, 0.0, 6.0, 40.0]  # tails where the density underflows
    assert np.array_equal(np.asarray(gelu(x)), np.asarray(jax.nn.gelu(x, approximate=False)))
    (ours,) = jax.vjp(gelu, x)[1](jnp.asarray(d_output))
    exact = _exact_gelu_float64_gradient(x, d_output)
    np.testing.assert_allclose(np.asarray(ours), exact, atol=2e-6 * np.max(np.abs(exact)))


def test_gelu_gradient_keeps_the_input_dtype():
    x = jnp.linspace(-3, 3, 16, dtype=jnp.bfloat16)
    assert jax.grad(lambda v: jnp.sum(gelu(v).astype(jnp.float32)))(x).dtype == jnp.bfloat16
