"""Contacts with a deep head (ESM-1b Table 5): a dilated residual 2-D convolution network on frozen features.

The same network (:class:`eval.common.deep_heads.DilatedResNet`) and schedule are trained on each representation — a
backbone layer, the MSA sequence profile, and one-hot amino acids — cross-validated as the linear probe is
(Kortemme domains leaving one SCOP class out; CASP12 after training on Kortemme), and summarised as mean ± SD of
top-L/k precision over seeds. The profile is computed only where an alignment exists, so every feature set is
scored on the proteins that have one. Defaults are small for CPUs; the full protocol is about
``--steps 3000 --channels 64 --blocks 16``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eval.cli import load_backbone
from eval.common import published
from eval.common.report import write_results
from eval.common.representations import feature_layer
from eval.structure.contacts.deep_runs import add_resnet_arguments, resnet_runs, summary_row
from eval.structure.contacts.plans import aligned_subplan, build_plans, embed_all
from eval.structure.msa.baselines import profile_features
from eval.structure.msa.features import one_hot_features

DESCRIPTION = __doc__
TASK = "contacts-deep"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sets", default="kortemme,casp12", help="contact sets (default: kortemme,casp12)")
    parser.add_argument("--features", default="last,profile,onehot", help="'last', a layer, 'profile', 'onehot'")
    parser.add_argument("--max-proteins", type=int, default=None, help="first N proteins of each set (default: all)")
    parser.add_argument("--folds", type=int, default=5, help="folds for sets without group labels (default: 5)")
    parser.add_argument("--msa-max-sequences", type=int, default=256, help="rows for the profile (0: all)")
    add_resnet_arguments(parser)


def features_for(model, plan, name: str, embeddings: dict, args) -> list:
    """One (L, D) array per protein of ``plan`` for the feature set ``name``."""
    if name == "profile":
        return [profile_features(p, args.msa_max_sequences or None, args.seed) for p in plan.proteins]
    if name == "onehot":
        return [one_hot_features(p.sequence) for p in plan.proteins]
    return [embeddings[p.name][feature_layer(model, name)] for p in plan.proteins]


def run(args: argparse.Namespace) -> dict:
    model = load_backbone(args)
    names = args.features.split(",")
    plans = build_plans(args.sets.split(","), Path(args.data), args.max_proteins, args.folds, args.seed)
    plans = [sub for sub in map(aligned_subplan, plans) if sub is not None]
    layers = sorted({feature_layer(model, n) for n in names if n not in ("profile", "onehot")})
    embeddings = embed_all(model, plans, layers, args.toks_per_batch) if layers else {}
    results, rows = {"sets": {}}, []
    for plan in plans:
        entry = {"scheme": plan.scheme, "proteins": plan.tested, "features": {}}
        for name in names:
            summary = resnet_runs(plan, features_for(model, plan, name, embeddings, args), args)
            entry["features"][name] = summary
            rows.append(summary_row(TASK, plan, name, summary))
        results["sets"][plan.name] = entry
    results |= {
        "seeds": args.seeds,
        "steps": args.steps,
        "checkpoint": args.checkpoint,
        "random_weights": bool(args.random_weights),
    }
    notes = (
        f"Dilated ResNet ({args.blocks} blocks, {args.channels} channels), {args.steps} steps per fold; "
        f"mean ± SD over {args.seeds} seeds; long-range columns shown, all bands in the JSON."
    )
    write_results(
        args.out, TASK, results, rows, title="Contacts: deep head", notes=notes, published=published.CONTACTS_DEEP
    )
    return {f"{s} {n}": e["features"][n]["long P@L"]["mean"] for s, e in results["sets"].items() for n in names}
