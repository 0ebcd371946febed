"""The masked-language-model objective: cross-entropy at the selected positions only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def masked_lm_sums(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, ...]:
    """Summed cross-entropy (nats), number of target positions and number predicted correctly.

    Sums rather than means, so micro-batches and devices combine by adding and the final loss
    is weighted by real target counts, however the batch was split.
    """
    mask = loss_mask.astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return jnp.sum(nll * mask), jnp.sum(mask), jnp.sum(correct * mask)
