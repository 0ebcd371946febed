"""The pretraining loop, in labelled stages: mesh, state, data, steps, loop, wrap-up.

Rerunning with the same workdir resumes from the newest checkpoint: the same parameters,
optimizer state and data-iterator position, so the run continues exactly as if it had never
stopped. The data source is named by ``config.data.factory`` (``"module:function"``) so this
package never imports the data pipeline itself.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
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
from esm_jax.model import ModelConfig
from esm_jax.plots import learning_curve_png
from esm_jax.sharding import state_shardings
from esm_jax.train.checkpointing import RunCheckpoints, StopRequest
from esm_jax.train.mesh import batch_sharding, build_mesh, check_batch_divisible
from esm_jax.train.metrics import MetricsLog, peak_flops
from esm_jax.train.optimizer import learning_rate_schedule, make_optimizer
from esm_jax.train.state import abstract_state, initialise, large_unsharded, with_shardings
from esm_jax.train.step import BATCH_KEYS, make_eval_step, make_train_step


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


def model_config_of(config: ml_collections.ConfigDict) -> ModelConfig:
    return ModelConfig.from_dict(config.model.to_dict())


def _global_batch(local: dict, sharding, accumulation_steps: int, mesh) -> dict:
    rows = local["tokens"].shape[0] * jax.process_count()
    check_batch_divisible(rows, accumulation_steps, mesh, f"batch of shape {local['tokens'].shape}")
    return {
        key: jax.make_array_from_process_local_data(sharding, np.asarray(local[key]), (rows, *local[key].shape[1:]))
        for key in BATCH_KEYS
    }


def evaluate(config, state, eval_step, sharding, mesh) -> dict:
    """Held-out ECE, masked accuracy and the best unigram model's ECE on the same masked targets."""
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
        "unigram_ece": math.exp(unigram),
        "targets": int(targets),
    }


def _run_meta(config: ml_collections.ConfigDict, step: int) -> dict:
    return {"step": step, "model": config.model.to_dict(), "process_count": jax.process_count()}


def _check_compatible(meta: dict, config: ml_collections.ConfigDict, workdir: Path) -> None:
    saved = ModelConfig.from_dict(meta["model"])
    wanted = model_config_of(config)
    parameters = ("architecture", "num_layers", "embed_dim", "attention_heads", "ffn_embed_dim", "max_positions")
    if any(getattr(saved, name) != getattr(wanted, name) for name in parameters):
        raise EsmJaxError(
            f"{workdir} holds checkpoints of a different model ({saved}); use a new --workdir for this config"
        )


def train(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, stop: StopRequest | None = None
) -> TrainResult:
    """Train (or resume) the run in ``workdir`` until ``config.train.total_steps`` or a stop request."""
    workdir = Path(workdir)
    lead = jax.process_index() == 0
    if lead:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")
    cfg_train = config.train

    # Stage 1: the mesh and where every variable lives on it.
    model_config = model_config_of(config)
    mesh = build_mesh(dict(config.mesh))
    tx = make_optimizer(config.optimizer, cfg_train.total_steps)
    schedule = learning_rate_schedule(config.optimizer, cfg_train.total_steps)
    graphdef, abstract = abstract_state(model_config, tx)
    shardings = state_shardings(abstract, mesh, dict(config.sharding_rules))
    if lead and mesh.size > 1 and (replicated := large_unsharded(abstract, shardings)):
        print(f"warning: large variables replicated on every device: {replicated[:4]}")

    # Stage 2: the state, restored from the newest checkpoint or initialised in its shards.
    checkpoints = RunCheckpoints(workdir, cfg_train.checkpoint_every, cfg_train.keep_checkpoints)
    latest = checkpoints.latest_step()
    step, data_state = latest or 0, None
    if latest is None:
        state = initialise(model_config, tx, shardings, cfg_train.seed)
    else:
        state, data_state, meta = checkpoints.restore(step, with_shardings(abstract, shardings))
        _check_compatible(meta, config, workdir)
        if lead:
            print(f"resuming {workdir} from step {step}")

    # Stage 3: data and compiled steps.
    train_batches = load_factory(config.data.factory)(config.data, "train", data_state)
    sharding = batch_sharding(mesh)
    accumulation = cfg_train.accumulation_steps
    train_step = make_train_step(graphdef, shardings, sharding, accumulation, schedule)
    eval_step = make_eval_step(graphdef, shardings, sharding)
    peak = peak_flops(jax.devices()[0], cfg_train.peak_flops_per_device or None) * jax.device_count()
    log = MetricsLog(workdir, model_config, peak, write=lead)
    stop = stop or StopRequest().install()

    saved = {"step": latest}

    def save(force: bool = False) -> None:
        summary = log.flush()
        _refuse_divergence(summary, step)
        if step != saved["step"]:
            checkpoints.save(step, state, train_batches.get_state(), _run_meta(config, step), force=force)
            saved["step"] = step

    # Stage 4: the loop.
    last_train, last_heldout, stopped_early = None, None, False
    try:
        with tqdm(initial=step, total=cfg_train.total_steps, desc="train", unit="step", disable=not lead) as bar:
            while step < cfg_train.total_steps:
                local = next(train_batches)
                state, metrics = train_step(state, _global_batch(local, sharding, accumulation, mesh))
                step += 1
                log.add(step, local["tokens"].shape[1], metrics)
                bar.update()
                if step % cfg_train.log_every == 0:
                    last_train = log.flush()
                    _refuse_divergence(last_train, step)
                    bar.set_postfix(
                        loss=f"{last_train['loss']:.3f}",
                        ece=f"{last_train['ece']:.2f}",
                        tok_s=f"{last_train['tokens_per_second']:,.0f}",
                    )
                if step % cfg_train.eval_every == 0 or step == cfg_train.total_steps:
                    last_heldout = evaluate(config, state, eval_step, sharding, mesh)
                    log.write("heldout", step, last_heldout)
                    bar.write(
                        f"step {step}: held-out ECE {last_heldout['ece']:.3f} "
                        f"(unigram {last_heldout['unigram_ece']:.3f})"
                    )
                if stop.requested or checkpoints.preemption_due(step):
                    save(force=True)
                    stopped_early = True
                    bar.write(f"stop requested: saved step {step} to {checkpoints.directory}")
                    break
                if step % cfg_train.checkpoint_every == 0:
                    save()
        if not stopped_early:
            save(force=True)
    finally:
        checkpoints.close()
        train_batches.close()
        log.close()
        stop.uninstall()
    if lead:
        learning_curve_png(log.history, workdir / "learning_curve.png")
        summary = {"step": step, "train": last_train, "heldout": last_heldout, "stopped_early": stopped_early}
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return TrainResult(step, stopped_early, last_train, last_heldout, workdir, state)


def _refuse_divergence(summary: dict | None, step: int) -> None:
    if summary and summary["nonfinite_steps"]:
        raise TrainingDiverged(
            f"the loss or gradient became NaN/Inf in {summary['nonfinite_steps']} step(s) up to step {step}; "
            "those updates were skipped and the newest checkpoint holds the last good state. Lower the "
            "learning rate or use float32 compute, then rerun with the same --workdir to resume"
        )
