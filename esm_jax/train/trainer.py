"""The pretraining loop, in labelled stages: mesh, state, data, steps, loop, wrap-up.

Rerunning with the same workdir resumes from the newest checkpoint: the same parameters,
optimizer state and data-iterator position, so the run continues exactly as if it had never
stopped. The data source is named by ``config.data.factory`` (``"module:function"``) so this
package never imports the data pipeline itself.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

from esm_jax.errors import EsmJaxError
from esm_jax.files import write_json_atomically, write_text_atomically
from esm_jax.mesh import batch_sharding, build_mesh, check_batch_divisible
from esm_jax.model import AnyModelConfig, config_from_dict
from esm_jax.plots import learning_curve_png
from esm_jax.sharding import state_shardings, with_shardings
from esm_jax.train.checkpointing import RunCheckpoints, StopRequest
from esm_jax.train.metrics import MetricsLog, peak_flops
from esm_jax.train.optimizer import learning_rate_schedule, make_optimizer
from esm_jax.train.state import abstract_state, initialise, large_unsharded
from esm_jax.train.step import make_eval_step, make_train_step, model_inputs


class TrainingDiverged(EsmJaxError, RuntimeError):
    """The loss or gradient became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    step: int
    stopped_early: bool
    last_train: dict | None
    last_heldout: dict | None
    workdir: Path
    state: nnx.State


def load_factory(path: str) -> Callable:
    """The data source ``module:function`` named by a config."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def model_config_of(config: ml_collections.ConfigDict) -> AnyModelConfig:
    """The run's model config; ``config.model.kind`` (absent for Transformers) selects the module."""
    return config_from_dict(config.model.to_dict())


def _global_batch(local: dict, sharding, accumulation_steps: int, mesh) -> dict:
    rows = local["tokens"].shape[0] * jax.process_count()
    check_batch_divisible(rows, accumulation_steps, mesh, f"batch of shape {local['tokens'].shape}")
    return {
        key: jax.make_array_from_process_local_data(sharding, np.asarray(local[key]), (rows, *local[key].shape[1:]))
        for key in model_inputs(local)
    }


def evaluate(config, state, eval_step, sharding, mesh) -> dict:
    """Held-out ECE, masked accuracy and ``target_unigram_ece``: the ECE of the unigram model fitted to these very
    masked targets (exp of their letter entropy), the best any unigram can score on them. It is not eval's
    ``unigram_ece`` (an add-one unigram fitted on the training split, ``esm-jax eval language-model``)."""
    batches = load_factory(config.data.factory)(config.data, "validation")
    totals = None
    try:
        for index, local in enumerate(batches):
            if config.data.eval_batches and index >= config.data.eval_batches:
                break
            sums = eval_step(state, _global_batch(local, sharding, 1, mesh))
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


def _run_meta(config: ml_collections.ConfigDict, step: int) -> dict:
    return {"step": step, "model": config.model.to_dict(), "process_count": jax.process_count()}


def _check_compatible(meta: dict, config: ml_collections.ConfigDict, workdir: Path) -> None:
    saved = config_from_dict(meta["model"])
    wanted = model_config_of(config)
    if type(saved) is not type(wanted) or any(getattr(saved, f) != getattr(wanted, f) for f in wanted.SHAPE_FIELDS):
        raise EsmJaxError(
            f"{workdir} holds checkpoints of a different model ({saved}); use a new --workdir for this config"
        )


def train(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, stop: StopRequest | None = None
) -> TrainResult:
    """Train (or resume) the run in ``workdir`` until ``config.train.total_steps`` or a stop request."""
    workdir = Path(workdir)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(workdir / "config.json", config.to_json(indent=2) + "\n")
    mesh = build_mesh(dict(config.mesh))
    model_config = model_config_of(config)
    tx = make_optimizer(config.optimizer, config.train.total_steps)
    graphdef, abstract = abstract_state(model_config, tx)  # outside the mesh context: its names are logical
    with jax.set_mesh(mesh):  # anchors activations to the batch axes (esm_jax.sharding.constrain_batch)
        run = _Run(config, workdir, mesh, (model_config, tx, graphdef, abstract))
        stop = stop or StopRequest().install()
        try:
            return run.loop(stop)
        finally:
            run.close()
            stop.uninstall()


