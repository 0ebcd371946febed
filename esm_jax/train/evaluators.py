"""Evaluations run on the live training state at their configured steps, as big_vision's evaluators are.

``config.evals`` maps a name to ``{every: N, ...options}``. ``heldout`` is the trainer's own held-out ECE
(:func:`heldout_evaluator`); every other name is built by ``config.evaluator_factory`` (``module:function``,
taking the name, the options and a :class:`RunContext`), so this package never imports the evaluation code.
Each evaluator returns named numbers, which the trainer writes to ``metrics.jsonl`` and TensorBoard under
the evaluator's name.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from esm_jax.errors import EsmJaxError
from esm_jax.mesh import check_batch_divisible
from esm_jax.model import ESM, BiLSTMLM
from esm_jax.train.step import model_inputs

HELDOUT = "heldout"


def load_factory(path: str) -> Callable:
    """The function ``module:function`` named by a config."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def global_batch(local: dict, sharding, accumulation_steps: int, mesh: Mesh) -> dict:
    """This process's rows of a batch, assembled into arrays over every process's devices."""
    rows = local["tokens"].shape[0] * jax.process_count()
    check_batch_divisible(rows, accumulation_steps, mesh, f"batch of shape {local['tokens'].shape}")
    return {
        key: jax.make_array_from_process_local_data(sharding, np.asarray(local[key]), (rows, *local[key].shape[1:]))
        for key in model_inputs(local)
    }


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What an evaluator may use of the training run."""

    config: ml_collections.ConfigDict
    graphdef: nnx.GraphDef
    mesh: Mesh
    workdir: Path
    lead: bool

    def model(self, state: nnx.State) -> ESM | BiLSTMLM:
        """The model held by a training state; ESM models run their batches over the training mesh."""
        model = nnx.merge(self.graphdef, state).model
        if isinstance(model, ESM) and self.mesh.size > 1:
            model.mesh = self.mesh
        return model


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """A named evaluation of the training state, due every ``every`` steps and at the last step."""

    name: str
    every: int
    run: Callable[[nnx.State, int], dict[str, float]]

    def due(self, step: int, total_steps: int) -> bool:
        return step % self.every == 0 or step == total_steps


def build_evaluators(config: ml_collections.ConfigDict, context: RunContext, eval_step, sharding) -> list[Evaluator]:
    """Every evaluator of ``config.evals``, in its order."""
    evaluators = []
    for name, entry in config.get("evals", {}).items():
        options = dict(entry)
        every = options.pop("every", None)
        if not isinstance(every, int) or every < 1:
            raise EsmJaxError(f"config.evals.{name}.every must be a positive number of steps, got {every!r}")
        if name == HELDOUT:
            if options:
                raise EsmJaxError(f"config.evals.{HELDOUT} takes only 'every', got {', '.join(sorted(options))}")
            run = heldout_evaluator(config, eval_step, sharding, context.mesh)
        else:
            run = load_factory(config.evaluator_factory)(name, options, context)
        evaluators.append(Evaluator(name, every, run))
    return evaluators


def heldout_evaluator(config: ml_collections.ConfigDict, eval_step, sharding, mesh: Mesh):
    """The trainer's held-out masked-LM evaluation (see :func:`heldout_metrics`) as an evaluator."""

    def run(state: nnx.State, step: int) -> dict[str, float]:
        return heldout_metrics(config, state, eval_step, sharding, mesh)

    return run


def heldout_metrics(config: ml_collections.ConfigDict, state: nnx.State, eval_step, sharding, mesh: Mesh) -> dict:
    """Held-out ECE, masked accuracy and ``target_unigram_ece``: the ECE of the unigram model fitted to these very
    masked targets (exp of their letter entropy), the best any unigram can score on them. It is not eval's
    ``unigram_ece`` (an add-one unigram fitted on the training split, ``esm-jax eval language-model``)."""
    batches = load_factory(config.data.factory)(config.data, "validation")
    totals = None
    try:
        for index, local in enumerate(batches):
            if config.data.eval_batches and index >= config.data.eval_batches:
                break
            sums = eval_step(state, global_batch(local, sharding, 1, mesh))
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    finally:
        batches.close()
    if totals is None:
        raise EsmJaxError("the validation split is empty: hold out some clusters (data.heldout_fraction)")
    totals = jax.device_get(totals)
    targets = max(float(totals["targets"]), 1.0)
    frequencies = np.asarray(totals["target_counts"], dtype=np.float64) / targets
    unigram = -float(np.sum(frequencies[frequencies > 0] * np.log(frequencies[frequencies > 0])))
    loss = float(totals["loss_sum"]) / targets
    return {
        "loss": loss,
        "ece": math.exp(loss),
        "masked_accuracy": float(totals["correct"]) / targets,
        "target_unigram_ece": math.exp(unigram),
        "targets": int(targets),
    }
