"""The training state (model + optimizer) built abstractly, then initialised straight into its shards.

Nothing is ever materialised whole on one device: the state's structure is traced with
``nnx.eval_shape``, every variable's sharding comes from its logical axes and the config's
rules, and initialisation runs under ``jax.jit`` with those output shardings.
"""

from __future__ import annotations

import jax
import optax
from flax import nnx

from esm_jax.model import ESM, AnyModelConfig, BiLSTMLM, model_class


class TrainState(nnx.Module):
    """The model (ESM or LSTM baseline) and its optimizer (AdamW moments and step count) as one graph."""

    def __init__(self, model: ESM | BiLSTMLM, tx: optax.GradientTransformation):
        self.model = model
        self.optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)


def _create(config: AnyModelConfig, tx: optax.GradientTransformation, seed: int) -> TrainState:
    # Shardings come from the logical names via jit's out_shardings, never eagerly from a mesh in context.
    with nnx.use_eager_sharding(False):
        return TrainState(model_class(config)(config, rngs=nnx.Rngs(seed)), tx)


def abstract_state(config: AnyModelConfig, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, nnx.State]:
    """Graph definition and shape-only state of a fresh :class:`TrainState`."""
    return nnx.split(nnx.eval_shape(lambda: _create(config, tx, 0)))


def initialise(config: AnyModelConfig, tx: optax.GradientTransformation, shardings: nnx.State, seed: int) -> nnx.State:
    """A freshly initialised state, each variable created directly with its sharding."""

    def init() -> nnx.State:
        return nnx.state(_create(config, tx, seed))

    return jax.jit(init, out_shardings=shardings)()


def large_unsharded(state: nnx.State, shardings: nnx.State, threshold: int = 1 << 20) -> list[str]:
    """Paths of variables with at least ``threshold`` elements that every device holds whole."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    found = []
    for (path, leaf), sharding in zip(leaves, jax.tree.leaves(shardings), strict=True):
        if leaf.size >= threshold and sharding.is_fully_replicated:
            found.append(jax.tree_util.keystr(path))
    return found
