"""Paired comparison of two results of one task, e.g. a trained checkpoint and its ``--random-weights`` twin.

Tasks that score items one by one (proteins, domains, queries, structures) list each item's value under
``per_item`` in their results JSON. For every metric in both files, over the items both scored, this reports the
mean of first − second with its 95% percentile-bootstrap interval over items (resampled in pairs,
:func:`eval.common.statistics.paired_difference`). A run is said to be higher only where the interval excludes
zero; otherwise the verdict is "no difference shown".
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from esm_jax.errors import EsmJaxError
from eval.common.report import write_results
from eval.common.statistics import paired_difference
from eval.common.task import Backbone, Result, Task, TaskOptions, option

NAME = "compare"
NO_DIFFERENCE = "no difference shown"
# below this many shared items a percentile-bootstrap interval means little (2 items give a near-zero width)
MIN_PAIRED_ITEMS = 10


@dataclasses.dataclass(frozen=True)
class Options(TaskOptions):
    first: Path | None = option(None, "results JSON of one run (<task>.json; e.g. the trained checkpoint)")
    second: Path | None = option(None, "results JSON of the same task from the other run (e.g. --random-weights)")


@dataclasses.dataclass(frozen=True)
class ResultsFile:
    """One results file: where it is, the task that wrote it, its backbone, and its per-item values by metric."""

    path: Path
    task: str
    backbone: dict[str, Any]
    per_item: dict[str, dict[str, float]]


def read_results(path: Path | None, flag: str) -> ResultsFile:
    """The results file at ``path``; one that is missing, not JSON, or without ``task`` or ``per_item`` is refused."""
    if path is None:
        raise EsmJaxError(f"{NAME}: {flag}: give a results JSON file (<task>.json written by esm-jax eval)")
    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        reason = error.strerror or error
        raise EsmJaxError(f"{NAME}: {path}: cannot read it ({reason}); give a results JSON file") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EsmJaxError(f"{NAME}: {path}: not JSON ({error}); give a <task>.json written by esm-jax eval") from error
    if not isinstance(results, dict) or not isinstance(results.get("task"), str):
        raise EsmJaxError(f"{NAME}: {path}: no 'task' field saying which task wrote it; rerun the task to rewrite it")
    if not isinstance(results.get("per_item"), dict) or not results["per_item"]:
        raise EsmJaxError(
            f"{NAME}: {path}: no per_item table (task {results['task']}); give results of aa-embeddings, "
            "remote-homology, family-alignment, contacts-linear, contacts-unsupervised, contacts-deep, "
            "secondary-structure-linear, secondary-structure-deep or structural-holdout written by this version "
            "(language-model, zero-shot-variants and mutational-effect are paired by `esm-jax eval summary`)"
        )
    backbone = {key: results.get(key) for key in ("checkpoint", "random_weights", "weights_sha256")}
    return ResultsFile(path, results["task"], backbone, _per_item(path, results["per_item"]))


def _per_item(path: Path, table: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``per_item`` checked: metric -> item id -> number; values that are not finite count as not scored."""
    checked = {}
    for metric, items in table.items():
        if not isinstance(items, dict):
            raise EsmJaxError(f"{NAME}: {path}: per_item[{metric!r}] is not a table of item id -> value")
        for item, value in items.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise EsmJaxError(f"{NAME}: {path}: per_item[{metric!r}][{item!r}] = {value!r} is not a number")
        checked[metric] = {item: float(value) for item, value in items.items() if math.isfinite(value)}
    return checked


def verdict(difference: Mapping[str, Any]) -> str:
    """Which run is higher, said only where the interval of first − second excludes zero."""
    if not difference["excludes_zero"]:
        return NO_DIFFERENCE
    return "first higher" if difference["ci95_low"] > 0 else "second higher"


