"""Orbax checkpoints of a training run: state, data-iterator position and run metadata, saved together.

Saves are asynchronous (training continues while files are written), happen every
``interval`` steps, keep the newest ``keep`` checkpoints, and are forced when the process is
asked to stop (SIGTERM, or a TPU preemption notice). A checkpoint restores onto any mesh: the
caller passes the shardings it wants the arrays to land in. Reading a finished run's model for
inference is :mod:`esm_jax.checkpoints.training_run`'s job.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from esm_jax.checkpoints.training_run import CHECKPOINTS, RUN_ITEMS


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
        self.directory = Path(workdir).absolute() / CHECKPOINTS
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=RUN_ITEMS)

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

    def meta(self, step: int) -> dict:
        """The run metadata saved with ``step`` (its model config among it), without reading the state."""
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def preemption_due(self, step: int) -> bool:
        """Whether the job received a preemption notice that all hosts agree to act on now."""
        return self.manager.reached_preemption(step)

    def wait(self) -> None:
        """Block until every pending save is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
