"""Contacts with a deep head (ESM-1b Table 5): a dilated residual 2-D convolution network on frozen features.

The same network (:class:`eval.common.deep_heads.DilatedResNet`) and schedule are trained on each representation — a
backbone layer, the MSA sequence profile, and one-hot amino acids — cross-validated as the linear probe is
(Kortemme domains leaving one SCOP class out; CASP12 after training on Kortemme), and summarised as mean ± SD of
top-L/k precision over seeds. The profile is computed only where an alignment exists, so every feature set is
scored on the proteins that have one. Defaults are sized for CPUs (about 40 minutes on 2 cores for the default
sets and features; see :class:`~eval.structure.contacts.deep_runs.ResNetOptions`); the full protocol is about
``--seeds 5 --steps 3000 --channels 64 --blocks 16``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from eval.common import published
from eval.common.report import write_results
from eval.common.representations import feature_layer
from eval.common.task import Backbone, Result, Task, option
from eval.structure.contacts.deep_runs import ResNetOptions, resnet_runs, summary_row
from eval.structure.contacts.metrics import random_ranking_precisions
from eval.structure.contacts.plans import Plan, aligned_subplan, build_plans, embed_all
from eval.structure.contacts.tables import precision_row
from eval.structure.msa.baselines import profile_features
from eval.structure.msa.features import one_hot_features

NAME = "contacts-deep"


@dataclasses.dataclass(frozen=True)
class Options(ResNetOptions):
    sets: str = option("kortemme,casp12", "comma-separated contact sets")
    features: str = option("last,profile,onehot", "comma-separated feature sets: 'last', a layer, 'profile', 'onehot'")


def features_for(model, plan: Plan, name: str, embeddings: dict, options: Options) -> list:
    """One (L, D) array per protein of ``plan`` for the feature set ``name``."""
    if name == "profile":
        return [profile_features(p, options.msa_max_sequences or None, options.seed) for p in plan.proteins]
    if name == "onehot":
        return [one_hot_features(p.sequence) for p in plan.proteins]
    return [embeddings[p.name][feature_layer(model, name)] for p in plan.proteins]


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    model = backbone.model
    names = options.features.split(",")
    plans = build_plans(options.sets.split(","), Path(data), options.max_proteins, options.folds, options.seed)
    plans = [sub for sub in map(aligned_subplan, plans) if sub is not None]
    layers = sorted({feature_layer(model, n) for n in names if n not in ("profile", "onehot")})
    embeddings = embed_all(model, plans, layers, options.toks_per_batch) if layers else {}
    results, rows = {"sets": {}, "per_item": {}}, []
    for plan in plans:
        entry = {"scheme": plan.scheme, "proteins": plan.tested, "features": {}}
        for name in names:
            summary, per_protein = resnet_runs(plan, features_for(model, plan, name, embeddings, options), options)
            entry["features"][name] = summary
            results["per_item"][f"{plan.name} long P@L ({name})"] = per_protein
            rows.append(summary_row(NAME, plan, name, summary))
        entry["random_ranking"] = random_ranking_precisions(plan.tested_proteins)
        rows.append(precision_row(plan.name, "random ranking (chance)", plan.tested, entry["random_ranking"]))
        results["sets"][plan.name] = entry
    results |= {"seeds": options.seeds, "steps": options.steps} | backbone.report_fields()
    notes = (
        f"Dilated ResNet ({options.blocks} blocks, {options.channels} channels), {options.steps} steps per fold; "
        f"mean ± SD over {options.seeds} seeds; long-range columns shown, all bands in the JSON. The JSON's per_item "
        "gives each protein's long P@L averaged over the seeds, which `esm-jax eval compare` pairs between two runs "
        "(a trained backbone against its --random-weights twin)."
    )
    tables = (published.CONTACTS_DEEP, published.RELATED_MODELS, published.RELATED_MODELS_README)
    write_results(out, NAME, results, rows, title="Contacts: deep head", notes=notes, published=tables)
    return Result({f"{s} {n}": e["features"][n]["long P@L"]["mean"] for s, e in results["sets"].items() for n in names})


TASK = Task(NAME, __doc__, Options, run)