def compare_metric(first: Mapping[str, float], second: Mapping[str, float], seed: int) -> dict[str, Any] | None:
    """Mean first − second over the items both scored, with interval and verdict (None: no item in both)."""
    shared = [item for item in first if item in second]
    if not shared:
        return None
    ours, theirs = [first[item] for item in shared], [second[item] for item in shared]
    means = {"first_mean": sum(ours) / len(ours), "second_mean": sum(theirs) / len(theirs)}
    if len(shared) < MIN_PAIRED_ITEMS:
        mean = means["first_mean"] - means["second_mean"]
        too_few = f"{len(shared)} items: too few for an interval"
        return means | {"n": len(shared), "mean": mean, "ci95_low": math.nan, "ci95_high": math.nan, "verdict": too_few}
    difference = paired_difference(ours, theirs, seed=seed) | means
    return difference | {"verdict": verdict(difference)}


def compare(first: ResultsFile, second: ResultsFile, seed: int) -> tuple[dict[str, dict], dict[str, str]]:
    """Every metric in both files compared over its shared items, and why the other metrics were not."""
    if first.task != second.task:
        raise EsmJaxError(
            f"{NAME}: {second.path}: results of task {second.task!r}, but {first.path} is of {first.task!r}; "
            "compare two results of the same task"
        )
    differences, skipped = {}, {}
    for metric in sorted(set(first.per_item) | set(second.per_item)):
        if metric not in first.per_item or metric not in second.per_item:
            skipped[metric] = f"only in {first.path if metric in first.per_item else second.path}"
            continue
        found = compare_metric(first.per_item[metric], second.per_item[metric], seed)
        if found is None:
            skipped[metric] = "no item scored in both"
        else:
            differences[metric] = found
    if not differences:
        raise EsmJaxError(
            f"{NAME}: {first.path} and {second.path} share no scored item under any metric; compare runs of the "
            "task on the same data"
        )
    return differences, skipped


def _row(metric: str, difference: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "metric": metric,
        "items": difference["n"],
        "first": difference["first_mean"],
        "second": difference["second_mean"],
        "first − second": difference["mean"],
        "95% interval": _interval_text(difference),
        "verdict": difference["verdict"],
    }


def _interval_text(difference: Mapping[str, Any]) -> str:
    low, high = difference["ci95_low"], difference["ci95_high"]
    return f"[{low:.4g}, {high:.4g}]" if math.isfinite(low) else ""


def _describe(results: ResultsFile) -> str:
    weights = " (random weights)" if results.backbone["random_weights"] else ""
    digest = f", weights {results.backbone['weights_sha256']}" if results.backbone["weights_sha256"] else ""
    return f"{results.path}: {results.backbone['checkpoint']}{weights}{digest}"


def _notes(first: ResultsFile, second: ResultsFile, skipped: Mapping[str, str]) -> str:
    left_out = "".join(f" {metric}: {reason}." for metric, reason in skipped.items())
    return (
        f"First: {_describe(first)}. Second: {_describe(second)}. Each row pairs the items both runs scored "
        "(ids present in both), and gives both runs' means over them and the mean of first − second with its 95% "
        "percentile-bootstrap interval over items resampled in pairs. The verdict names a run only where that "
        "interval excludes zero (no difference); otherwise it says 'no difference shown'."
        + (f" Not compared:{left_out}" if left_out else "")
    )


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    first, second = read_results(options.first, "--first"), read_results(options.second, "--second")
    differences, skipped = compare(first, second, options.seed)
    results = {
        "compared_task": first.task,
        "first": {"path": str(first.path), **first.backbone},
        "second": {"path": str(second.path), **second.backbone},
        "differences": differences,
        "not_compared": skipped,
    }
    write_results(
        out,
        NAME,
        results,
        [_row(metric, difference) for metric, difference in differences.items()],
        title=f"Paired comparison: {first.task}",
        notes=_notes(first, second, skipped),
    )
    return Result({metric: difference["mean"] for metric, difference in differences.items()})


def _skip(backbone: Backbone, options: Options) -> str | None:
    """``esm-jax eval all`` never runs ``compare``: it reads two results files, not a backbone."""
    return "compares two results files (--first, --second): run it on its own"


TASK = Task(NAME, __doc__, Options, run, needs_checkpoint=False, skip_reason=_skip)
