"""Structure vs language modelling over training (paper Fig. 6): probe quality against held-out ECE, per checkpoint.

For every saved checkpoint of a training run (an ``esm-jax train`` workdir) three numbers, all from the final
layer: held-out ECE (as ``language-model``: the UniRef50 sample's held-out clusters, fixed masking), Q8 of an
8-class linear secondary-structure probe (as ``secondary-structure-linear``: trained on NetSurfP-2.0 proteins,
scored on CB513) and long-range top-L precision of the bilinear contact probe (as ``contacts-linear``,
cross-validated on one contact set). Rives et al. (PNAS 2021) find both probes improve as ECE falls. The
defaults are small (subsets, short probe fits) so a tiny run evaluates quickly; raise them for a real run.

When the run's own evaluators already logged these numbers (its ``metrics.jsonl`` holds the trainer's
``heldout`` ECE and a ``structure-vs-lm`` record at two or more steps), they are reported as logged and no
checkpoint is loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path

from esm_jax.checkpoints import training_run
from esm_jax.errors import CheckpointError, EsmJaxError
from esm_jax.model import ESM
from esm_jax.train.evaluators import HELDOUT
from eval.common import charts
from eval.common.report import write_results
from eval.common.statistics import linear_trend
from eval.common.task import Backbone, Result, Task, option
from eval.language_model import heldout_data
from eval.language_model.masked_lm import ece
from eval.language_model.task import HeldoutOptions, heldout_dataset, score_heldout
from eval.structure.contacts.linear import probe_precisions
from eval.structure.contacts.metrics import mean_precisions
from eval.structure.contacts.plans import Plan, build_plans, embed_all
from eval.structure.secondary.data import SecondaryStructureSets, load_ss8_sets
from eval.structure.secondary.linear import embed, fit_probe, predict
from eval.structure.secondary.metrics import accuracy

NAME = "structure-vs-lm"
SS_TEST_SET = "CB513"
METRICS_LOG = "metrics.jsonl"  # what the trainer logs in the run folder, one JSON record per line
PROBE_METRICS = ("ss8_accuracy", "contact_long_p_at_l")
# Our choice: below six checkpoints a fitted slope and r say little (configs/structure_emergence.py logs eight).
TREND_POINTS = 6


@dataclasses.dataclass(frozen=True)
class Options(HeldoutOptions):
    run: Path | None = option(None, "training run folder (esm-jax train --workdir; none: --checkpoint)")
    steps: str | None = option(None, "comma-separated saved steps (none: all)")
    ss_train: int = option(100, "first N SS8 training proteins")
    ss_test: int = option(100, "first N CB513 proteins scored")
    l2: float = option(1e-4, "L2 penalty of the SS8 probe")
    iterations: int = option(100, "L-BFGS iterations of the SS8 probe")
    contact_set: str = option("kortemme", "contact set: kortemme, pdb-chains or casp12")
    contact_proteins: int | None = option(None, "first N contact proteins (none: all)")
    rank: int = option(64, "projection size of the contact probe")
    contact_steps: int = option(100, "Adam steps per contact probe")
    learning_rate: float = option(1e-3, "contact probe learning rate")
    folds: int = option(5, "folds for contact sets without labels")
    toks_per_batch: int = option(4096, "tokens per backbone batch")


@dataclasses.dataclass(frozen=True)
class ContactProbeSettings:
    """What :func:`eval.structure.contacts.linear.probe_precisions` reads of its options."""

    rank: int
    steps: int
    learning_rate: float
    seed: int


@dataclasses.dataclass(frozen=True)
class ProbeInputs:
    """The data every checkpoint is scored on: the held-out dataset, the SS8 sets and the contact plan."""

    dataset: Path
    ss: SecondaryStructureSets
    plan: Plan


def parse_steps(text: str | None) -> list[int] | None:
    """The step numbers of ``--steps`` (None: every saved step)."""
    if text is None:
        return None
    try:
        return [int(step) for step in text.split(",")]
    except ValueError:
        raise EsmJaxError(f"--steps: {text!r}: expected comma-separated step numbers") from None


def training_workdir(backbone: Backbone, options: Options) -> Path:
    """The training run folder: ``--run``, else ``--checkpoint``; refuses random weights and non-runs."""
    if backbone.random_weights:
        raise EsmJaxError(f"{NAME} scores a run's trained checkpoints; --random-weights does not apply")
    workdir = options.run or backbone.checkpoint
    if workdir is None:
        raise EsmJaxError(f"{NAME} needs --run: a training run folder written by esm-jax train")
    if not training_run.is_training_run(workdir):
        raise CheckpointError(f"{workdir}: not a training run (esm-jax train writes config.json and checkpoints/)")
    return Path(workdir)


def checkpoint_steps(workdir: Path, steps: list[int] | None) -> list[int]:
    """The saved steps to evaluate (all when ``steps`` is None); raises when fewer than two would be scored."""
    saved = training_run.saved_steps(workdir)
    steps = saved if steps is None else steps
    missing = sorted(set(steps) - set(saved))
    if missing:
        raise CheckpointError(f"{workdir}: no checkpoint at steps {missing}; saved steps: {saved}")
    if len(steps) < 2:
        raise CheckpointError(
            f"{workdir}: {NAME} compares checkpoints and needs at least 2; chosen steps {steps}, saved {saved}"
        )
    return sorted(set(steps))


def logged_rows(workdir: Path, steps: list[int] | None = None) -> list[dict]:
    """One row per step (of ``steps``, or every step) at which the run logged both the trainer's held-out ECE and
    this task's probe metrics, oldest first; a step logged twice under one split counts by its last record."""
    path = workdir / METRICS_LOG
    if not path.is_file():
        return []
    latest: dict[tuple, dict] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # blank, or cut short by a run that stopped mid-write
            continue
        latest[record.get("split"), record.get("step")] = record
    splits = set(evaluator_entries(workdir))
    heldout = {step: r for (split, step), r in latest.items() if split == HELDOUT and "ece" in r}
    probes = {step: r for (split, step), r in latest.items() if split in splits and set(PROBE_METRICS) <= r.keys()}
    chosen = sorted(step for step in heldout.keys() & probes.keys() if steps is None or step in steps)
    return [
        {"step": step, "ece": heldout[step]["ece"], "masked_tokens": heldout[step].get("targets")}
        | {key: probes[step][key] for key in PROBE_METRICS}
        for step in chosen
    ]


