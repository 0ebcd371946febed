"""Feature combination (ESM-1b Tables 6, 7): direct, MSA-averaged and MSA-covariance representations.

For each protein with an alignment, sampled rows are embedded and placed on the query's residues
(:mod:`eval.structure.msa.representations`): ``direct`` is the query's own representation, ``avg`` the mean over
the rows at each aligned position, ``cov`` the direct features plus the uncentered covariance over the rows of
PCA-reduced representations as pair features. Each is fed to the same dilated-ResNet contact head, with and
without the sequence profile appended per residue, cross-validated as in ``contacts-deep`` (mean ± SD over
seeds). Secondary-structure feature combination (Table 6) needs alignments for CB513 and the other test sets,
which the shared data does not have, so only contacts are combined here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from eval.common import published
from eval.common.report import write_results
from eval.common.task import Backbone, Result, Task, option
from eval.structure.contacts.deep_runs import ResNetOptions, resnet_runs, summary_row
from eval.structure.contacts.plans import aligned_subplan, build_plans, embed_all
from eval.structure.msa.baselines import profile_features
from eval.structure.msa.representations import average, covariance, embed_alignments

NAME = "feature-combination"
COMBINATIONS = ("direct", "avg", "cov")


@dataclasses.dataclass(frozen=True)
class Options(ResNetOptions):
    sets: str = option("kortemme", "comma-separated contact sets")
    layer: int = option(-1, "representation layer (-1: the last)")
    msa_rows: int = option(16, "alignment rows embedded per protein")
    pca: int = option(8, "PCA dimensions for cov (k² pair features)")


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    model = backbone.model
    (layer,) = model.normalize_layers([options.layer])
    plans = build_plans(options.sets.split(","), Path(data), options.max_proteins, options.folds, options.seed)
    plans = [sub for sub in map(aligned_subplan, plans) if sub is not None]
    embeddings = embed_all(model, plans, [layer], options.toks_per_batch)
    results, rows = {"sets": {}, "layer": layer}, []
    for plan in plans:
        direct = [embeddings[p.name][layer] for p in plan.proteins]
        msa = embed_alignments(
            model, plan.proteins, direct, layer, options.msa_rows, options.seed, options.toks_per_batch
        )
        inputs = {"direct": (direct, None), "avg": (average(msa), None), "cov": (direct, covariance(msa, options.pca))}
        profiles = [profile_features(p, options.msa_max_sequences or None, options.seed) for p in plan.proteins]
        entry = {"scheme": plan.scheme, "proteins": plan.tested, "features": {}}
        for name in COMBINATIONS:
            residue, pairs = inputs[name]
            with_profile = [np.concatenate([r, q], axis=1) for r, q in zip(residue, profiles, strict=True)]
            for label, per_residue in ((name, residue), (f"{name} + profile", with_profile)):
                summary, _ = resnet_runs(plan, per_residue, options, pairs)
                entry["features"][label] = summary
                rows.append(summary_row(NAME, plan, label, summary))
        results["sets"][plan.name] = entry
    results |= {
        "msa_rows": options.msa_rows,
        "pca": options.pca,
        "seeds": options.seeds,
        "steps": options.steps,
    } | backbone.report_fields()
    notes = (
        f"{options.msa_rows} alignment rows embedded per protein (plus the query); "
        f"cov uses {options.pca}² pair features; dilated ResNet, {options.steps} steps per fold, "
        f"mean ± SD over {options.seeds} seeds."
    )
    tables = (published.FEATURE_COMBINATION_CONTACTS, published.FEATURE_COMBINATION_SECONDARY_STRUCTURE)
    write_results(out, NAME, results, rows, title="Feature combination: contacts", notes=notes, published=tables)
    return Result(
        {f"{s} {n}": e["features"][n]["long P@L"]["mean"] for s, e in results["sets"].items() for n in e["features"]}
    )


TASK = Task(NAME, __doc__, Options, run)
