"""Supervised prediction of mutational effect (Rives et al. 2021, Fig. 7; SI Figs. S5, S6; SI Table S5).

A regression head on the final-layer representation at the mutated (masked) positions, with the backbone
frozen (default) or fine-tuned with it (``--unfreeze``), is trained on deep mutational scans:
five-fold cross-validation (80% train / 20% test) per protein with Spearman ρ mean ± SD; a sweep over
the fraction of the assay used for training; and leave-one-protein-out generalisation to an unseen
fitness landscape. Assays: BLAT_ECOLX (fitness column 2500), DLG4_RAT (CRIPT), PABP_YEAST (linear).

Writes ``mutational-effect.json``, ``mutational-effect.md`` and two PNGs into ``--out``.
"""

from __future__ import annotations

import argparse
import time

from eval.cli import load_backbone
from eval.common.charts import grouped_bars_png
from eval.common.report import write_results
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

TASK = "mutational-effect"
DESCRIPTION = __doc__
PROTOCOLS = ("cv", "fractions", "lopo")
_DEFAULTS = TrainConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--assays", nargs="+", choices=list(ASSAYS), default=list(ASSAYS), help="(default: all)")
    parser.add_argument(
        "--protocols",
        nargs="+",
        choices=PROTOCOLS,
        default=list(PROTOCOLS),
        help="cv: k-fold per protein; fractions: training-fraction sweep; lopo: leave one protein out (default: all)",
    )
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5, i.e. 80/20)")
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=[0.01, 0.05, 0.1, 0.2, 0.4, 0.8],
        help="training fractions of the sweep (default: 0.01 0.05 0.1 0.2 0.4 0.8)",
    )
    parser.add_argument("--unfreeze", action="store_true", help="fine-tune the backbone with the head (slow on CPU)")
    parser.add_argument("--epochs", type=int, default=_DEFAULTS.epochs, help="head epochs, frozen backbone")
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="head batch, frozen backbone")
    parser.add_argument("--learning-rate", type=float, default=_DEFAULTS.learning_rate, help="head learning rate")
    parser.add_argument("--weight-decay", type=float, default=_DEFAULTS.weight_decay, help="AdamW weight decay")
    parser.add_argument("--finetune-epochs", type=int, default=_DEFAULTS.finetune_epochs, help="with --unfreeze")
    parser.add_argument("--finetune-batch-size", type=int, default=_DEFAULTS.finetune_batch_size, help="--unfreeze")
    parser.add_argument(
        "--backbone-learning-rate", type=float, default=_DEFAULTS.backbone_learning_rate, help="with --unfreeze"
    )
    parser.add_argument(
        "--max-variants", type=int, default=0, help="use a seeded random subset of this many per assay (0: all)"
    )
    parser.add_argument("--toks-per-batch", type=int, default=8192, help="tokens per inference batch")


def _config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        finetune_epochs=args.finetune_epochs,
        finetune_batch_size=args.finetune_batch_size,
        backbone_learning_rate=args.backbone_learning_rate,
    )


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    model = load_backbone(args)
    config = _config(args)
    if args.unfreeze:
        learner = FinetuneLearner(model, config, toks_per_batch=args.toks_per_batch, show_progress=True)
    else:
        learner = FrozenLearner(model, config, toks_per_batch=args.toks_per_batch)
    prepared = []
    for protein in args.assays:
        assay = load_assay(args.data, protein, max_variants=args.max_variants, seed=args.seed)
        print(f"{protein}: {len(assay)} variants; preparing inputs ({learner.name})")
        prepared.append(learner.prepare(assay))
    results = {
        "checkpoint": args.checkpoint,
        "weights": f"random (seed {args.seed})" if args.random_weights else "trained",
        "learner": learner.name,
        "config": vars(config),
        "seed": args.seed,
        "folds": args.folds,
    }
    if "cv" in args.protocols:
        results["cross_validation"] = {}
        for p in prepared:
            cv = results["cross_validation"][p.assay.protein] = cross_validation(learner, p, args.folds, args.seed)
            _report(f"{p.assay.protein}: {args.folds}-fold CV rho = {cv['rho_mean']:.3f} ± {cv['rho_sd']:.3f}", start)
    if "fractions" in args.protocols:
        results["training_fraction"] = {}
        for p in prepared:
            sweep = fraction_sweep(learner, p, args.fractions, args.folds, args.seed)
            results["training_fraction"][p.assay.protein] = sweep
            curve = ", ".join(f"{fraction}: {entry['rho_mean']:.3f}" for fraction, entry in sweep.items())
            _report(f"{p.assay.protein}: training fractions {curve}", start)
    if "lopo" in args.protocols and len(prepared) > 1:
        lopo = results["leave_one_protein_out"] = leave_one_protein_out(learner, prepared, args.seed)
        _report("leave one protein out: " + ", ".join(f"{k} {v['rho']:.3f}" for k, v in lopo.items()), start)
    results["baseline"] = _baseline(model, config, prepared, args)
    results["seconds"] = round(time.perf_counter() - start, 1)
    figures = _figures(results, args)
    write_results(
        args.out,
        TASK,
        results,
        _rows(results),
        title=f"Supervised mutational effect ({learner.name}, {results['weights']} {args.checkpoint})",
        notes=_NOTES,
        figures=figures,
    )
    return _headline(results)


def _report(line: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.0f} s] {line}", flush=True)


def _baseline(model, config: TrainConfig, prepared: list, args: argparse.Namespace) -> dict:
    """Cross-validation and leave-one-protein-out of the head without the representation, for reference."""
    baseline = SubstitutionBaseline(model, config)
    inputs = [baseline.with_sites(p.assay, p.sites) for p in prepared]
    results = {"learner": baseline.name}
    if "cv" in args.protocols:
        results["cross_validation"] = {
            p.assay.protein: cross_validation(baseline, p, args.folds, args.seed) for p in inputs
        }
    if "lopo" in args.protocols and len(inputs) > 1:
        results["leave_one_protein_out"] = leave_one_protein_out(baseline, inputs, args.seed)
    return results


_NOTES = (
    "Spearman ρ between predicted and measured fitness. CV: mean ± SD (sample SD) over random folds, "
    "training on the rest (80/20 with 5 folds). Fractions: the same test folds, training on a random subset "
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
        for protein, sweep in block.get("training_fraction", {}).items():
            for fraction, entry in sweep.items():
                label = f"{prefix}train fraction {fraction}"
                rows.append(_row(protein, label, entry["training_variants"], entry["rho_mean"], entry["rho_sd"]))
        for protein, entry in block.get("leave_one_protein_out", {}).items():
            rows.append(_row(protein, f"{prefix}leave one protein out", entry["training_variants"], entry["rho"]))
    return rows


def _figures(results: dict, args: argparse.Namespace) -> list[str]:
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
        name = f"{TASK}_rho_per_protein.png"
        grouped_bars_png(
            proteins,
            series,
            args.out / name,
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
        name = f"{TASK}_training_fraction.png"
        fraction_curve_png(args.out / name, curves, f"Training-fraction sweep: {results['learner']}")
        figures.append(name)
    return figures


def _headline(results: dict) -> dict:
    headline = {f"{p}_cv_rho": round(v["rho_mean"], 4) for p, v in results.get("cross_validation", {}).items()}
    headline.update({f"{p}_lopo_rho": round(v["rho"], 4) for p, v in results.get("leave_one_protein_out", {}).items()})
    return headline