def evaluator_entries(workdir: Path) -> dict[str, dict]:
    """The run's ``config.evals`` entries that ran this task, by the name their numbers were logged under."""
    config = workdir / "config.json"
    evals = json.loads(config.read_text()).get("evals", {}) if config.is_file() else {}
    return {key: entry for key, entry in evals.items() if entry.get("task", key.replace("_", "-")) == NAME}


def evaluation_plan(backbone: Backbone, options: Options) -> tuple[Path, list[dict], list[int]]:
    """The run, the rows its log already holds (when it covers two or more of the chosen steps, all of them), and
    otherwise the checkpoint steps to evaluate; raises when fewer than two steps would be reported."""
    steps = parse_steps(options.steps)
    workdir = training_workdir(backbone, options)
    logged = logged_rows(workdir, steps)
    if len(logged) >= 2 and (steps is None or len(logged) == len(set(steps))):
        return workdir, logged, []
    return workdir, [], checkpoint_steps(workdir, steps)


def skip_reason(backbone: Backbone, options: Options) -> str | None:
    """Why ``esm-jax eval all`` skips this task (``None``: it runs), e.g. when --checkpoint is no training run."""
    try:
        evaluation_plan(backbone, options)
    except EsmJaxError as error:
        return str(error)
    return None


@functools.lru_cache(maxsize=1)
def probe_inputs(data: Path, options: Options) -> ProbeInputs:
    """The held-out dataset, SS8 sets and contact plan of ``options``, loaded once for every checkpoint scored."""
    ss = load_ss8_sets(data, options.ss_train, options.ss_test, (SS_TEST_SET,))
    (plan,) = build_plans([options.contact_set], data, options.contact_proteins, options.folds, options.seed)
    dataset = heldout_dataset(data, options)
    if heldout_data.split_size(dataset, "validation") == 0:
        raise EsmJaxError(f"{dataset}: the held-out (validation) split is empty")
    return ProbeInputs(dataset, ss, plan)


