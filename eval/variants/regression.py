"""A regression head on ESM representations for variant fitness, trained with optax in jitted JAX.

The head reads the final-layer representation ``h_i`` at each mutated (masked) position ``i``, standardises
it per feature with the training variants' mean and SD (fixed, not trained: final-layer states vary little
around large per-feature offsets, which leaves plain gradient descent badly conditioned), and maps it
linearly to a score per amino acid, ``s_i = W z_i + c`` (20 values), as the language-model head maps a
state to log-probabilities. A variant's predicted fitness is ``b + Σ_i s_i[mutant_i] − s_i[wild_type_i]``:
the supervised analogue of the masked-marginal log-ratio, so one site row serves all 19 substitutions there
and the same head applies to any protein (leave-one-protein-out). Training minimises the mean squared error
to standardised fitness with AdamW and a cosine-decayed learning rate.

Two regimes: :func:`fit_head` trains the head on fixed (frozen) representations, the backbone's parameters
never touched; :func:`fit_finetune` trains backbone and head together (the backbone with its own, smaller
learning rate), in the functional NNX style: the parameters are a pytree given to one jitted step.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from esm_jax.model import ESM
from eval.common.padding import pad_rows

NUM_AMINO_ACIDS = 20
_LOSS_EVERY = 25  # fine-tuning steps between loss reads for the progress bar (each read waits for the device)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; ``epochs``/``batch_size`` for the frozen head, ``finetune_*`` with the backbone.

    ``finetune_max_steps`` caps a fine-tuning fit (0: no cap) so that it costs the same on every assay size. Our
    choice of 150: the tiny demo model fine-tunes on BLAT_ECOLX at about 2.3 steps/s on 2 CPU cores, so a fit
    takes about a minute, where 2 epochs of its 4,000 training variants took 7 minutes.
    """

    epochs: int = 200
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-2
    finetune_epochs: int = 2
    finetune_batch_size: int = 8
    finetune_max_steps: int = 150
    backbone_learning_rate: float = 1e-5


@dataclasses.dataclass(frozen=True)
class VariantInputs:
    """Per-variant substitutions (N, K): amino-acid indices of wild type and mutant, and which slots are real."""

    wild_type: np.ndarray
    mutant: np.ndarray
    valid: np.ndarray


def init_head(key: jax.Array, dim: int) -> dict:
    """Small random ``W`` (D, 20), zero per-amino-acid offsets ``c`` and zero intercept ``b``."""
    return {
        "weight": jax.random.normal(key, (dim, NUM_AMINO_ACIDS), jnp.float32) * (0.01 / np.sqrt(dim)),
        "aa_bias": jnp.zeros((NUM_AMINO_ACIDS,), jnp.float32),
        "bias": jnp.zeros((), jnp.float32),
    }


def standardiser(hidden: np.ndarray, valid: np.ndarray) -> dict:
    """Per-feature ``shift`` and ``scale`` of the real slots of ``hidden`` (N, K, D); constant features keep scale 1."""
    real = np.asarray(hidden, dtype=np.float64)[np.asarray(valid)]
    spread = real.std(axis=0)
    return {
        "shift": jnp.asarray(real.mean(axis=0), jnp.float32),
        "scale": jnp.asarray(np.where(spread > 1e-8, spread, 1.0), jnp.float32),
    }


def head_predictions(params: dict, norm: dict, hidden: jax.Array, wild_type, mutant, valid) -> jax.Array:
    """Predicted (standardised) fitness (N,) from hidden states (N, K, D) at the mutated positions."""
    standard = (hidden - norm["shift"]) / norm["scale"]
    scores = jnp.einsum("nkd,da->nka", standard, params["weight"]) + params["aa_bias"]
    mutant_score = jnp.take_along_axis(scores, mutant[..., None], axis=-1)[..., 0]
    wild_score = jnp.take_along_axis(scores, wild_type[..., None], axis=-1)[..., 0]
    return params["bias"] + jnp.sum(jnp.where(valid, mutant_score - wild_score, 0.0), axis=-1)


_jitted_predictions = jax.jit(head_predictions)
_PREDICTION_ROWS = 512


