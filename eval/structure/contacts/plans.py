"""Evaluation plans for contact tasks: each set's proteins and folds (CASP12 is scored after training on Kortemme)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from eval.common.representations import per_residue_layers
from eval.common.splits import Fold, folds_for
from eval.common.task import TaskOptions, option
from eval.structure.contacts.sets import ContactProtein, load_contact_set


@dataclasses.dataclass(frozen=True)
class PlanOptions(TaskOptions):
    """Options every contact task evaluated over plans shares: set sizes, folds and alignment sampling."""

    max_proteins: int | None = option(None, "first N proteins of each set (none: all)")
    folds: int = option(5, "folds for sets without group labels")
    msa_max_sequences: int = option(256, "alignment rows sampled for the profile and Potts baselines (0: all)")


@dataclasses.dataclass(frozen=True)
class Plan:
    """One evaluated set: its proteins, the folds over them and how the folds were made."""

    name: str
    proteins: list[ContactProtein]
    folds: list[Fold]
    scheme: str

    @property
    def tested_proteins(self) -> list[ContactProtein]:
        """Every protein some fold tests, in index order."""
        return [self.proteins[i] for i in sorted({int(i) for _, test in self.folds for i in test})]

    @property
    def tested(self) -> int:
        return sum(len(test) for _, test in self.folds)


def build_plans(names: list[str], data: Path, limit: int | None, folds: int, seed: int) -> list[Plan]:
    """The evaluation plans for ``names`` (CASP12 trains on the Kortemme domains)."""
    plans, kortemme = [], None
    for name in names:
        if name in ("kortemme", "casp12") and kortemme is None:
            kortemme = load_contact_set("kortemme", data, limit)
        if name == "casp12":
            casp = load_contact_set("casp12", data, limit)
            proteins = kortemme + casp
            test = np.arange(len(kortemme), len(proteins))
            plans.append(Plan(name, proteins, [(np.arange(len(kortemme)), test)], "train Kortemme, test CASP12"))
        else:
            proteins = kortemme if name == "kortemme" else load_contact_set(name, data, limit)
            scheme, split = folds_for([p.group for p in proteins], folds, seed)  # by SCOP class where labelled
            plans.append(Plan(name, proteins, split, scheme))
    return plans


def embed_all(model, plans: list[Plan], layers: list[int], toks_per_batch: int) -> dict[str, dict[int, np.ndarray]]:
    """``{protein name: {layer: (L, D)}}`` for every protein of every plan, each embedded once."""
    unique = {p.name: p.sequence for plan in plans for p in plan.proteins}
    records = list(unique.items())
    by_layer = per_residue_layers(model, records, layers, toks_per_batch=toks_per_batch, desc="contact proteins")
    return {name: {layer: by_layer[layer][i] for layer in layers} for i, (name, _) in enumerate(records)}


def aligned_subplan(plan: Plan) -> Plan | None:
    """The plan restricted to proteins with an alignment (None when no fold keeps a test protein)."""
    keep = [i for i, p in enumerate(plan.proteins) if p.alignment is not None]
    new_index = {old: new for new, old in enumerate(keep)}
    folds = []
    for train, test in plan.folds:
        train = np.array([new_index[i] for i in train if i in new_index], dtype=np.int64)
        test = np.array([new_index[i] for i in test if i in new_index], dtype=np.int64)
        if len(train) and len(test):
            folds.append((train, test))
    if not folds:
        return None
    return Plan(plan.name, [plan.proteins[i] for i in keep], folds, plan.scheme)
