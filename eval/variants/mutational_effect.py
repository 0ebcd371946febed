"""Supervised prediction of mutational effect (Rives et al. 2021, Fig. 7; SI Figs. S5, S6; SI Table S5).

A regression head on the final-layer representation at the mutated (masked) positions, with the backbone
frozen (default) or fine-tuned with it (``--unfreeze``), is trained on deep mutational scans:
five-fold cross-validation (80% train / 20% test) per protein with Spearman ρ mean ± SD; a sweep over
the fraction of the assay used for training; and leave-one-protein-out generalisation to an unseen
fitness landscape. Assays: BLAT_ECOLX (fitness column 2500), DLG4_RAT (CRIPT), PABP_YEAST (linear).

Writes ``mutational-effect.json``, ``mutational-effect.md`` and two PNGs into ``--out``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from eval.common.charts import grouped_bars_png
from eval.common.report import write_results
from eval.common.task import Backbone, Result, Task, TaskOptions, option
from eval.variants.assays import ASSAYS, load_assay
from eval.variants.plots import fraction_curve_png
from eval.variants.protocol import (
    FinetuneLearner,
    FrozenLearner,
    SubstitutionBaseline,
    cross_validation,
    fraction_sweep,
    leave_one_protein_out,
)
from eval.variants.regression import TrainConfig

NAME = "mutational-effect"
PROTOCOLS = ("cv", "position-cv", "fractions", "lopo")
# Our choice: fine-tuning runs the two k-fold protocols unless others are asked for. With the fit capped at
# ``finetune_max_steps`` each is 2 × folds fits per assay; the fraction sweep alone would be 6 × folds more.
FINETUNE_PROTOCOLS = ("cv", "position-cv")
_LEARNER = {field.name: field.default for field in dataclasses.fields(TrainConfig)}


@dataclasses.dataclass(frozen=True)
class Options(TaskOptions):
    assays: tuple[str, ...] = option(tuple(ASSAYS), "assays to evaluate", choices=tuple(ASSAYS))
    protocols: tuple[str, ...] | None = option(
        None,
        "cv: random k-fold per protein (the paper's); position-cv: k-fold holding out whole mutated positions; "
        "fractions: training-fraction sweep; lopo: leave one protein out "
        "(none: all four, or cv and position-cv with --unfreeze)",
        choices=PROTOCOLS,
    )
    folds: int = option(5, "cross-validation folds (5 gives 80/20 splits)")
    fractions: tuple[float, ...] = option((0.01, 0.05, 0.1, 0.2, 0.4, 0.8), "training fractions of the sweep")
    unfreeze: bool = option(False, "fine-tune the backbone with the head (slow on CPU)")
    epochs: int = option(_LEARNER["epochs"], "head epochs, frozen backbone")
    batch_size: int = option(_LEARNER["batch_size"], "head batch, frozen backbone")
    learning_rate: float = option(_LEARNER["learning_rate"], "head learning rate")
    weight_decay: float = option(_LEARNER["weight_decay"], "AdamW weight decay")
    finetune_epochs: int = option(_LEARNER["finetune_epochs"], "with --unfreeze")
    finetune_batch_size: int = option(_LEARNER["finetune_batch_size"], "with --unfreeze")
    finetune_max_steps: int = option(
        _LEARNER["finetune_max_steps"], "with --unfreeze: at most this many steps per fit (0: finetune-epochs in full)"
    )
    backbone_learning_rate: float = option(_LEARNER["backbone_learning_rate"], "with --unfreeze")
    max_variants: int = option(0, "use a seeded random subset of this many per assay (0: all)")
    toks_per_batch: int = option(8192, "tokens per inference batch")


def train_config(options: Options) -> TrainConfig:
    """The learner settings among ``options`` (the fields they share with :class:`TrainConfig`)."""
    return TrainConfig(**{name: getattr(options, name) for name in _LEARNER})


def chosen_protocols(options: Options) -> tuple[str, ...]:
    """The protocols asked for, else the default for the learner (all with a frozen backbone)."""
    if options.protocols:
        return options.protocols
    return FINETUNE_PROTOCOLS if options.unfreeze else PROTOCOLS


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    start = time.perf_counter()
    options = dataclasses.replace(options, protocols=chosen_protocols(options))
    model = backbone.model
    config = train_config(options)
    if options.unfreeze:
        learner = FinetuneLearner(model, config, toks_per_batch=options.toks_per_batch, show_progress=True)
    else:
        learner = FrozenLearner(model, config, toks_per_batch=options.toks_per_batch)
    prepared = []
    for protein in options.assays:
        assay = load_assay(data, protein, max_variants=options.max_variants, seed=options.seed)
        print(f"{protein}: {len(assay)} variants; preparing inputs ({learner.name})")
        prepared.append(learner.prepare(assay))
    results = {
        **backbone.report_fields(),
        "weights": f"random (seed {backbone.seed})" if backbone.random_weights else "trained",
        "learner": learner.name,
        "config": vars(config),
        "seed": options.seed,
        "folds": options.folds,
        "fitness": {p.assay.protein: p.assay.fitness.tolist() for p in prepared},
    }
    results |= _protocols(learner, prepared, options, start)
    results["baseline"] = _baseline(model, config, prepared, options)
    results["seconds"] = round(time.perf_counter() - start, 1)
    write_results(
        out,
        NAME,
        results,
        _rows(results),
        title=f"Supervised mutational effect ({learner.name}, {results['weights']} {backbone.checkpoint})",
        notes=_NOTES,
        figures=_figures(results, out),
    )
    return Result(_headline(results))


def _protocols(learner, prepared: list, options: Options, start: float) -> dict:
    """Cross-validation, training-fraction sweep and leave-one-protein-out, as chosen by ``options.protocols``."""
    results = {}
    if "cv" in options.protocols:
        results["cross_validation"] = {}
        for p in prepared:
            cv = cross_validation(learner, p, options.folds, options.seed)
            results["cross_validation"][p.assay.protein] = cv
            rho = f"{cv['rho_mean']:.3f} ± {cv['rho_sd']:.3f}"
            _report(f"{p.assay.protein}: {options.folds}-fold CV rho = {rho}", start)
    if "position-cv" in options.protocols:
        results["position_cross_validation"] = {}
        for p in prepared:
            cv = cross_validation(learner, p, options.folds, options.seed, by_position=True)
            results["position_cross_validation"][p.assay.protein] = cv
            _report(f"{p.assay.protein}: {options.folds}-fold position-held-out CV rho = {cv['rho_mean']:.3f}", start)
    if "fractions" in options.protocols:
        results["training_fraction"] = {}
        for p in prepared:
            sweep = fraction_sweep(learner, p, options.fractions, options.folds, options.seed)
            results["training_fraction"][p.assay.protein] = sweep
            curve = ", ".join(f"{fraction}: {entry['rho_mean']:.3f}" for fraction, entry in sweep.items())
            _report(f"{p.assay.protein}: training fractions {curve}", start)
    if "lopo" in options.protocols and len(prepared) > 1:
        lopo = results["leave_one_protein_out"] = leave_one_protein_out(learner, prepared, options.seed)
        _report("leave one protein out: " + ", ".join(f"{k} {v['rho']:.3f}" for k, v in lopo.items()), start)
    return results


def _report(line: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.0f} s] {line}", flush=True)


def _baseline(model, config: TrainConfig, prepared: list, options: Options) -> dict:
    """Cross-validation and leave-one-protein-out of the head without the representation, for reference."""
    baseline = SubstitutionBaseline(model, config)
    inputs = [baseline.with_sites(p.assay, p.sites) for p in prepared]
    results = {"learner": baseline.name}
    if "cv" in options.protocols:
        results["cross_validation"] = {
            p.assay.protein: cross_validation(baseline, p, options.folds, options.seed) for p in inputs
        }
    if "position-cv" in options.protocols:
        results["position_cross_validation"] = {
            p.assay.protein: cross_validation(baseline, p, options.folds, options.seed, by_position=True)
            for p in inputs
        }
    if "lopo" in options.protocols and len(inputs) > 1:
        results["leave_one_protein_out"] = leave_one_protein_out(baseline, inputs, options.seed)
    for protocol in ("cross_validation", "position_cross_validation"):
        for cv in results.get(protocol, {}).values():
            del cv["out_of_fold"]  # the same in every run: nothing to pair
    return results


_NOTES = (
    "Spearman ρ between predicted and measured fitness. CV: mean ± SD (sample SD) over random folds, "
    "training on the rest (80/20 with 5 folds). Positions held out: the same, but every variant at a mutated "
    "position falls in one fold, so no test site is seen in training (random folds let any site-identifying "
    "feature learn per-position effects). Fractions: the same test folds, training on a random subset "
    "holding that fraction of the assay. LOPO: trained on all variants of the other proteins. Protocol of "
    "Rives et al., PNAS 2021, Fig. 7 and SI Figs. S5-S6; head and inputs as described in "
    "eval/variants/regression.py. Baseline rows: the same head with the representation replaced by "
    "zeros, i.e. a learned preference per amino-acid change; the gap to it is what the representation adds."
)


def _row(protein: str, protocol: str, variants: int, rho: float, sd: float | str = "") -> dict:
    return {"protein": protein, "protocol": protocol, "training variants": variants, "rho": rho, "sd": sd}


def _rows(results: dict) -> list[dict]:
    rows = []
    for prefix, block in (("", results), ("baseline: ", results.get("baseline", {}))):
        for protein, cv in block.get("cross_validation", {}).items():
            label = f"{prefix}{results['folds']}-fold CV"
            rows.append(_row(protein, label, cv["training_variants"], cv["rho_mean"], cv["rho_sd"]))
        for protein, cv in block.get("position_cross_validation", {}).items():
            label = f"{prefix}{results['folds']}-fold CV, positions held out"
            rows.append(_row(protein, label, cv["training_variants"], cv["rho_mean"], cv["rho_sd"]))
        for protein, sweep in block.get("training_fraction", {}).items():
            for fraction, entry in sweep.items():
                label = f"{prefix}train fraction {fraction}"
                rows.append(_row(protein, label, entry["training_variants"], entry["rho_mean"], entry["rho_sd"]))
        for protein, entry in block.get("leave_one_protein_out", {}).items():
            rows.append(_row(protein, f"{prefix}leave one protein out", entry["training_variants"], entry["rho"]))
    return rows


def _figures(results: dict, out: Path) -> list[str]:
    figures = []
    cv, lopo = results.get("cross_validation", {}), results.get("leave_one_protein_out", {})
    proteins = list(cv) or list(lopo)
    if proteins:
        series, errors = {}, {}
        if cv:
            series["5-fold CV (mean ± SD)"] = [cv[p]["rho_mean"] for p in proteins]
            errors["5-fold CV (mean ± SD)"] = [cv[p]["rho_sd"] for p in proteins]
        if lopo:
            series["leave one protein out"] = [lopo.get(p, {}).get("rho", float("nan")) for p in proteins]
        baseline = results.get("baseline", {}).get("cross_validation", {})
        if baseline:
            series["baseline: aa change only, CV"] = [baseline[p]["rho_mean"] for p in proteins]
            errors["baseline: aa change only, CV"] = [baseline[p]["rho_sd"] for p in proteins]
        name = f"{NAME}_rho_per_protein.png"
        grouped_bars_png(
            proteins,
            series,
            out / name,
            title=f"Supervised mutational effect: {results['learner']}",
            ylabel="Spearman ρ",
            errors=errors,
        )
        figures.append(name)
    sweep = results.get("training_fraction", {})
    if sweep:
        curves = {
            protein: (
                [float(f) for f in entries],
                [entry["rho_mean"] for entry in entries.values()],
                [entry["rho_sd"] for entry in entries.values()],
            )
            for protein, entries in sweep.items()
        }
        name = f"{NAME}_training_fraction.png"
        fraction_curve_png(out / name, curves, f"Training-fraction sweep: {results['learner']}")
        figures.append(name)
    return figures


def _headline(results: dict) -> dict:
    headline = {f"{p}_cv_rho": round(v["rho_mean"], 4) for p, v in results.get("cross_validation", {}).items()}
    positions = results.get("position_cross_validation", {})
    headline.update({f"{p}_position_cv_rho": round(v["rho_mean"], 4) for p, v in positions.items()})
    headline.update({f"{p}_lopo_rho": round(v["rho"], 4) for p, v in results.get("leave_one_protein_out", {}).items()})
    return headline


TASK = Task(NAME, __doc__, Options, run)
