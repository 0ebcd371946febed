"""Orbax checkpoints of a training run: state, data-iterator position and run metadata, saved together.

Saves are asynchronous (training continues while files are written), happen every
``interval`` steps, keep the newest ``keep`` checkpoints, and are forced when the process is
asked to stop (SIGTERM, or a TPU preemption notice). A checkpoint restores onto any mesh: the
caller passes the shardings it wants the arrays to land in.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from esm_jax.checkpoints.native import sharded_targets
from esm_jax.errors import CheckpointError
from esm_jax.model import ESM, BiLSTMLM, abstract_model, config_from_dict


class StopRequest:
    """Set by SIGTERM (or SIGINT); the training loop checks it between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        self.signal: str | None = None

    def install(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        del frame
        self.signal = signal.Signals(signum).name
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


class RunCheckpoints:
    """The checkpoints of one run, in ``<workdir>/checkpoints``."""

    def __init__(self, workdir: str | os.PathLike, interval: int, keep: int, asynchronous: bool = True):
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=interval, max_to_keep=keep, enable_async_checkpointing=asynchronous
        )
        self.directory = Path(workdir).absolute() / "checkpoints"
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: nnx.State, data_state: dict, meta: dict, *, force: bool = False) -> bool:
        """Start saving (returns at once when asynchronous); ``False`` if this step is not due."""
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(nnx.to_pure_dict(state)),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta),
            ),
            force=force,
        )

    def restore(self, step: int, target: nnx.State) -> tuple[nnx.State, dict, dict]:
        """State at ``step`` laid out like ``target`` (shape-only leaves carrying shardings)."""
        pure_target = nnx.to_pure_dict(target)
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(pure_target),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        state = jax.tree.map(lambda x: x, target)
        nnx.replace_by_pure_dict(state, restored["state"])
        return state, restored["data"], restored["meta"]

    def preemption_due(self, step: int) -> bool:
        """Whether the job received a preemption notice that all hosts agree to act on now."""
        return self.manager.reached_preemption(step)

    def wait(self) -> None:
        """Block until every pending save is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def is_training_run(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a training workdir (``config.json`` and ``checkpoints/``)."""
    path = Path(path)
    return (path / "config.json").is_file() and (path / "checkpoints").is_dir()


def saved_steps(workdir: str | os.PathLike) -> list[int]:
    """The steps of a training run's checkpoints on disk, oldest first."""
    manager = ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", item_names=("state", "data", "meta"))
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
    manager = ocp.CheckpointManager(workdir / "checkpoints", item_names=("state", "data", "meta"))
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
