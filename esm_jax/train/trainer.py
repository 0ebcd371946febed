"""The pretraining loop, in labelled stages: mesh, state, data, steps, loop, wrap-up.

Rerunning with the same workdir resumes from the newest checkpoint: the same parameters,
optimizer state and data-iterator position, so the run continues exactly as if it had never
stopped. The data source is named by ``config.data.factory`` (``"module:function"``) so this
package never imports the data pipeline itself.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import ml_collections
import optax
from flax import nnx
from tqdm import tqdm

from esm_jax.errors import EsmJaxError
from esm_jax.files import write_json_atomically, write_text_atomically
from esm_jax.mesh import batch_sharding, build_mesh
from esm_jax.model import AnyModelConfig, config_from_dict
from esm_jax.plots import learning_curve_png
from esm_jax.sharding import axis_rules, state_shardings, with_shardings
from esm_jax.train.checkpointing import RunCheckpoints, StopRequest
from esm_jax.train.evaluators import HELDOUT, RunContext, build_evaluators, global_batch, load_factory
from esm_jax.train.metrics import MetricsLog, peak_flops
from esm_jax.train.optimizer import learning_rate_schedule, make_optimizer
from esm_jax.train.state import abstract_state, initialise, large_unsharded
from esm_jax.train.step import make_eval_step, make_train_step


class TrainingDiverged(EsmJaxError, RuntimeError):
    """The loss or gradient became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    step: int
    stopped_early: bool
    last_train: dict | None
    last_heldout: dict | None
    last_evals: dict[str, dict]
    workdir: Path
    state: nnx.State


def model_config_of(config: ml_collections.ConfigDict) -> AnyModelConfig:
    """The run's model config; ``config.model.kind`` (absent for Transformers) selects the module."""
    return config_from_dict(config.model.to_dict())


def _run_meta(config: ml_collections.ConfigDict, step: int) -> dict:
    return {"step": step, "model": config.model.to_dict(), "process_count": jax.process_count()}


def _check_compatible(meta: dict, config: ml_collections.ConfigDict, workdir: Path) -> None:
    saved = config_from_dict(meta["model"])
    wanted = model_config_of(config)
    if type(saved) is not type(wanted) or any(getattr(saved, f) != getattr(wanted, f) for f in wanted.SHAPE_FIELDS):
        raise EsmJaxError(
            f"{workdir} holds checkpoints of a different model ({saved}); use a new --workdir for this config"
        )


@dataclasses.dataclass(frozen=True)
class StepSetup:
    """A training step on one mesh: the state's structure and shardings, and the compiled steps."""

    model_config: AnyModelConfig
    tx: optax.GradientTransformation
    graphdef: nnx.GraphDef
    abstract: nnx.State
    shardings: nnx.State
    batch_sharding: jax.sharding.NamedSharding
    train_step: Callable
    eval_step: Callable

    def initial_state(self, seed: int) -> nnx.State:
        """A fresh state, every variable created in its shard."""
        return initialise(self.model_config, self.tx, self.shardings, seed)


def step_setup(
    model_config: AnyModelConfig,
    optimizer: ml_collections.ConfigDict,
    total_steps: int,
    mesh: jax.sharding.Mesh,
    rules: Mapping[str, object],
    accumulation_steps: int = 1,
) -> StepSetup:
    """Everything a training step needs on ``mesh`` (call outside ``jax.set_mesh``: the state's names are logical)."""
    tx = make_optimizer(optimizer, total_steps)
    graphdef, abstract = abstract_state(model_config, tx)
    shardings = state_shardings(abstract, mesh, rules)
    sharding = batch_sharding(mesh)
    schedule = learning_rate_schedule(optimizer, total_steps)
    train_step = make_train_step(graphdef, shardings, sharding, accumulation_steps, schedule)
    eval_step = make_eval_step(graphdef, shardings, sharding)
    return StepSetup(model_config, tx, graphdef, abstract, shardings, sharding, train_step, eval_step)


