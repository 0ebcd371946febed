"""The jitted training and evaluation steps, with explicit shardings and a donated state.

A batch is a dict of global arrays ``tokens``, ``targets`` and ``loss_mask`` of shape
(rows, T), plus ``segment_ids`` when rows are packed with several sequences
(:mod:`esm_jax.model.packing`), split into ``accumulation_steps`` micro-batches (row ``i`` goes to micro-batch
``i mod accumulation_steps``, so each device keeps its rows). Gradients of the summed loss are
added over micro-batches, each scaled by one over the whole batch's number of target positions, so every
masked token weighs the same however the batch was cut. A step whose loss or gradient is not
finite leaves the state unchanged and reports ``finite = 0``.

Given the masking rule its batches come from, the step runs the last block and the language-model head only
at the loss positions (:meth:`esm_jax.model.esm.ESM.final_hidden_at`): the rule bounds how many a row of
width T can have, so a static number of positions per row holds them all. A (micro-)batch with a row beyond
that bound, or with packed rows, takes the whole forward instead; both give the same loss and gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from esm_jax.alphabet import Alphabet
from esm_jax.masking_rule import MaskingRule
from esm_jax.model.packing import segment_sums
from esm_jax.sharding import ROW_AXES, constrain
from esm_jax.train.loss import masked_lm_sums

PADDING_IDX = Alphabet().padding_idx

BATCH_KEYS = ("tokens", "targets", "loss_mask")
PACKED_KEY = "segment_ids"


def model_inputs(batch: dict) -> list[str]:
    """The keys of ``batch`` a step reads: the MLM arrays, and the segment ids of packed rows."""
    return [*BATCH_KEYS, PACKED_KEY] if PACKED_KEY in batch else list(BATCH_KEYS)


def _micro_batches(batch: dict, steps: int) -> dict:
    def split(x):
        micro = jnp.swapaxes(x.reshape(x.shape[0] // steps, steps, *x.shape[1:]), 0, 1)
        return jax.vmap(lambda rows: constrain(rows, ROW_AXES))(micro)

    return {key: split(batch[key]) for key in model_inputs(batch)}


def _logits(model, batch: dict) -> jax.Array:
    if PACKED_KEY in batch:
        return model.forward(batch["tokens"], segment_ids=batch[PACKED_KEY])["logits"]
    return model.forward(batch["tokens"])["logits"]


def _loss_sums(params: nnx.State, graphdef: nnx.GraphDef, rest: nnx.State, batch: dict):
    model = nnx.merge(graphdef, params, rest)
    loss_sum, count, correct = masked_lm_sums(_logits(model, batch), batch["targets"], batch["loss_mask"])
    return loss_sum, (count, correct)


def _loss_sums_at_targets(params: nnx.State, graphdef: nnx.GraphDef, rest: nnx.State, batch: dict, capacity: int):
    """``_loss_sums`` with the last block and head run at ``capacity`` positions per row: its loss positions first.

    Exact when no row has more than ``capacity`` loss positions: every one of them is among those read, and the
    rest are read with weight 0.
    """
    model = nnx.merge(graphdef, params, rest)
    _, positions = jax.lax.top_k((batch["loss_mask"] != 0).astype(jnp.int32), capacity)
    logits = model.logits_at(batch["tokens"], positions)
    targets, mask = (jnp.take_along_axis(batch[key], positions, axis=1) for key in ("targets", "loss_mask"))
    loss_sum, count, correct = masked_lm_sums(logits, targets, mask)
    return loss_sum, (count, correct)


def _target_capacity(batch: dict, rule: MaskingRule | None) -> int | None:
    """Loss positions per row the at-targets path reads for ``batch``, or None where it does not apply."""
    if rule is None or PACKED_KEY in batch:
        return None
    return rule.most_selected(batch["tokens"].shape[1] - 2)  # rows hold <cls>, residues, <eos>


def _scaled_gradients(loss_sums: Callable, params: nnx.State, scale: jax.Array):
    """``((loss_sum, aux), grads)`` of ``loss_sums(params)``, the gradients those of ``scale · loss_sum``.

    The backward pass starts from ``scale`` instead of 1: dividing the gradients afterwards would be one more
    pass over all of them, which XLA writes to a buffer of its own (division is not folded into several users).
    """
    loss_sum, pullback, aux = jax.vjp(loss_sums, params, has_aux=True)
    (grads,) = pullback(scale.astype(loss_sum.dtype))
    return (loss_sum, aux), grads


def _gradients(
    params: nnx.State, graphdef: nnx.GraphDef, rest: nnx.State, batch: dict, rule: MaskingRule | None, scale: jax.Array
):
    """``((loss_sum, (count, correct)), grads)`` of one (micro-)batch, at the targets only where they fit; the
    gradients are those of ``scale · loss_sum``."""

    def whole():
        return _scaled_gradients(lambda p: _loss_sums(p, graphdef, rest, batch), params, scale)

    capacity = _target_capacity(batch, rule)
    if capacity is None:
        return whole()

    def at_targets():
        return _scaled_gradients(lambda p: _loss_sums_at_targets(p, graphdef, rest, batch, capacity), params, scale)

    fits = jnp.all(jnp.sum(batch["loss_mask"] != 0, axis=1) <= capacity)
    # The branch chooses between two gradient computations rather than sitting inside one: differentiating
    # through a branch would keep (zero-filled) residuals of the whole forward on the at-targets path too.
    return jax.lax.cond(fits, at_targets, whole)


def token_counts(batch: dict) -> dict[str, jax.Array]:
    """Real (non-padding) tokens, all tokens, and attention pairs: the sum of squared sequence lengths.

    Model FLOPs follow from real tokens and attention pairs alone, so MFU counts neither padding nor
    the attention between sequences packed in one row.
    """
    tokens = batch["tokens"]
    real = tokens != PADDING_IDX
    if PACKED_KEY in batch:
        lengths = segment_sums(real.astype(jnp.int32), batch[PACKED_KEY])
    else:
        lengths = jnp.broadcast_to(jnp.sum(real, axis=1, keepdims=True), tokens.shape)
    return {
        "tokens": jnp.sum(real).astype(jnp.float32),
        "padded_tokens": jnp.asarray(tokens.size, jnp.float32),
        "attention_pairs": jnp.sum(jnp.where(real, lengths, 0).astype(jnp.float32)),
    }


def make_train_step(
    graphdef: nnx.GraphDef,
    state_shardings: nnx.State,
    batch_sharding: NamedSharding,
    accumulation_steps: int,
    schedule: optax.Schedule,
    masking_rule: MaskingRule | None = None,
) -> Callable:
    """``step(state, batch) -> (state, metrics)``; ``state`` is donated.

    ``masking_rule`` is the rule the batches were masked with; given it, the last block runs at the loss positions.
    """
    replicated = NamedSharding(batch_sharding.mesh, PartitionSpec())

    def train_step(state: nnx.State, batch: dict):
        train_state = nnx.merge(graphdef, state)
        model_graphdef, params, rest = nnx.split(train_state.model, nnx.Param, ...)

        # Every target position in the batch, known before any gradient: the gradients come out as the mean's.
        count = jnp.maximum(jnp.sum(batch["loss_mask"].astype(jnp.float32)), 1.0)
        scale = 1.0 / count

        def micro_step(carry, micro_batch):
            grads, loss_sum, correct = carry
            (loss, (_, c)), g = _gradients(params, model_graphdef, rest, micro_batch, masking_rule, scale)
            return (jax.tree.map(jnp.add, grads, g), loss_sum + loss, correct + c), None

        if accumulation_steps == 1:  # no zero-filled accumulator: on CPUs it costs a pass over every gradient
            (loss_sum, (_, correct)), grads = _gradients(params, model_graphdef, rest, batch, masking_rule, scale)
        else:
            zeros = jax.tree.map(jnp.zeros_like, params)
            start = (zeros, jnp.zeros(()), jnp.zeros(()))
            (grads, loss_sum, correct), _ = jax.lax.scan(micro_step, start, _micro_batches(batch, accumulation_steps))
        loss = loss_sum / count
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        step = train_state.optimizer.step[...]
        train_state.optimizer.update(train_state.model, grads)
        updated = nnx.state(train_state)
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
        metrics = {
            "loss_sum": loss_sum,
            "targets": count,
            "correct": correct,
            "grad_norm": grad_norm,
            "learning_rate": schedule(step),
            "finite": finite.astype(jnp.float32),
            **token_counts(batch),
        }
        return new_state, metrics

    return jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )


def make_eval_step(graphdef: nnx.GraphDef, state_shardings: nnx.State, batch_sharding: NamedSharding) -> Callable:
    """``step(state, batch) -> sums`` of loss, targets, correct predictions and targets per token id."""
    replicated = NamedSharding(batch_sharding.mesh, PartitionSpec())

    def eval_step(state: nnx.State, batch: dict):
        model = nnx.merge(graphdef, state).model
        logits = _logits(model, batch)
        loss_sum, count, correct = masked_lm_sums(logits, batch["targets"], batch["loss_mask"])
        mask = batch["loss_mask"].astype(jnp.float32).ravel()
        per_token = jax.ops.segment_sum(mask, batch["targets"].ravel(), num_segments=logits.shape[-1])
        return {"loss_sum": loss_sum, "targets": count, "correct": correct, "target_counts": per_token}

    return jax.jit(eval_step, in_shardings=(state_shardings, batch_sharding), out_shardings=replicated)
