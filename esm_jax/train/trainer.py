"""The pretraining loop, in labelled stages: mesh, state, data, steps, loop, wrap-up.

Rerunning with the same workdir resumes from the newest checkpoint: the same parameters,
optimizer state and data-iterator position, so the run continues exactly as if it had never
stopped. The data source is named by ``config.data.factory`` (``"module:function"``) so this
package never imports the data pipeline itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import ml_collections
import optax
from flax import nnx
from jax.experimental import multihost_utils
from tqdm import tqdm

from esm_jax.checkpoints.training_run import CHECKPOINTS
from esm_jax.errors import EsmJaxError
from esm_jax.files import write_json_atomically, write_text_atomically
from esm_jax.masking_rule import MaskingRule
from esm_jax.mesh import batch_sharding, build_mesh
from esm_jax.model import AnyModelConfig, ModelConfig, config_from_dict
from esm_jax.plots import learning_curve_png
from esm_jax.progress import progress_bar
from esm_jax.sharding import axis_rules, state_shardings, with_shardings
from esm_jax.train.checkpointing import RunCheckpoints, StopRequest
from esm_jax.train.evaluators import HELDOUT, RunContext, build_evaluators, global_batch, load_factory
from esm_jax.train.metrics import MetricsLog, peak_flops, read_history
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


def _model_differences(saved_model: dict, config: ml_collections.ConfigDict) -> list[str]:
    """``field saved -> wanted`` for each shape field (or the model kind) in which the two models differ."""
    saved, wanted = config_from_dict(saved_model), model_config_of(config)
    if type(saved) is not type(wanted):
        return [f"model kind {type(saved).__name__} -> {type(wanted).__name__}"]
    fields = [field for field in wanted.SHAPE_FIELDS if getattr(saved, field) != getattr(wanted, field)]
    return [f"{field} {getattr(saved, field)} -> {getattr(wanted, field)}" for field in fields]


def _check_compatible(saved_model: dict, config: ml_collections.ConfigDict, where: Path) -> None:
    """Refuse, in one line naming the differing fields, a config whose model cannot continue the saved run."""
    if differences := _model_differences(saved_model, config):
        raise EsmJaxError(
            f"{where} belongs to a run of a different model ({', '.join(differences)}); nothing was changed. "
            "Use a new --workdir for this config, or the saved model settings to resume that run"
        )


def _saved_config_model(workdir: Path) -> dict | None:
    """The ``model`` entry of the run's saved ``config.json``, if there is one."""
    path = workdir / "config.json"
    if not path.is_file():
        return None
    try:
        model = json.loads(path.read_text())["model"]
    except (ValueError, KeyError, TypeError) as error:
        raise EsmJaxError(f"{path} is not a training config ({error}); restore it or use a new --workdir") from None
    if not isinstance(model, dict):
        raise EsmJaxError(f"{path}: its 'model' entry is not a mapping; restore the file or use a new --workdir")
    return model


def _inspect_workdir(config: ml_collections.ConfigDict, workdir: Path) -> int | None:
    """The run's newest checkpoint step, after checking (without writing anything) that ``config`` continues it."""
    if (saved := _saved_config_model(workdir)) is not None:
        _check_compatible(saved, config, workdir / "config.json")
    if not (workdir / CHECKPOINTS).is_dir():
        return None
    cfg = config.train
    checkpoints = RunCheckpoints(workdir, cfg.checkpoint_every, cfg.keep_checkpoints)
    try:
        step = checkpoints.latest_step()
        if step is not None:
            _check_compatible(checkpoints.meta(step)["model"], config, checkpoints.directory / str(step))
        return step
    finally:
        checkpoints.close()


def run_summary(step: int, history: list[dict], stopped_early: bool) -> dict:
    """``summary.json``: the step, the newest training record and the newest record of every evaluator."""
    newest = {record["split"]: record for record in history}
    train = newest.pop("train", None)
    evals = {split: _values(record) for split, record in newest.items()}
    return {
        "step": step,
        "train": {key: value for key, value in train.items() if key != "split"} if train else None,
        HELDOUT: evals.get(HELDOUT),
        "evals": evals,
        "stopped_early": stopped_early,
    }


def _values(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in ("split", "step")}


def _write_results(workdir: Path, history: list[dict], summary: dict) -> None:
    """The learning curve over the whole run and ``summary.json``."""
    learning_curve_png(history, workdir / "learning_curve.png")
    write_json_atomically(workdir / "summary.json", summary)


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
    # The Transformer's last block runs at the loss positions of the bundled pipeline's masking rule (batches
    # masked otherwise still train exactly); the LSTM baselines run whole.
    rule = MaskingRule() if isinstance(model_config, ModelConfig) else None
    train_step = make_train_step(graphdef, shardings, sharding, accumulation_steps, schedule, rule)
    eval_step = make_eval_step(graphdef, shardings, sharding)
    return StepSetup(model_config, tx, graphdef, abstract, shardings, sharding, train_step, eval_step)