class _Run:
    """One training run's pieces, set up in stages; :meth:`loop` trains."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path, mesh, abstract_setup: tuple):
        self.config, self.workdir, self.mesh = config, workdir, mesh
        self.lead = jax.process_index() == 0
        cfg = config.train

        # Stage 1: where every variable lives on the mesh.
        model_config, tx, graphdef, abstract = abstract_setup
        self.shardings = state_shardings(abstract, mesh, dict(config.sharding_rules))
        if self.lead and mesh.size > 1 and (replicated := large_unsharded(abstract, self.shardings)):
            print(f"warning: large variables replicated on every device: {replicated[:4]}")

        # Stage 2: the state, restored from the newest checkpoint or initialised in its shards.
        self.checkpoints = RunCheckpoints(workdir, cfg.checkpoint_every, cfg.keep_checkpoints)
        self.saved_step = self.checkpoints.latest_step()
        self.step, data_state = self.saved_step or 0, None
        if self.saved_step is None:
            self.state = initialise(model_config, tx, self.shardings, cfg.seed)
        else:
            target = with_shardings(abstract, self.shardings)
            self.state, data_state, meta = self.checkpoints.restore(self.step, target)
            _check_compatible(meta, config, workdir)
            if self.lead:
                print(f"resuming {workdir} from step {self.step}")

        # Stage 3: data, compiled steps and metrics.
        self.train_batches = load_factory(config.data.factory)(config.data, "train", data_state)
        self.batch_sharding = batch_sharding(mesh)
        schedule = learning_rate_schedule(config.optimizer, cfg.total_steps)
        self.train_step = make_train_step(
            graphdef, self.shardings, self.batch_sharding, cfg.accumulation_steps, schedule
        )
        self.eval_step = make_eval_step(graphdef, self.shardings, self.batch_sharding)
        peak = peak_flops(jax.devices()[0], cfg.peak_flops_per_device or None) * jax.device_count()
        self.log = MetricsLog(workdir, model_config, peak, write=self.lead)

    def save(self, force: bool = False) -> None:
        """Check the steps since the last flush were finite, then start saving this step."""
        _refuse_divergence(self.log.flush(), self.step)
        if self.step != self.saved_step:
            meta = _run_meta(self.config, self.step)
            self.checkpoints.save(self.step, self.state, self.train_batches.get_state(), meta, force=force)
            self.saved_step = self.step

    def loop(self, stop: StopRequest) -> TrainResult:
        """Stage 4: train, log, evaluate and checkpoint until done or asked to stop."""
        cfg = self.config.train
        last_train, last_heldout, stopped_early = None, None, False
        with tqdm(initial=self.step, total=cfg.total_steps, desc="train", unit="step", disable=not self.lead) as bar:
            while self.step < cfg.total_steps:
                local = next(self.train_batches)
                batch = _global_batch(local, self.batch_sharding, cfg.accumulation_steps, self.mesh)
                self.state, metrics = self.train_step(self.state, batch)
                self.step += 1
                self.log.add(self.step, metrics)
                bar.update()
                if self.step % cfg.log_every == 0:
                    last_train = self.log.flush()
                    _refuse_divergence(last_train, self.step)
                    bar.set_postfix(loss=f"{last_train['loss']:.3f}", ece=f"{last_train['ece']:.2f}",
                                    tok_s=f"{last_train['tokens_per_second']:,.0f}")  # fmt: skip
                if self.step % cfg.eval_every == 0 or self.step == cfg.total_steps:
                    last_heldout = evaluate(self.config, self.state, self.eval_step, self.batch_sharding, self.mesh)
                    self.log.write("heldout", self.step, last_heldout)
                    bar.write(f"step {self.step}: held-out ECE {last_heldout['ece']:.3f} "
                              f"(target unigram {last_heldout['target_unigram_ece']:.3f})")  # fmt: skip
                if stop.requested or self.checkpoints.preemption_due(self.step):
                    self.save(force=True)
                    stopped_early = True
                    bar.write(f"stop requested: saved step {self.step} to {self.checkpoints.directory}")
                    break
                if self.step % cfg.checkpoint_every == 0:
                    self.save()
        if not stopped_early:
            self.save(force=True)
        self.checkpoints.wait()
        if self.lead:
            learning_curve_png(self.log.history, self.workdir / "learning_curve.png")
            summary = {"step": self.step, "train": last_train, "heldout": last_heldout, "stopped_early": stopped_early}
            write_json_atomically(self.workdir / "summary.json", summary)
        return TrainResult(self.step, stopped_early, last_train, last_heldout, self.workdir, self.state)

    def close(self) -> None:
        self.checkpoints.close()
        self.train_batches.close()
        self.log.close()


def _refuse_divergence(summary: dict | None, step: int) -> None:
    if summary and summary["nonfinite_steps"]:
        raise TrainingDiverged(
            f"the loss or gradient became NaN/Inf in {summary['nonfinite_steps']} step(s) up to step {step}; "
            "those updates were skipped and the newest checkpoint holds the last good state. Lower the "
            "learning rate or use float32 compute, then rerun with the same --workdir to resume"
        )