def train(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, stop: StopRequest | None = None
) -> TrainResult:
    """Train (or resume) the run in ``workdir`` until ``config.train.total_steps`` or a stop request."""
    workdir = Path(workdir)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(workdir / "config.json", config.to_json(indent=2) + "\n")
    mesh = build_mesh(dict(config.mesh))
    cfg = config.train
    setup = step_setup(
        model_config_of(config), config.optimizer, cfg.total_steps, mesh, dict(config.sharding_rules),
        cfg.accumulation_steps,
    )  # fmt: skip
    with jax.set_mesh(mesh), axis_rules(dict(config.sharding_rules)):  # activations follow the same rules
        run = _Run(config, workdir, mesh, setup)
        stop = stop or StopRequest().install()
        try:
            return run.loop(stop)
        finally:
            run.close()
            stop.uninstall()


class _Run:
    """One training run's pieces, set up in stages; :meth:`loop` trains."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path, mesh, setup: StepSetup):
        self.config, self.workdir, self.mesh = config, workdir, mesh
        self.lead = jax.process_index() == 0
        cfg = config.train

        # Stage 1: where every variable lives on the mesh.
        self.shardings, self.train_step, self.batch_sharding = setup.shardings, setup.train_step, setup.batch_sharding
        if self.lead and mesh.size > 1 and (replicated := large_unsharded(setup.abstract, self.shardings)):
            print(f"warning: large variables replicated on every device: {replicated[:4]}")

        # Stage 2: the state, restored from the newest checkpoint or initialised in its shards.
        self.checkpoints = RunCheckpoints(workdir, cfg.checkpoint_every, cfg.keep_checkpoints)
        self.saved_step = self.checkpoints.latest_step()
        self.step, data_state = self.saved_step or 0, None
        if self.saved_step is None:
            self.state = setup.initial_state(cfg.seed)
        else:
            target = with_shardings(setup.abstract, self.shardings)
            self.state, data_state, meta = self.checkpoints.restore(self.step, target)
            _check_compatible(meta, config, workdir)
            if self.lead:
                print(f"resuming {workdir} from step {self.step}")

        # Stage 3: data, evaluators and metrics.
        self.train_batches = load_factory(config.data.factory)(config.data, "train", data_state)
        context = RunContext(config, setup.graphdef, mesh, workdir, self.lead)
        self.evaluators = build_evaluators(config, context, setup.eval_step, self.batch_sharding)
        peak = peak_flops(jax.devices()[0], cfg.peak_flops_per_device or None) * jax.device_count()
        self.log = MetricsLog(workdir, setup.model_config, peak, write=self.lead)

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
        last_train, last_evals, stopped_early = None, {}, False
        with tqdm(initial=self.step, total=cfg.total_steps, desc="train", unit="step", disable=not self.lead) as bar:
            while self.step < cfg.total_steps:
                local = next(self.train_batches)
                batch = global_batch(local, self.batch_sharding, cfg.accumulation_steps, self.mesh)
                self.state, metrics = self.train_step(self.state, batch)
                self.step += 1
                self.log.add(self.step, metrics)
                bar.update()
                if self.step % cfg.log_every == 0:
                    last_train = self.log.flush()
                    _refuse_divergence(last_train, self.step)
                    bar.set_postfix(loss=f"{last_train['loss']:.3f}", ece=f"{last_train['ece']:.2f}",
                                    tok_s=f"{last_train['tokens_per_second']:,.0f}")  # fmt: skip
                for evaluator in self.evaluators:
                    if evaluator.due(self.step, cfg.total_steps):
                        last_evals[evaluator.name] = self._evaluate(evaluator, bar)
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
            summary = {
                "step": self.step,
                "train": last_train,
                HELDOUT: last_evals.get(HELDOUT),
                "evals": last_evals,
                "stopped_early": stopped_early,
            }
            write_json_atomically(self.workdir / "summary.json", summary)
        heldout = last_evals.get(HELDOUT)
        return TrainResult(self.step, stopped_early, last_train, heldout, last_evals, self.workdir, self.state)

    def _evaluate(self, evaluator, bar: tqdm) -> dict[str, float]:
        """Run one evaluator on the current state and log its numbers under its name."""
        metrics = evaluator.run(self.state, self.step)
        self.log.write(evaluator.name, self.step, metrics)
        if evaluator.name == HELDOUT:
            bar.write(f"step {self.step}: held-out ECE {metrics['ece']:.3f} "
                      f"(target unigram {metrics['target_unigram_ece']:.3f})")  # fmt: skip
        else:
            shown = ", ".join(f"{key} {value:.3f}" for key, value in list(metrics.items())[:4])
            bar.write(f"step {self.step}: {evaluator.name}: {shown}")
        return metrics

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