def train(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, stop: StopRequest | None = None
) -> TrainResult:
    """Train (or resume) the run in ``workdir`` until ``config.train.total_steps`` or a stop request.

    A run already at ``total_steps`` is left exactly as it is; a config of another model is refused before
    anything in ``workdir`` is written.
    """
    workdir = Path(workdir)
    saved_step = _inspect_workdir(config, workdir)
    if jax.process_count() > 1:  # every process looks at the folder before process 0 writes to it
        multihost_utils.sync_global_devices("esm_jax: workdir inspected")
    mesh = build_mesh(dict(config.mesh))
    cfg = config.train
    setup = step_setup(
        model_config_of(config), config.optimizer, cfg.total_steps, mesh, dict(config.sharding_rules),
        cfg.accumulation_steps,
    )  # fmt: skip
    with jax.set_mesh(mesh), axis_rules(dict(config.sharding_rules)):  # activations follow the same rules
        if saved_step is not None and saved_step >= cfg.total_steps:
            return _finished_run(config, workdir, setup, saved_step)
        if jax.process_index() == 0:
            workdir.mkdir(parents=True, exist_ok=True)
            write_text_atomically(workdir / "config.json", config.to_json(indent=2) + "\n")
        run = _Run(config, workdir, mesh, setup)
        stop = stop or StopRequest().install()
        try:
            return run.loop(stop)
        finally:
            run.close()
            stop.uninstall()


def _finished_run(config: ml_collections.ConfigDict, workdir: Path, setup: StepSetup, step: int) -> TrainResult:
    """The result of a run that already reached ``total_steps``; its files stay as they are (missing ones are
    written from ``metrics.jsonl``)."""
    cfg = config.train
    checkpoints = RunCheckpoints(workdir, cfg.checkpoint_every, cfg.keep_checkpoints)
    try:
        state, _, _ = checkpoints.restore(step, with_shardings(setup.abstract, setup.shardings))
    finally:
        checkpoints.close()
    history = read_history(workdir / "metrics.jsonl", step)
    summary = run_summary(step, history, stopped_early=False)
    if jax.process_index() == 0:
        print(f"{workdir} already finished at step {step} (total_steps {cfg.total_steps}); its files are left as "
              "they are. Raise --config.train.total_steps to train further")  # fmt: skip
        if not ((workdir / "summary.json").is_file() and (workdir / "learning_curve.png").is_file()):
            _write_results(workdir, history, summary)
    train_summary, evals = summary["train"], summary["evals"]
    return TrainResult(step, False, train_summary, evals.get(HELDOUT), evals, workdir, state)


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
            _check_compatible(meta["model"], config, self.checkpoints.directory / str(self.step))
            if self.lead:
                print(f"resuming {workdir} from step {self.step}")

        # Stage 3: data, evaluators and metrics.
        self.train_batches = load_factory(config.data.factory)(config.data, "train", data_state)
        context = RunContext(config, setup.graphdef, mesh, workdir, self.lead)
        self.evaluators = build_evaluators(config, context, setup.eval_step, self.batch_sharding)
        peak = peak_flops(jax.devices()[0], cfg.peak_flops_per_device or None) * jax.device_count()
        self.log = MetricsLog(workdir, setup.model_config, peak, write=self.lead, resume_step=self.step)

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
        stopped_early, in_flight = False, None
        bar = progress_bar(initial=self.step, total=cfg.total_steps, desc="train", unit="step", disable=not self.lead)
        with bar:
            while self.step < cfg.total_steps:
                local = next(self.train_batches)
                batch = global_batch(local, self.batch_sharding, cfg.accumulation_steps, self.mesh)
                self.state, metrics = self.train_step(self.state, batch)
                jax.block_until_ready(in_flight)  # at most one step queued: a stop request takes effect at once
                in_flight = metrics
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
                        self._evaluate(evaluator, bar)
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
        summary = run_summary(self.step, self.log.history, stopped_early)
        if self.lead:
            _write_results(self.workdir, self.log.history, summary)
        train, evals = summary["train"], summary["evals"]
        return TrainResult(self.step, stopped_early, train, evals.get(HELDOUT), evals, self.workdir, self.state)

    def _evaluate(self, evaluator, bar: tqdm) -> None:
        """Run one evaluator on the current state and log its numbers under its name."""
        metrics = evaluator.run(self.state, self.step)
        self.log.write(evaluator.name, self.step, metrics)
        if evaluator.name == HELDOUT:
            bar.write(f"step {self.step}: held-out ECE {metrics['ece']:.3f} "
                      f"(target unigram {metrics['target_unigram_ece']:.3f})")  # fmt: skip
        else:
            shown = ", ".join(f"{key} {value:.3f}" for key, value in list(metrics.items())[:4])
            bar.write(f"step {self.step}: {evaluator.name}: {shown}")

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
