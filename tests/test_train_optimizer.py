"""The optimiser's gradient clipping: optax's rule and state, computed as one product per gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from esm_jax.train.optimizer import clip_by_global_norm
from esm_jax.train.step import _scaled_gradients


def _gradients(scale: float) -> dict[str, jax.Array]:
    rng = np.random.default_rng(0)
    return {"kernel": jnp.asarray(scale * rng.standard_normal((6, 5)), jnp.float32), "bias": jnp.full((5,), scale)}


@pytest.mark.parametrize("scale", [0.01, 10.0])  # below the bound (left alone) and above it (scaled down)
def test_clipping_equals_optax_clip_by_global_norm(scale):
    grads = _gradients(scale)
    ours, theirs = clip_by_global_norm(1.0), optax.clip_by_global_norm(1.0)
    assert ours.init(grads) == theirs.init(grads)  # the same (empty) state: checkpoints keep their layout
    clipped, _ = ours.update(grads, ours.init(grads))
    expected, _ = theirs.update(grads, theirs.init(grads))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), clipped, expected)
    assert float(optax.tree.norm(clipped)) == pytest.approx(min(float(optax.tree.norm(grads)), 1.0), rel=1e-6)


def test_scaled_gradients_are_the_gradients_of_the_scaled_loss():
    params = _gradients(1.0)

    def loss_sums(p):
        loss = jnp.sum(jnp.sin(p["kernel"]) * p["bias"])
        return loss, (jnp.asarray(3.0),)

    (loss, aux), grads = _scaled_gradients(loss_sums, params, jnp.asarray(0.25))
    expected = jax.grad(lambda p: 0.25 * loss_sums(p)[0])(params)
    assert float(loss) == pytest.approx(float(loss_sums(params)[0])) and float(aux[0]) == 3.0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), grads, expected)
