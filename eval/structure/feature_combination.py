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

import argparse
from pathlib import Path

import numpy as np

from eval.cli import load_backbone
from eval.common.report import write_results
from eval.structure.contacts.deep_runs import add_resnet_arguments, resnet_runs, summary_row
from eval.structure.contacts.plans import aligned_subplan, build_plans, embed_all
from eval.structure.msa.baselines import profile_features
from eval.structure.msa.representations import average, covariance, embed_alignments

DESCRIPTION = __doc__
TASK = "feature-combination"
COMBINATIONS = ("direct", "avg", "cov")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sets", default="kortemme", help="contact sets (default: kortemme)")
    parser.add_argument("--max-proteins", type=int, default=None, help="first N proteins of each set (default: all)")
    parser.add_argument("--folds", type=int, default=5, help="folds for sets without group labels (default: 5)")
    parser.add_argument("--layer", type=int, default=-1, help="representation layer (default: -1, the last)")
    parser.add_argument("--msa-rows", type=int, default=16, help="alignment rows embedded per protein (default: 16)")
    parser.add_argument("--pca", type=int, default=8, help="PCA dimensions for cov (k² pair features; default: 8)")
    parser.add_argument("--msa-max-sequences", type=int, default=256, help="rows for the profile (0: all)")
    add_resnet_arguments(parser)


def run(args: argparse.Namespace) -> dict:
    model = load_backbone(args)
    (layer,) = model.normalize_layers([args.layer])
    plans = build_plans(args.sets.split(","), Path(args.data), args.max_proteins, args.folds, args.seed)
    plans = [sub for sub in map(aligned_subplan, plans) if sub is not None]
    embeddings = embed_all(model, plans, [layer], args.toks_per_batch)
    results, rows = {"sets": {}, "layer": layer}, []
    for plan in plans:
        direct = [embeddings[p.name][layer] for p in plan.proteins]
        msa = embed_alignments(model, plan.proteins, direct, layer, args.msa_rows, args.seed, args.toks_per_batch)
        inputs = {"direct": (direct, None), "avg": (average(msa), None), "cov": (direct, covariance(msa, args.pca))}
        profiles = [profile_features(p, args.msa_max_sequences or None, args.seed) for p in plan.proteins]
        entry = {"scheme": plan.scheme, "proteins": plan.tested, "features": {}}
        for name in COMBINATIONS:
            residue, pairs = inputs[name]
            with_profile = [np.concatenate([r, q], axis=1) for r, q in zip(residue, profiles, strict=True)]
            for label, per_residue in ((name, residue), (f"{name} + profile", with_profile)):
                summary = resnet_runs(plan, per_residue, args, pairs)
                entry["features"][label] = summary
                rows.append(summary_row(TASK, plan, label, summary))
        results["sets"][plan.name] = entry
    results |= {
        "msa_rows": args.msa_rows,
        "pca": args.pca,
        "seeds": args.seeds,
        "steps": args.steps,
        "checkpoint": args.checkpoint,
        "random_weights": bool(args.random_weights),
    }
    notes = (
        f"{args.msa_rows} alignment rows embedded per protein (plus the query); cov uses {args.pca}² pair features; "
        f"dilated ResNet, {args.steps} steps per fold, mean ± SD over {args.seeds} seeds."
    )
    write_results(args.out, TASK, results, rows, title="Feature combination: contacts", notes=notes)
    return {f"{s} {n}": e["features"][n]["long P@L"]["mean"] for s, e in results["sets"].items() for n in e["features"]}
