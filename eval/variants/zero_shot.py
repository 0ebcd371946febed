"""Zero-shot variant scoring on deep mutational scans (Meier et al. 2021): Spearman ρ of each strategy per assay.

Scores every variant of each assay with ``wt-marginals`` and ``masked-marginals`` (see
esm_jax/inference/variant_scoring.py) and, because it needs one forward pass per residue per variant,
``pseudo-ppl`` on a seeded random subset of ``--pseudo-ppl-variants`` variants (0 skips it). The published
per-assay Spearman ρ of ESM-1v and ESM-1b from Meier et al. (fair-esm's rho_pp.csv, in the data folder)
are listed beside ours when the file is present. Writes ``zero-shot-variants.json``/``.md`` and a PNG.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from esm_jax.inference.rank_correlation import spearman
from esm_jax.inference.variant_scoring import score_mutants
from eval.cli import load_backbone
from eval.common.charts import grouped_bars_png
from eval.common.report import write_results
from eval.variants.assays import ASSAYS, Assay, load_assay

TASK = "zero-shot-variants"
DESCRIPTION = __doc__
PUBLISHED = "esm_examples/rho_pp.csv"
PUBLISHED_METHODS = ("ESM-1v (zero shot)", "ESM-1b")
MARGINALS = ("wt-marginals", "masked-marginals")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--assays", nargs="+", choices=list(ASSAYS), default=list(ASSAYS), help="(default: all)")
    parser.add_argument(
        "--strategies",
        nargs="+",
        choices=MARGINALS,
        default=list(MARGINALS),
        help="strategies scored on every variant (default: both; pseudo-ppl: see --pseudo-ppl-variants)",
    )
    parser.add_argument(
        "--pseudo-ppl-variants",
        type=int,
        default=0,
        help="also score pseudo-ppl on a seeded random subset of this many variants per assay (0: skip, the default)",
    )
    parser.add_argument("--toks-per-batch", type=int, default=8192, help="tokens per batch (default: 8192)")


def published_rho(data_dir: Path) -> dict[str, dict[str, float]]:
    """Meier et al.'s per-assay Spearman ρ by published assay name and method (empty if the file is absent)."""
    path = data_dir / PUBLISHED
    if not path.is_file():
        return {}
    table: dict[str, dict[str, float]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["prediction_name"] in PUBLISHED_METHODS:
                table.setdefault(row["protein_name"], {})[row["prediction_name"]] = float(row["rho"])
    return table


def _score_assay(model, assay: Assay, args: argparse.Namespace) -> dict:
    results = {}
    for strategy in args.strategies:
        scores = score_mutants(
            model, assay.wild_type, assay.mutants, strategy, toks_per_batch=args.toks_per_batch, show_progress=True
        )
        results[strategy] = {"rho": spearman(scores, assay.fitness), "variants": len(assay)}
    if args.pseudo_ppl_variants > 0:
        count = min(args.pseudo_ppl_variants, len(assay))
        chosen = np.sort(np.random.default_rng(args.seed).choice(len(assay), size=count, replace=False))
        subset = assay.subset(chosen)
        scores = score_mutants(
            model,
            subset.wild_type,
            subset.mutants,
            "pseudo-ppl",
            toks_per_batch=args.toks_per_batch,
            show_progress=True,
        )
        results["pseudo-ppl"] = {"rho": spearman(scores, subset.fitness), "variants": count}
    return results


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    model = load_backbone(args)
    published = published_rho(args.data)
    per_assay = {}
    for protein in args.assays:
        assay = load_assay(args.data, protein)
        print(f"{protein}: {len(assay)} variants")
        per_assay[protein] = {
            "ours": _score_assay(model, assay, args),
            "published_abs_rho": published.get(ASSAYS[protein].published_name, {}),
        }
    results = {
        "checkpoint": args.checkpoint,
        "weights": f"random (seed {args.seed})" if args.random_weights else "trained",
        "assays": per_assay,
        "seconds": round(time.perf_counter() - start, 1),
    }
    rows = []
    for protein, entry in per_assay.items():
        for strategy, value in entry["ours"].items():
            rows.append(
                {"assay": protein, "method": f"ours: {strategy}", "variants": value["variants"], "rho": value["rho"]}
            )
        for method, value in entry["published_abs_rho"].items():
            rows.append(
                {"assay": protein, "method": f"Meier et al. 2021: {method} (absolute ρ)", "variants": "", "rho": value}
            )
    figure = f"{TASK}_rho.png"
    strategies = list(next(iter(per_assay.values()))["ours"]) if per_assay else []
    series = {s: [per_assay[p]["ours"].get(s, {}).get("rho", np.nan) for p in per_assay] for s in strategies}
    for method in PUBLISHED_METHODS:
        series[f"{method}, |ρ| (Meier et al. 2021)"] = [
            per_assay[p]["published_abs_rho"].get(method, np.nan) for p in per_assay
        ]
    grouped_bars_png(
        list(per_assay),
        series,
        args.out / figure,
        title=f"Zero-shot Spearman ρ ({args.checkpoint}, {results['weights']})",
        ylabel="Spearman ρ",
    )
    write_results(
        args.out,
        TASK,
        results,
        rows,
        title=f"Zero-shot variant scoring ({results['weights']} {args.checkpoint})",
        notes=(
            "Spearman ρ of zero-shot scores against measured fitness (all rows of each CSV, synonymous mutants "
            "included). Published rows: Meier et al. 2021 (ESM-1v paper), per-assay |ρ| from fair-esm's "
            "examples/variant-prediction/data/rho_pp.csv."
        ),
        figures=[figure],
    )
    return {f"{p}_{s}_rho": round(v["rho"], 4) for p, e in per_assay.items() for s, v in e["ours"].items()}