def predict(head: dict, hidden: np.ndarray, inputs: VariantInputs) -> np.ndarray:
    """Predictions of a fitted ``head`` (``{"params", "norm"}``) for any number of variants.

    Compiled for row counts in steps of 512; the last partial block is padded, not dropped.
    """
    rows = _padded(len(hidden), _PREDICTION_ROWS)
    padded = [pad_rows(array, rows) for array in (hidden.astype(np.float32), *vars(inputs).values())]
    return np.asarray(_jitted_predictions(head["params"], head["norm"], *padded))[: len(hidden)]


def _squared_error(params, norm, hidden, wild_type, mutant, valid, target, weight) -> jax.Array:
    error = head_predictions(params, norm, hidden, wild_type, mutant, valid) - target
    return jnp.sum(weight * error**2) / jnp.maximum(jnp.sum(weight), 1.0)


def _padded(count: int, batch: int) -> int:
    return max(batch, -(-count // batch) * batch)


@functools.partial(jax.jit, static_argnames=("epochs", "batch_size"))
def _fit_head(params, norm, hidden, wild_type, mutant, valid, target, weight, key, rates, *, epochs, batch_size):
    batches = target.shape[0] // batch_size
    optimizer = optax.adamw(optax.cosine_decay_schedule(rates[0], epochs * batches), weight_decay=rates[1])

    def epoch(carry, epoch_key):
        order = jax.random.permutation(epoch_key, target.shape[0]).reshape(batches, batch_size)

        def step(carry, rows):
            params, opt_state = carry
            grads = jax.grad(_squared_error)(
                params, norm, hidden[rows], wild_type[rows], mutant[rows], valid[rows], target[rows], weight[rows]
            )
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, carry, order)[0], None

    (params, _), _ = jax.lax.scan(epoch, (params, optimizer.init(params)), jax.random.split(key, epochs))
    return params


def fit_head(
    hidden: np.ndarray, inputs: VariantInputs, target: np.ndarray, config: TrainConfig, key: jax.Array
) -> dict:
    """A head (``{"params", "norm"}``) trained on fixed representations ``hidden`` (N, K, D).

    The last partial batch is padded with zero-weight rows, not dropped.
    """
    rows = _padded(len(target), config.batch_size)
    norm = standardiser(hidden, inputs.valid)
    init_key, train_key = jax.random.split(key)
    params = _fit_head(
        init_head(init_key, hidden.shape[-1]),
        norm,
        pad_rows(hidden.astype(np.float32), rows),
        pad_rows(inputs.wild_type, rows),
        pad_rows(inputs.mutant, rows),
        pad_rows(inputs.valid, rows),
        pad_rows(target.astype(np.float32), rows),
        pad_rows(np.ones(len(target), np.float32), rows),
        train_key,
        jnp.array([config.learning_rate, config.weight_decay], jnp.float32),
        epochs=config.epochs,
        batch_size=config.batch_size,
    )
    return {"params": params, "norm": norm}


def _finetune_optimizer(rates, total_steps: int) -> optax.GradientTransformation:
    """AdamW, cosine-decayed over the run: the head's learning rate on the head, the backbone's on the backbone."""
    head_rate, backbone_rate, decay = rates[0], rates[1], rates[2]
    return optax.multi_transform(
        {
            "head": optax.adamw(optax.cosine_decay_schedule(head_rate, total_steps), weight_decay=decay),
            "backbone": optax.adamw(optax.cosine_decay_schedule(backbone_rate, total_steps), weight_decay=decay),
        },
        {"head": "head", "backbone": "backbone"},
    )


def _hidden_at(model: ESM, tokens: jax.Array, positions: jax.Array) -> jax.Array:
    last = model.config.num_layers
    hidden = model.forward(tokens, (last,), lean=True)["representations"][last]
    return jnp.take_along_axis(hidden, positions[:, :, None], axis=1)


@functools.partial(jax.jit, static_argnums=(0, 6), donate_argnums=(1, 2))
def _finetune_step(graphdef, trainable, opt_state, rest, batch, rates, total_steps, norm):
    tokens, positions, wild_type, mutant, valid, target, weight = batch

    def loss(trainable):
        model = nnx.merge(graphdef, trainable["backbone"], rest)
        hidden = _hidden_at(model, tokens, positions)
        return _squared_error(trainable["head"], norm, hidden, wild_type, mutant, valid, target, weight)

    value, grads = jax.value_and_grad(loss)(trainable)
    updates, opt_state = _finetune_optimizer(rates, total_steps).update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, value


@dataclasses.dataclass(frozen=True)
class FinetuneData:
    """Training variants as model inputs: site rows (S, T) with BOS/EOS/padding and per-variant arrays.

    ``norm`` standardises the representations (from the backbone before fine-tuning; kept fixed).
    """

    site_tokens: np.ndarray
    site_positions: np.ndarray  # (S, K) token indices of the masked positions (0 where unused)
    site_of: np.ndarray
    inputs: VariantInputs
    target: np.ndarray
    norm: dict


def fit_finetune(
    model: ESM,
    data: FinetuneData,
    config: TrainConfig,
    key: jax.Array,
    *,
    head: dict | None = None,
    show_progress: bool = False,
) -> tuple[ESM, dict]:
    """Backbone and head trained together; a fine-tuned copy of ``model`` (which is unchanged) and the head.

    ``head``: the head's starting parameters, e.g. a head fitted on the frozen representations (default: random).
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    init_key, order_key = jax.random.split(key)
    width = model.representation_width(model.num_layers)
    start = head if head is not None else init_head(init_key, width)
    trainable = {"backbone": jax.tree.map(jnp.array, params), "head": start}
    rates = jnp.array([config.learning_rate, config.backbone_learning_rate, config.weight_decay], jnp.float32)
    count, size = len(data.target), config.finetune_batch_size
    total_steps = finetune_steps(count, config)
    opt_state = _finetune_optimizer(rates, total_steps).init(trainable)
    generator = np.random.default_rng(int(jax.random.randint(order_key, (), 0, 2**31 - 1)))
    with tqdm(total=total_steps, desc="fine-tune", unit="step", disable=not show_progress) as bar:
        for chosen in epoch_batches(generator, count, size, total_steps):
            batch = _finetune_batch(data, chosen, size)
            trainable, opt_state, loss = _finetune_step(
                graphdef, trainable, opt_state, rest, batch, rates, total_steps, data.norm
            )
            bar.update()
            if show_progress and (bar.n % _LOSS_EVERY == 0 or bar.n == total_steps):
                bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
    head = {"params": trainable["head"], "norm": data.norm}
    return nnx.merge(graphdef, trainable["backbone"], rest), head


def finetune_steps(count: int, config: TrainConfig) -> int:
    """Optimiser steps of a fine-tuning fit on ``count`` variants: ``finetune_epochs`` epochs, at most the cap."""
    steps = config.finetune_epochs * -(-count // config.finetune_batch_size)
    return min(steps, config.finetune_max_steps) if config.finetune_max_steps > 0 else steps


def epoch_batches(generator: np.random.Generator, count: int, size: int, steps: int) -> Iterator[np.ndarray]:
    """``steps`` batches of variant indices, each epoch a fresh permutation (the last batch of one may be short)."""
    done = 0
    while True:
        order = generator.permutation(count)
        for start in range(0, count, size):
            if done == steps:
                return
            yield order[start : start + size]
            done += 1


def _finetune_batch(data: FinetuneData, chosen: np.ndarray, size: int) -> tuple:
    """Arrays of ``size`` rows for the variants ``chosen``; missing rows repeat variant 0 with weight 0."""
    weight = np.zeros(size, np.float32)
    weight[: len(chosen)] = 1.0
    rows = np.concatenate([chosen, np.zeros(size - len(chosen), dtype=chosen.dtype)])
    sites = data.site_of[rows]
    return (
        data.site_tokens[sites],
        data.site_positions[sites],
        data.inputs.wild_type[rows],
        data.inputs.mutant[rows],
        data.inputs.valid[rows],
        data.target[rows].astype(np.float32),
        weight,
    )
