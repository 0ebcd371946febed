"""A training run's folder read as a model: which folders are runs, their saved steps, a step's model.

A run (``esm-jax train --workdir DIR``) keeps ``config.json`` and Orbax checkpoints in
``DIR/checkpoints``, each with the items below. Inference and evaluation load models from runs
through this module alone; the trainer (:mod:`esm_jax.train.checkpointing`) writes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import ml_collections
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from esm_jax.checkpoints.native import sharded_targets
from esm_jax.errors import CheckpointError
from esm_jax.model import ESM, BiLSTMLM, abstract_model, config_from_dict

CHECKPOINTS = "checkpoints"  # the run folder's checkpoint directory
RUN_ITEMS = ("state", "data", "meta")  # model and optimizer state, data-iterator position, run metadata


def is_training_run(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a training workdir (``config.json`` and ``checkpoints/``)."""
    path = Path(path)
    return (path / "config.json").is_file() and (path / CHECKPOINTS).is_dir()


def saved_steps(workdir: str | os.PathLike) -> list[int]:
    """The steps of a training run's checkpoints on disk, oldest first."""
    manager = ocp.CheckpointManager(Path(workdir).absolute() / CHECKPOINTS, item_names=RUN_ITEMS)
    try:
        return sorted(int(step) for step in manager.all_steps())
    finally:
        manager.close()


def load_trained_model(
    workdir: str | os.PathLike, step: int | None = None, *, mesh: Mesh | None = None, **runtime_options
) -> ESM | BiLSTMLM:
    """The model (without optimizer state) of a training run's newest checkpoint, or of ``step``.

    ``runtime_options`` (``compute_dtype``, ``scan_layers``, ...) change how it runs, not its weights; an
    LSTM baseline run gives a :class:`BiLSTMLM`, which has ``compute_dtype`` only. With a ``mesh`` an ESM
    model's variables are read straight into their shards and it runs its batches over the mesh.
    """
    workdir = Path(workdir).absolute()
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    model = abstract_model(config_from_dict(config.model.to_dict()).replace(**runtime_options))
    mesh = mesh if isinstance(model, ESM) else None
    state = nnx.state(model)
    target = sharded_targets(state, mesh)
    manager = ocp.CheckpointManager(workdir / CHECKPOINTS, item_names=RUN_ITEMS)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"{workdir}: the run has no checkpoint yet")
    item = {"model": target}
    restore_args = ocp.checkpoint_utils.construct_restore_args(item)
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(item, restore_args, partial_restore=True))
    )
    nnx.replace_by_pure_dict(state, restored["state"]["model"])
    nnx.update(model, state)
    if mesh is not None:
        model.mesh = mesh
    return model
