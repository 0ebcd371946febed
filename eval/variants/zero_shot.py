"""Zero-shot variant scoring on deep mutational scans (Meier et al. 2021): Spearman ρ of each strategy per assay.

Scores every variant of each assay with ``wt-marginals`` and ``masked-marginals`` (see
esm_jax/inference/variant_scoring.py) and, because it needs one forward pass per residue per variant,
``pseudo-ppl`` on a seeded random subset of ``--pseudo-ppl-variants`` variants (0 skips it). The published
per-assay Spearman ρ of ESM-1v and ESM-1b from Meier et al. (fair-esm's rho_pp.csv, in the data folder)
are listed beside ours when the file is present. Every ρ of ours and of the BLOSUM62 baseline carries a 95%
percentile-bootstrap interval over variants, and each strategy the paired difference ρ(strategy) − ρ(BLOSUM62) over
the same resampled variants. Writes ``zero-shot-variants.json``/``.md`` and a PNG.
"""

from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path

import numpy as np
from Bio.Align import substitution_matrices

from data_pipeline.layout import dataset_file
from esm_jax.errors import EsmJaxError
from esm_jax.inference.rank_correlation import spearman
from esm_jax.inference.variant_scoring import score_mutants
from eval.common.charts import grouped_bars_png
from eval.common.report import interval_text, write_results
from eval.common.statistics import (
    RESAMPLES,
    bootstrap_statistic,
    difference_interval,
    percentile_interval,
    resample_indices,
)
from eval.common.task import Backbone, Result, Task, TaskOptions, option
from eval.variants.assays import ASSAYS, Assay, load_assay

NAME = "zero-shot-variants"
PUBLISHED = "esm_examples/rho_pp.csv"
PUBLISHED_METHODS = ("ESM-1v (zero shot)", "ESM-1b")
MARGINALS = ("wt-marginals", "masked-marginals")
NO_DIFFERENCE = "no difference shown from the BLOSUM62 baseline"


@dataclasses.dataclass(frozen=True)
class Options(TaskOptions):
    assays: tuple[str, ...] = option(tuple(ASSAYS), "assays to score", choices=tuple(ASSAYS))
    strategies: tuple[str, ...] = option(
        MARGINALS, "strategies scored on every variant (pseudo-ppl: see --pseudo-ppl-variants)", choices=MARGINALS
    )
    pseudo_ppl_variants: int = option(
        0, "also score pseudo-ppl on a seeded random subset of this many per assay (0: skip)"
    )
    toks_per_batch: int = option(8192, "tokens per batch")
    resamples: int = option(RESAMPLES, "bootstrap resamples of the variants for the 95% intervals of ρ")