def heldout_ece(model: ESM, dataset: Path, options: Options) -> tuple[float, int]:
    """ECE over the held-out split's masked tokens, and how many there were."""
    scored = score_heldout(model, dataset, options.mask_seed, options.token_budget, context=0)
    return ece(scored["total_nll"], scored["masked_tokens"]), scored["masked_tokens"]


def ss8_accuracy(model: ESM, sets: SecondaryStructureSets, options: Options) -> float:
    """Q8 on the test set of a final-layer softmax probe fitted on the training proteins."""
    layer = model.config.num_layers
    train_x, train = embed(model, sets.train, [layer], "ss8 train")
    probe = fit_probe(train_x[layer], train.ss8, train.mask, 8, options)
    test_x, test = embed(model, sets.tests[SS_TEST_SET], [layer], SS_TEST_SET)
    return accuracy(predict(probe, test_x[layer]), test.ss8, test.mask)


def contact_precision(model: ESM, plan: Plan, options: Options) -> float:
    """Cross-validated long-range top-L precision of the bilinear probe on final-layer features."""
    layer = model.config.num_layers
    embeddings = embed_all(model, [plan], [layer], options.toks_per_batch)
    features = [embeddings[protein.name][layer] for protein in plan.proteins]
    settings = ContactProbeSettings(options.rank, options.contact_steps, options.learning_rate, options.seed)
    return mean_precisions(probe_precisions(plan, features, settings))["long P@L"]


