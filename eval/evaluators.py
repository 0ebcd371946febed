"""Evaluation tasks as training evaluators: ``config.evals.NAME`` runs task NAME on the live model at its steps.

The name is the task's CLI name with ``_`` for ``-`` (``contacts_linear``), or any label with a ``task`` key.
The other keys are the task's options (checked against its options dataclass; ``data`` names the data folder).
Task outputs go to ``WORKDIR/evals/step_N/NAME``; the headline numbers return to the trainer, which logs them.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flax import nnx

from data_pipeline.input.training import dataset_dir
from data_pipeline.layout import data_root
from esm_jax.train.evaluators import RunContext
from eval.common.task import Backbone, options_from_config
from eval.tasks import get_task


def task_evaluator(name: str, entry: Mapping[str, Any], context: RunContext) -> Callable[[nnx.State, int], dict]:
    """The evaluator for ``config.evals[name]`` (see the module docstring)."""
    values = dict(entry)
    task = get_task(values.pop("task", name.replace("_", "-")))
    data = Path(values.pop("data", None) or data_root())
    options = options_from_config(task.options, values, where=f"config.evals.{name}")
    if "dataset" in {f.name for f in dataclasses.fields(options)} and options.dataset is None:
        options = dataclasses.replace(options, dataset=training_dataset(context))
    run_task = task.on_training_model or task.run

    def run(state: nnx.State, step: int) -> dict[str, float]:
        backbone = Backbone(f"{context.workdir} step {step}", model=context.model(state))
        if context.lead:
            return run_task(backbone, data, context.workdir / "evals" / f"step_{step}" / name, options).scalars()
        with tempfile.TemporaryDirectory() as scratch:  # every process computes; process 0 keeps the files
            return run_task(backbone, data, Path(scratch), options).scalars()

    return run


def training_dataset(context: RunContext) -> Path:
    """The run's own built dataset, whose held-out split language-model evaluators score."""
    return dataset_dir(context.config.data)
