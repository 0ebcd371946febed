"""Contact precision of linear projections of frozen representations (ESM-1b Table 3), with MSA baselines.

Contacts are scored by a bilinear probe: two linear projections of the residue representations whose dot product
is the contact logit, trained with the logistic loss on pairs at least 6 apart (Rives et al., PNAS 2021). It is
trained per layer (a layer sweep, plotted) and cross-validated: on the Kortemme domains leaving one SCOP class out
at a time, on the PDB chains by random 5-fold, and on CASP12 after training on all Kortemme domains.
Baselines from the alignments alone: the same bilinear probe on the sequence profile (position-specific
frequencies), and a Potts model fitted by pseudo-likelihood (CCMpred-style L2, APC-corrected coupling norms).
Precision is top-L, L/2, L/5 in long (≥24), medium (12-23) and short (6-11) separation bands.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Protocol

import numpy as np
from flax import nnx

from eval.common import published
from eval.common.charts import curves_png
from eval.common.linear_probes import BilinearContactProbe, bilinear_forward
from eval.common.report import per_item, write_results
from eval.common.representations import parse_layers
from eval.common.splits import validation_folds
from eval.common.task import Backbone, Result, Task, option
from eval.structure.contacts.metrics import (
    contact_precisions,
    mean_precisions,
    precisions_with_interval,
    random_ranking_precisions,
)
from eval.structure.contacts.plans import Plan, PlanOptions, aligned_subplan, build_plans, embed_all
from eval.structure.contacts.tables import precision_row
from eval.structure.contacts.training import cross_validated_precisions
from eval.structure.msa.baselines import POTTS_CACHE, cached_potts_scores, profile_features

NAME = "contacts-linear"


@dataclasses.dataclass(frozen=True)
class Options(PlanOptions):
    sets: str = option("kortemme,casp12,pdb-chains", "comma-separated contact sets to evaluate")
    layers: str = option("all", "'all', 'last' or comma-separated layers")
    rank: int = option(64, "projection size of the bilinear probe")
    steps: int = option(300, "Adam steps per probe fit")
    learning_rate: float = option(1e-3, "probe learning rate")
    no_baselines: bool = option(False, "skip the profile and Potts baselines")
    potts_iterations: int = option(30, "Potts L-BFGS iterations")
    toks_per_batch: int = option(4096, "tokens per backbone batch")


class ProbeSettings(Protocol):
    """What :func:`probe_precisions` reads of its options: a task's options or any object with these attributes."""

    @property
    def rank(self) -> int: ...

    @property
    def steps(self) -> int: ...

    @property
    def learning_rate(self) -> float: ...

    @property
    def seed(self) -> int: ...


def probe_precisions(plan: Plan, features: list[np.ndarray], settings: ProbeSettings) -> list[dict[str, float]]:
    """Cross-validated per-protein precisions of the bilinear probe on ``features`` (one (L, D) per protein)."""
    dim = features[0].shape[1]
    return cross_validated_precisions(
        plan.proteins,
        features,
        plan.folds,
        lambda seed: BilinearContactProbe(dim, settings.rank, rngs=nnx.Rngs(seed)),
        bilinear_forward,
        steps=settings.steps,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
    )


def baselines(plan: Plan, options: Options, out: Path) -> dict[str, dict]:
    """Profile-probe and Potts precisions over the plan's aligned proteins."""
    sub = aligned_subplan(plan)
    if sub is None:
        return {}
    max_rows = options.msa_max_sequences or None
    profiles = [profile_features(p, max_rows, options.seed) for p in sub.proteins]
    results = {
        "profile": {"proteins": sub.tested, "precision": mean_precisions(probe_precisions(sub, profiles, options))}
    }
    tested = sorted({int(i) for _, test in sub.folds for i in test})
    potts, started = [], time.perf_counter()
    for count, index in enumerate(tested, start=1):
        protein = sub.proteins[index]
        scores = cached_potts_scores(protein, max_rows, options.potts_iterations, options.seed, out / POTTS_CACHE)
        potts.append(contact_precisions(scores, protein.contacts, protein.valid))
        print(f"potts {plan.name}: {count}/{len(tested)} ({time.perf_counter() - started:.0f} s)", flush=True)
    results["potts"] = {"proteins": len(tested), "precision": mean_precisions(potts)}
    return results