def checkpoint_metrics(model: ESM, data: Path, options: Options) -> dict:
    """Held-out ECE (and its masked-token count), SS8 accuracy and contact long P@L of one model's final layer.

    The per-checkpoint numbers of this task; the trainer's ``structure-vs-lm`` evaluator logs them for the live model.
    """
    inputs = probe_inputs(Path(data), options)
    model_ece, masked = heldout_ece(model, inputs.dataset, options)
    return {
        "ece": model_ece,
        "masked_tokens": masked,
        "ss8_accuracy": ss8_accuracy(model, inputs.ss, options),
        "contact_long_p_at_l": contact_precision(model, inputs.plan, options),
    }


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    workdir, logged, steps = evaluation_plan(backbone, options)
    if logged:
        return _report_logged(workdir, logged, Path(out))
    inputs = probe_inputs(Path(data), options)
    checkpoints, started = [], time.perf_counter()
    for count, step in enumerate(steps, start=1):
        row = {"step": step} | checkpoint_metrics(training_run.load_trained_model(workdir, step), data, options)
        checkpoints.append(row)
        print(
            f"{NAME} step {step} ({count}/{len(steps)}): ECE {row['ece']:.3f}, SS8 {row['ss8_accuracy']:.3f}, "
            f"long P@L {row['contact_long_p_at_l']:.3f} ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    ss, plan = inputs.ss, inputs.plan
    results = {
        "run": str(workdir),
        "layer": "final",
        "dataset": str(inputs.dataset),
        "mask_seed": options.mask_seed,
        "secondary_structure": {
            "train_proteins": len(ss.train),
            "test_set": SS_TEST_SET,
            "test_proteins": len(ss.tests[SS_TEST_SET]),
            "dropped_train": ss.dropped,
        },
        "contacts": {"set": plan.name, "scheme": plan.scheme, "proteins": plan.tested},
        "checkpoints": checkpoints,
    }
    notes = (
        f"Final-layer probes, refitted for every checkpoint. SS8: softmax probe trained on {len(ss.train)} "
        f"NetSurfP-2.0 proteins, accuracy over resolved residues of {len(ss.tests[SS_TEST_SET])} CB513 proteins. "
        f"Contacts: bilinear probe, {plan.scheme} over {plan.tested} proteins, precision of the top L pairs at "
        f"separation ≥ 24. ECE: {checkpoints[0]['masked_tokens']:,} masked tokens of `{inputs.dataset}` "
        f"(masking seed {options.mask_seed}). Paper: Rives et al., PNAS 2021, Fig. 6."
    )
    return _write(Path(out), results, f"contact long P@L ({plan.name})", notes)


def _report_logged(workdir: Path, rows: list[dict], out: Path) -> Result:
    """The report of a run whose own evaluators logged every number (no checkpoint loaded)."""
    print(f"{NAME}: {len(rows)} steps read from {workdir / METRICS_LOG}", flush=True)
    results = {
        "run": str(workdir),
        "layer": "final",
        "source": METRICS_LOG,
        "evaluator_options": evaluator_entries(workdir),
        "checkpoints": rows,
    }
    notes = (
        f"Every number read from the run's {METRICS_LOG}, no checkpoint loaded: held-out ECE of the trainer's "
        f"`{HELDOUT}` evaluation, probe metrics of its `{NAME}` evaluator (final-layer probes refitted at each "
        "step; settings under evaluator_options). Paper: Rives et al., PNAS 2021, Fig. 6."
    )
    return _write(out, results, "contact long P@L", notes)


def _write(out: Path, results: dict, contact_column: str, notes: str) -> Result:
    """The results files, table and figure; the headline is the last step's numbers."""
    checkpoints = results["checkpoints"]
    ece = [row["ece"] for row in checkpoints]
    results["trend"] = {key: linear_trend(ece, [row[key] for row in checkpoints]) for key in PROBE_METRICS}
    notes += " " + _trend_note(results["trend"])
    figure = _figure(out, checkpoints)
    rows = [
        {
            "step": row["step"],
            "held-out ECE": row["ece"],
            f"SS8 accuracy ({SS_TEST_SET})": row["ss8_accuracy"],
            contact_column: row["contact_long_p_at_l"],
        }
        for row in checkpoints
    ]
    write_results(out, NAME, results, rows, title="Structure vs language modelling", notes=notes, figures=[figure.name])
    return Result({key: checkpoints[-1][key] for key in ("step", "ece", "ss8_accuracy", "contact_long_p_at_l")})


def _trend_note(trend: dict) -> str:
    """One sentence per probe metric: its least-squares slope against ECE and Pearson r, with 95% intervals."""

    def shown(fit: dict, name: str) -> str:
        interval = fit.get(f"{name}_ci95")
        return f"{fit[name]:.3g}" + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "")

    parts = [f"{key}: slope per unit of ECE {shown(fit, 'slope')}, r {shown(fit, 'r')}" for key, fit in trend.items()]
    points = next(iter(trend.values()))["points"]
    note = (
        f"Linear fit over the {points} checkpoints (95% bootstrap intervals over checkpoints; the paper's Fig. 6 finds "
        f"probe quality rising as ECE falls, i.e. a negative slope): " + "; ".join(parts) + "."
    )
    if points < TREND_POINTS:
        note += (
            f" With fewer than {TREND_POINTS} checkpoints the fit is shown but not a finding; log more points over the "
            "run (configs/structure_emergence.py scores eight)."
        )
    return note


def _figure(out: Path, checkpoints: list[dict]) -> Path:
    return charts.paired_panels_png(
        [row["ece"] for row in checkpoints],
        {
            f"SS8 accuracy ({SS_TEST_SET})": [row["ss8_accuracy"] for row in checkpoints],
            "contact long P@L": [row["contact_long_p_at_l"] for row in checkpoints],
        },
        [f"step {row['step']}" for row in checkpoints],
        out / f"{NAME}.png",
        title="Probe quality against held-out ECE over training (points labelled by step)",
        xlabel="held-out ECE (lower is better)",
    )


def score_training_model(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    """One point of Fig. 6 for the model being trained: what ``config.evals.structure_vs_lm`` logs, and this task
    later reads from the run's metrics.jsonl instead of reloading checkpoints."""
    return Result(checkpoint_metrics(backbone.model, data, options))


TASK = Task(
    NAME,
    __doc__,
    Options,
    run,
    needs_checkpoint=False,
    skip_reason=skip_reason,
    on_training_model=score_training_model,
)