def published_rho(data_dir: Path) -> dict[str, dict[str, float]]:
    """Meier et al.'s per-assay Spearman ρ by published assay name and method (empty if the file is absent)."""
    path = dataset_file(PUBLISHED, data_dir, required=False)
    if not path.is_file():
        return {}
    table: dict[str, dict[str, float]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["prediction_name"] in PUBLISHED_METHODS:
                table.setdefault(row["protein_name"], {})[row["prediction_name"]] = float(row["rho"])
    return table


def blosum62_scores(assay: Assay) -> np.ndarray:
    """A baseline that knows no protein: per variant, the sum over its substitutions of BLOSUM62[wild type, mutant]
    minus BLOSUM62[wild type, wild type] (0 for a synonymous change, like a log-ratio to the wild type)."""
    matrix = substitution_matrices.load("BLOSUM62")
    return np.array(
        [
            sum(matrix[s.wild_type][s.mutant] - matrix[s.wild_type][s.wild_type] for s in m.substitutions)
            for m in assay.mutants
        ],
        dtype=np.float64,
    )


class Baseline:
    """A reference's ρ on one set of variants in each bootstrap resample, to pair other scores with.

    The reference is the BLOSUM62 baseline, or another run's scores of the same variants.
    """

    def __init__(self, scores: np.ndarray, fitness: np.ndarray, seed: int, resamples: int) -> None:
        self.fitness = np.asarray(fitness, dtype=np.float64)
        self.draws = resample_indices(len(self.fitness), seed=seed, resamples=resamples)
        self.rho = spearman(scores, self.fitness)
        self.resampled = self.resampled_rho(scores)

    def resampled_rho(self, scores: np.ndarray) -> np.ndarray:
        """Spearman ρ of ``scores`` against fitness in each resample of the variants (NaN where undefined)."""
        scores = np.asarray(scores, dtype=np.float64)
        return bootstrap_statistic(lambda rows: spearman(scores[rows], self.fitness[rows]), self.draws)

    def summary(self) -> dict:
        """The baseline's own ρ, its interval over the resamples and the number of variants."""
        return {"rho": self.rho, "rho ci95": percentile_interval(self.resampled), "variants": len(self.fitness)}

    def compare(self, scores: np.ndarray) -> dict:
        """ρ of ``scores`` with its interval, and ρ − ρ(BLOSUM62) over the same resamples with its interval."""
        rho, resampled = spearman(scores, self.fitness), self.resampled_rho(scores)
        difference = difference_interval(rho - self.rho, resampled - self.resampled)
        return {
            "rho": rho,
            "variants": len(self.fitness),
            "rho ci95": percentile_interval(resampled),
            "minus_blosum62": difference,
            "verdict": _verdict(difference),
        }


def _verdict(difference: dict) -> str:
    """Above or below the baseline only where the interval of the difference excludes zero."""
    if not difference["excludes_zero"]:
        return NO_DIFFERENCE
    return f"{'above' if difference['ci95'][0] > 0 else 'below'} the BLOSUM62 baseline"


def rho_difference_between_runs(
    first: dict, second: dict, seed: int = 0, *, protein: str, strategy: str
) -> dict | None:
    """ρ of the first run's ``strategy`` scores minus the second's on ``protein``, paired over resampled variants.

    ``first`` and ``second`` are two runs' results; None when either lacks per-variant scores (written before they
    were kept, or a strategy it did not score). Two runs that scored different variants are refused.
    """
    runs = [results.get("per_variant", {}).get(protein) for results in (first, second)]
    if not all(runs) or not all(strategy in run["scores"] for run in runs):
        return None
    if runs[0]["mutants"] != runs[1]["mutants"] or runs[0]["fitness"] != runs[1]["fitness"]:
        raise EsmJaxError(
            f"{NAME}: the two runs scored different {protein} variants or fitness values; "
            "rerun both with the same --data"
        )
    fitness = np.asarray(runs[0]["fitness"], dtype=np.float64)
    reference = Baseline(np.asarray(runs[1]["scores"][strategy]), fitness, seed, RESAMPLES)
    ours = np.asarray(runs[0]["scores"][strategy], dtype=np.float64)
    return difference_interval(
        spearman(ours, fitness) - reference.rho, reference.resampled_rho(ours) - reference.resampled
    )


def _score_assay(model, assay: Assay, options: Options) -> tuple[dict, dict, dict]:
    """Each strategy's ρ against the BLOSUM62 baseline on the same variants, the baseline's own ρ, and the scores."""
    blosum = blosum62_scores(assay)
    baseline = Baseline(blosum, assay.fitness, options.seed, options.resamples)
    results = {}
    per_variant = {
        "mutants": [mutant.text for mutant in assay.mutants],
        "fitness": np.asarray(assay.fitness).tolist(),
        "scores": {},
    }
    for strategy in options.strategies:
        scores = score_mutants(
            model, assay.wild_type, assay.mutants, strategy, toks_per_batch=options.toks_per_batch, show_progress=True
        )
        results[strategy] = baseline.compare(scores)
        per_variant["scores"][strategy] = np.asarray(scores, dtype=np.float64).tolist()
    if options.pseudo_ppl_variants > 0:
        count = min(options.pseudo_ppl_variants, len(assay))
        chosen = np.sort(np.random.default_rng(options.seed).choice(len(assay), size=count, replace=False))
        subset = assay.subset(chosen)
        scores = score_mutants(
            model,
            subset.wild_type,
            subset.mutants,
            "pseudo-ppl",
            toks_per_batch=options.toks_per_batch,
            show_progress=True,
        )
        results["pseudo-ppl"] = Baseline(blosum[chosen], subset.fitness, options.seed, options.resamples).compare(
            scores
        )
    return results, baseline.summary(), per_variant


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    start = time.perf_counter()
    model = backbone.model
    published = published_rho(data)
    per_assay, per_variant = {}, {}
    for protein in options.assays:
        assay = load_assay(data, protein)
        print(f"{protein}: {len(assay)} variants")
        ours, blosum62, per_variant[protein] = _score_assay(model, assay, options)
        per_assay[protein] = {
            "ours": ours,
            "blosum62": blosum62,
            "published_abs_rho": published.get(ASSAYS[protein].published_name, {}),
        }
    results = {
        **backbone.report_fields(),
        "weights": f"random (seed {backbone.seed})" if backbone.random_weights else "trained",
        "assays": per_assay,
        "per_variant": per_variant,
        "seconds": round(time.perf_counter() - start, 1),
    }
    figure = f"{NAME}_rho.png"
    _figure(per_assay, out / figure, f"Zero-shot Spearman ρ ({backbone.checkpoint}, {results['weights']})")
    write_results(
        out,
        NAME,
        results,
        _rows(per_assay),
        title=f"Zero-shot variant scoring ({results['weights']} {backbone.checkpoint})",
        notes=(
            "Spearman ρ of zero-shot scores against measured fitness (all rows of each CSV, synonymous mutants "
            "included). Baseline: the BLOSUM62 score of each substitution relative to the wild type, which knows no "
            "protein; a model adds something only above it. Intervals are 95% percentile-bootstrap intervals over "
            f"variants ({options.resamples} resamples); ρ − BLOSUM62 is computed on the same resampled variants "
            "(pseudo-ppl: on its subset), and a strategy is called above or below the baseline only where that "
            "interval excludes zero. Published rows: Meier et al. 2021 (ESM-1v paper), "
            "per-assay |ρ| from fair-esm's examples/variant-prediction/data/rho_pp.csv."
        ),
        figures=[figure],
    )
    return Result({f"{p}_{s}_rho": round(v["rho"], 4) for p, e in per_assay.items() for s, v in e["ours"].items()})


def _rows(per_assay: dict) -> list[dict]:
    """One table row per assay and strategy of ours, then per published method."""
    rows = []
    for protein, entry in per_assay.items():
        for strategy, value in entry["ours"].items():
            difference = value["minus_blosum62"]
            rows.append(
                {"assay": protein, "method": f"ours: {strategy}", "variants": value["variants"], "rho": value["rho"]}
                | {"rho 95% CI": interval_text(value["rho ci95"])}
                | {"ρ − BLOSUM62": difference["difference"], "ρ − BLOSUM62 95% CI": interval_text(difference["ci95"])}
                | {"vs BLOSUM62": value["verdict"]}
            )
        baseline = entry["blosum62"]
        rows.append(
            {"assay": protein, "method": "BLOSUM62 substitution score (baseline)", "variants": baseline["variants"]}
            | {"rho": baseline["rho"], "rho 95% CI": interval_text(baseline["rho ci95"])}
        )
        for method, value in entry["published_abs_rho"].items():
            rows.append(
                {"assay": protein, "method": f"Meier et al. 2021: {method} (absolute ρ)", "variants": "", "rho": value}
            )
    return rows


def _figure(per_assay: dict, path: Path, title: str) -> None:
    """Bars of ρ per assay: each of our strategies beside the published methods."""
    strategies = list(next(iter(per_assay.values()))["ours"]) if per_assay else []
    series = {s: [per_assay[p]["ours"].get(s, {}).get("rho", np.nan) for p in per_assay] for s in strategies}
    series["BLOSUM62 baseline"] = [per_assay[p]["blosum62"]["rho"] for p in per_assay]
    for method in PUBLISHED_METHODS:
        series[f"{method}, |ρ| (Meier et al. 2021)"] = [
            per_assay[p]["published_abs_rho"].get(method, np.nan) for p in per_assay
        ]
    grouped_bars_png(list(per_assay), series, path, title=title, ylabel="Spearman ρ")


TASK = Task(NAME, __doc__, Options, run)