def validation_sweep(plan: Plan, embeddings: dict, layers: list[int], options: Options) -> dict[int, float]:
    """Long-range P@L of each layer's probe on validation proteins split off every fold's training set.

    The layer reported as best is chosen by these numbers, never by the test proteins (a single layer needs no
    choice: empty).
    """
    if len(layers) == 1:
        return {}
    folds = validation_folds(plan.folds, seed=options.seed)
    held_out = Plan(plan.name, plan.proteins, folds, f"{plan.scheme}, validation split of the training folds")
    sweep = {}
    for layer in layers:
        features = [embeddings[p.name][layer] for p in plan.proteins]
        sweep[layer] = mean_precisions(probe_precisions(held_out, features, options))["long P@L"]
    return sweep


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    model = backbone.model
    layers = parse_layers(options.layers, model)
    plans = build_plans(options.sets.split(","), Path(data), options.max_proteins, options.folds, options.seed)
    embeddings = embed_all(model, plans, layers, options.toks_per_batch)
    results, rows, figures = {"layers": layers, "sets": {}, "per_item": {}}, [], []
    for plan in plans:
        sweep = {}
        for layer in layers:
            features = [embeddings[p.name][layer] for p in plan.proteins]
            per_protein = probe_precisions(plan, features, options)
            sweep[layer] = precisions_with_interval(per_protein, options.seed)
            low, high = sweep[layer]["long P@L ci95"]
            print(f"{NAME} {plan.name} layer {layer}: long P@L {sweep[layer]['long P@L']:.3f} [{low:.3f}, {high:.3f}]")
            if layer == layers[-1]:
                names = [p.name for p in plan.tested_proteins]
                long_range = [row["long P@L"] for row in per_protein]
                results["per_item"][f"{plan.name} long P@L (last layer)"] = per_item(names, long_range)
        validation = validation_sweep(plan, embeddings, layers, options)
        best = max(validation, key=validation.__getitem__) if validation else layers[0]
        entry = {"scheme": plan.scheme, "proteins": plan.tested, "per_layer": sweep}
        entry |= {"best_layer": best, "validation_long_p_at_l": validation}
        entry["random_ranking"] = random_ranking_precisions(plan.tested_proteins)
        entry |= {} if options.no_baselines else baselines(plan, options, Path(out))
        results["sets"][plan.name] = entry
        rows.append(precision_row(plan.name, f"layer {layers[-1]} (last)", plan.tested, sweep[layers[-1]]))
        if len(layers) > 1:
            rows.append(precision_row(plan.name, f"layer {best} (chosen on validation)", plan.tested, sweep[best]))
        for baseline in ("profile", "potts"):
            if baseline in entry:
                found = entry[baseline]
                rows.append(precision_row(plan.name, baseline, found["proteins"], found["precision"]))
        rows.append(precision_row(plan.name, "random ranking (chance)", plan.tested, entry["random_ranking"]))
        figure = f"{NAME}-{plan.name}-layers.png"
        curves_png(
            layers,
            {band: [sweep[layer][band] for layer in layers] for band in ("long P@L", "long P@L/5", "medium P@L/5")},
            Path(out) / figure,
            title=f"{plan.name}: bilinear probe per layer ({plan.scheme})",
            xlabel="layer",
            ylabel="precision",
            levels={f"{b} long P@L": entry[b]["precision"]["long P@L"] for b in ("profile", "potts") if b in entry}
            | {"chance long P@L": entry["random_ranking"]["long P@L"]},
        )
        figures.append(figure)
    results |= backbone.report_fields()
    notes = (
        "Precision of true contacts (CB-CB < 8 Å, CA for Gly) among the top L/k scored pairs per separation band, "
        "averaged over proteins; each protein scored by the fold that held it out. The layer marked 'chosen on "
        "validation' has the best long P@L on proteins split off the training folds (20%), never on test proteins. "
        "The JSON gives each layer's long P@L with a 95% bootstrap interval over proteins ('long P@L ci95'), and "
        "each protein's long P@L at the last layer (per_item, which `esm-jax eval compare` pairs between runs). "
        "Potts: CCMpred-style "
        "pseudo-likelihood on at most --msa-max-sequences rows."
    )
    write_results(
        out,
        NAME,
        results,
        rows,
        title="Contacts: linear projections",
        notes=notes,
        figures=figures,
        published=published.CONTACTS_LINEAR,
    )
    return Result({name: entry["per_layer"][layers[-1]]["long P@L"] for name, entry in results["sets"].items()})


TASK = Task(NAME, __doc__, Options, run)
