"""Fit probe modules over frozen features: jitted optax steps over an NNX module's parameters only.

Probes (linear or deep) are Flax NNX modules; their parameters are split out and optimised in a plain
``jax.jit`` step (the backbone is not involved: its features were computed beforehand). Batches are padded
protein groups from the shared planner (:func:`protein_batches`), each with a mask, so every protein is used
and padding never contributes to a loss or a score.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from esm_jax.inference.batching import plan_batches

Batch = dict[str, np.ndarray]
Loss = Callable[[nnx.Module, Batch], jax.Array]


def protein_batches(lengths: Sequence[int], tokens_per_batch: int = 4096) -> Iterator[tuple[tuple[int, ...], int, int]]:
    """``(indices, rows, width)`` groups covering every protein once, shaped as the embedding engine's batches.

    ``width`` is the padded residue count and ``rows`` the padded protein count (rows past ``len(indices)`` are
    empty padding).
    """
    for batch in plan_batches([[0] * length for length in lengths], tokens_per_batch):
        rows, width = batch.tokens.shape
        yield batch.indices, rows, width - 2


@functools.cache
def _adamw(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    return optax.adamw(learning_rate, weight_decay=weight_decay)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _adam_step(graphdef, loss: Loss, tx, params, rest, opt_state, batch):
    value, grads = jax.value_and_grad(lambda p: loss(nnx.merge(graphdef, p, rest), batch))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


def fit_adam(
    model: nnx.Module,
    loss: Loss,
    batches: Sequence[Batch],
    *,
    steps: int,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    desc: str = "fit",
) -> list[float]:
    """Train ``model`` in place for ``steps`` AdamW steps cycling through ``batches`` in a seeded order.

    ``loss`` should be a module-level function (or a value-comparable object): the compiled step is keyed on it,
    so refits of the same architecture (folds, seeds) reuse one compilation per batch shape.
    """
    tx = _adamw(float(learning_rate), float(weight_decay))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params)
    batches = jax.device_put(list(batches))
    rng = np.random.default_rng(seed)
    order: list[int] = []
    losses, started, last_report = [], time.perf_counter(), time.perf_counter()
    for number in range(1, steps + 1):
        if not order:
            order = list(rng.permutation(len(batches)))
        params, opt_state, value = _adam_step(graphdef, loss, tx, params, rest, opt_state, batches[order.pop()])
        losses.append(value)
        if time.perf_counter() - last_report > 15:
            last_report = time.perf_counter()
            rate = number / (last_report - started)
            print(f"{desc}: step {number}/{steps}, loss {float(value):.4f}, {rate:.1f} steps/s", flush=True)
    nnx.update(model, params)
    return [float(v) for v in losses]


_SOLVER = optax.lbfgs()


@functools.partial(jax.jit, static_argnums=(0, 1))
def _lbfgs_step(graphdef, loss: Loss, params, rest, state, batch):
    def objective(p):
        return loss(nnx.merge(graphdef, p, rest), batch)

    value, grad = optax.value_and_grad_from_state(objective)(params, state=state)
    updates, state = _SOLVER.update(grad, state, params, value=value, grad=grad, value_fn=objective)
    return optax.apply_updates(params, updates), state, value, optax.tree.norm(grad)


def fit_lbfgs(model: nnx.Module, loss: Loss, batch: Batch, *, iterations: int = 300, tolerance: float = 1e-6) -> int:
    """Minimise a smooth full-batch ``loss`` over ``model``'s parameters by L-BFGS; returns iterations used.

    As for :func:`fit_adam`, ``loss`` should be module-level so that the compiled step is reused.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    batch = jax.tree.map(jnp.asarray, batch)
    state, previous, used = _SOLVER.init(params), np.inf, 0
    while used < iterations:
        params, state, value, gradient_norm = _lbfgs_step(graphdef, loss, params, rest, state, batch)
        used, value = used + 1, float(value)
        if abs(previous - value) <= tolerance * max(1.0, abs(value)) or float(gradient_norm) < tolerance:
            break
        previous = value
    nnx.update(model, params)
    return used
