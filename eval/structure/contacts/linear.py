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

import argparse
import time
from pathlib import Path

import numpy as np
from flax import nnx

from esm_jax.files import atomic_output
from eval.cli import load_backbone
from eval.common.charts import curves_png
from eval.common.linear_probes import BilinearContactProbe, bilinear_forward
from eval.common.report import write_results
from eval.common.representations import parse_layers
from eval.structure.contacts.metrics import contact_precisions, mean_precisions
from eval.structure.contacts.plans import Plan, aligned_subplan, build_plans, embed_all
from eval.structure.contacts.sets import ContactProtein
from eval.structure.contacts.tables import precision_row
from eval.structure.contacts.training import cross_validated_precisions
from eval.structure.msa.baselines import potts_contact_scores, profile_features

DESCRIPTION = __doc__
TASK = "contacts-linear"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sets", default="kortemme,casp12,pdb-chains", help="contact sets to evaluate")
    parser.add_argument("--layers", default="all", help="'all', 'last' or comma-separated layers (default: all)")
    parser.add_argument("--max-proteins", type=int, default=None, help="first N proteins of each set (default: all)")
    parser.add_argument("--rank", type=int, default=64, help="projection size of the bilinear probe (default: 64)")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps per probe fit (default: 300)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="probe learning rate (default: 1e-3)")
    parser.add_argument("--folds", type=int, default=5, help="folds for sets without group labels (default: 5)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the profile and Potts baselines")
    parser.add_argument(
        "--msa-max-sequences", type=int, default=256, help="alignment rows sampled for baselines (0: all; default 256)"
    )
    parser.add_argument("--potts-iterations", type=int, default=30, help="Potts L-BFGS iterations (default: 30)")
    parser.add_argument("--toks-per-batch", type=int, default=4096, help="tokens per backbone batch (default: 4096)")


def probe_precisions(plan: Plan, features: list[np.ndarray], args) -> list[dict[str, float]]:
    """Cross-validated per-protein precisions of the bilinear probe on ``features`` (one (L, D) per protein)."""
    dim = features[0].shape[1]
    per_protein = cross_validated_precisions(
        plan.proteins,
        features,
        plan.folds,
        lambda seed: BilinearContactProbe(dim, args.rank, rngs=nnx.Rngs(seed)),
        bilinear_forward,
        steps=args.steps,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    return per_protein


def cached_potts_scores(protein: ContactProtein, max_rows: int | None, args, folder: Path) -> np.ndarray:
    """Potts scores of ``protein``, reused from ``folder`` when the same options computed them before.

    They depend on the alignment and options only, never on the checkpoint, so reruns on other models skip them.
    """
    path = folder / f"{protein.name}-rows{max_rows or 'all'}-it{args.potts_iterations}-seed{args.seed}.npy"
    if path.is_file():
        return np.load(path)
    scores = potts_contact_scores(protein, max_rows, args.potts_iterations, args.seed)
    with atomic_output(path, "wb") as handle:
        np.save(handle, scores)
    return scores


def baselines(plan: Plan, args) -> dict[str, dict]:
    """Profile-probe and Potts precisions over the plan's aligned proteins."""
    sub = aligned_subplan(plan)
    if sub is None:
        return {}
    max_rows = args.msa_max_sequences or None
    profiles = [profile_features(p, max_rows, args.seed) for p in sub.proteins]
    results = {"profile": {"proteins": sub.tested, "precision": mean_precisions(probe_precisions(sub, profiles, args))}}
    tested = sorted({int(i) for _, test in sub.folds for i in test})
    potts, started = [], time.perf_counter()
    for count, index in enumerate(tested, start=1):
        protein = sub.proteins[index]
        scores = cached_potts_scores(protein, max_rows, args, Path(args.out) / ".potts-cache")
        potts.append(contact_precisions(scores, protein.contacts, protein.valid))
        print(f"potts {plan.name}: {count}/{len(tested)} ({time.perf_counter() - started:.0f} s)", flush=True)
    results["potts"] = {"proteins": len(tested), "precision": mean_precisions(potts)}
    return results


def run(args: argparse.Namespace) -> dict:
    model = load_backbone(args)
    layers = parse_layers(args.layers, model)
    plans = build_plans(args.sets.split(","), Path(args.data), args.max_proteins, args.folds, args.seed)
    embeddings = embed_all(model, plans, layers, args.toks_per_batch)
    results, rows, figures = {"layers": layers, "sets": {}}, [], []
    for plan in plans:
        sweep = {}
        for layer in layers:
            features = [embeddings[p.name][layer] for p in plan.proteins]
            sweep[layer] = mean_precisions(probe_precisions(plan, features, args))
            print(f"{TASK} {plan.name} layer {layer}: long P@L {sweep[layer]['long P@L']:.3f}", flush=True)
        best = max(layers, key=lambda layer: sweep[layer]["long P@L"])
        entry = {"scheme": plan.scheme, "proteins": plan.tested, "per_layer": sweep, "best_layer": best}
        entry |= {} if args.no_baselines else baselines(plan, args)
        results["sets"][plan.name] = entry
        rows.append(precision_row(plan.name, f"layer {layers[-1]} (last)", plan.tested, sweep[layers[-1]]))
        rows.append(precision_row(plan.name, f"layer {best} (best)", plan.tested, sweep[best]))
        for baseline in ("profile", "potts"):
            if baseline in entry:
                found = entry[baseline]
                rows.append(precision_row(plan.name, baseline, found["proteins"], found["precision"]))
        figure = f"{TASK}-{plan.name}-layers.png"
        curves_png(
            layers,
            {band: [sweep[layer][band] for layer in layers] for band in ("long P@L", "long P@L/5", "medium P@L/5")},
            Path(args.out) / figure,
            title=f"{plan.name}: bilinear probe per layer ({plan.scheme})",
            xlabel="layer",
            ylabel="precision",
            levels={f"{b} long P@L": entry[b]["precision"]["long P@L"] for b in ("profile", "potts") if b in entry},
        )
        figures.append(figure)
    results["checkpoint"] = args.checkpoint
    results["random_weights"] = bool(args.random_weights)
    notes = (
        "Precision of true contacts (CB-CB < 8 Å, CA for Gly) among the top L/k scored pairs per separation band, "
        "averaged over proteins; each protein scored by the fold that held it out. Potts: CCMpred-style "
        "pseudo-likelihood on at most --msa-max-sequences rows."
    )
    write_results(args.out, TASK, results, rows, title="Contacts: linear projections", notes=notes, figures=figures)
    return {name: entry["per_layer"][layers[-1]]["long P@L"] for name, entry in results["sets"].items()}
