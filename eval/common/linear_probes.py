"""Linear probes over frozen representations: a softmax classifier per residue and a bilinear contact probe.

As ESM-1b's linear projections (Rives et al., PNAS 2021, Table 3): secondary structure by multinomial logistic
regression on each residue's representation; contacts by two linear projections of the residue representations
whose dot product is the contact logit, trained with the logistic loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from eval.structure.contacts.metrics import MIN_SEPARATION


class SoftmaxProbe(nnx.Module):
    """Multinomial logistic regression: ``logits = x W + b``."""

    def __init__(self, features: int, classes: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(features, classes, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(x)


def softmax_loss(probe: SoftmaxProbe, batch: dict) -> jax.Array:
    """Mean cross-entropy over residues where ``batch["mask"]`` is set, plus ``batch["l2"]/2 ‖W‖²``."""
    losses = optax.softmax_cross_entropy_with_integer_labels(probe(batch["x"]), batch["y"])
    mask = batch["mask"].astype(jnp.float32)
    penalty = 0.5 * batch["l2"] * jnp.sum(probe.linear.kernel[...] ** 2)
    return jnp.sum(losses * mask) / jnp.maximum(mask.sum(), 1.0) + penalty


class BilinearContactProbe(nnx.Module):
    """``logit_ij = ½ (a_i·b_j + a_j·b_i) + c`` with ``a = x U``, ``b = x V`` (two linear projections)."""

    def __init__(self, features: int, rank: int, *, rngs: nnx.Rngs):
        self.left = nnx.Linear(features, rank, use_bias=False, rngs=rngs)
        self.right = nnx.Linear(features, rank, use_bias=False, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros(()))

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(B, L, D)`` residue features to ``(B, L, L)`` symmetric contact logits."""
        a, b = self.left(x), self.right(x)
        logits = jnp.einsum("bik,bjk->bij", a, b)
        return 0.5 * (logits + jnp.swapaxes(logits, 1, 2)) + self.bias[...]


def bilinear_forward(probe: BilinearContactProbe, batch: dict) -> jax.Array:
    """Contact logits of a batch's residue features (the probe's forward in a training or scoring step)."""
    return probe(batch["x"])


def contact_pair_mask(valid: jax.Array, min_separation: int = MIN_SEPARATION) -> jax.Array:
    """``(B, L, L)`` float: pairs ``i < j`` at least ``min_separation`` apart whose residues are both valid."""
    length = valid.shape[-1]
    separation = jnp.arange(length)[None, :] - jnp.arange(length)[:, None]
    return (valid[:, :, None] & valid[:, None, :] & (separation >= min_separation)[None]).astype(jnp.float32)


def pair_logistic_loss(logits: jax.Array, batch: dict) -> jax.Array:
    """Mean binary cross-entropy of contact ``logits`` (B, L, L) over the scored pairs of ``batch``."""
    mask = contact_pair_mask(batch["valid"])
    losses = optax.sigmoid_binary_cross_entropy(logits, batch["contacts"].astype(jnp.float32))
    return jnp.sum(losses * mask) / jnp.maximum(mask.sum(), 1.0)
