"""AdamW with gradient clipping and a warmup-then-decay learning-rate schedule, from a config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

SCHEDULES = ("linear", "cosine", "inverse_sqrt", "constant")


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to ``peak_learning_rate`` then the named decay.

    ``linear`` and ``cosine`` end at ``end_learning_rate`` after ``total_steps``; ``inverse_sqrt``
    is fairseq's ``peak · sqrt(warmup / step)``; ``constant`` stays at the peak.
    """
    peak, warmup = config.peak_learning_rate, max(int(config.warmup_steps), 1)
    decay_steps = max(total_steps - warmup, 1)
    warm = optax.linear_schedule(0.0, peak, warmup)
    if config.schedule == "linear":
        decay = optax.linear_schedule(peak, config.end_learning_rate, decay_steps)
    elif config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.end_learning_rate / peak)
    elif config.schedule == "inverse_sqrt":
        decay = lambda step: peak * jnp.sqrt(warmup / (step + warmup))  # noqa: E731
    elif config.schedule == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"optimizer.schedule must be one of {SCHEDULES}, got {config.schedule!r}")
    return optax.join_schedules([warm, decay], [warmup])


def _decay_mask(params):
    """Weight decay on matrices only (not biases, LayerNorm scales or the rotary buffer)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm``'s rule (and its empty state), the gradients multiplied by one scalar.

    optax divides every gradient by the norm; XLA writes such a quotient, read by both of AdamW's moment updates,
    to a buffer of its own: one more pass over all gradients. A product by a scalar it computes inside each update.
    """

    def update(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        factor = jnp.where(norm < max_norm, 1.0, max_norm / norm)
        return jax.tree.map(lambda t: t * factor.astype(t.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """``clip_by_global_norm`` followed by AdamW on the schedule above."""
    return optax.chain(
        clip_by_global_norm(config.clip_grad_norm),
        optax.adamw(
            learning_rate_schedule(config, total_steps),
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=config.weight_decay,
            mask=_decay_mask,
        ),
    )
