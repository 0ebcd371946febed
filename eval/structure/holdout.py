"""Structural hold-out of linear projections (ESM-1b Table 3): five-fold cross validation by family, superfamily, fold.

Structures with an SCOPe label (a PDB chain the ASTRAL 40% set lists; see :mod:`eval.structure.scop_labels`) are
split into five partitions at each level so that no family (superfamily, fold) is in both training and test
structures. In each partition two linear projections of the backbone's final layer are fitted on the training
structures and scored on the test ones: a softmax probe for secondary structure (Q3 over test residues, on the
structures with a DSSP string: the data has 3-state DSSP, where Table 3 reports eight-class accuracy) and the
bilinear contact probe of ``contacts-linear`` (top-L long-range precision, averaged over test structures). Each
level reports mean ± SD over its partitions, as Table 3 does, beside chance (majority class, random ranking).

Table 3's alignment-only rows, on the structures that have a family alignment (the Kortemme domains): the same
bilinear probe on the sequence profile, fitted and tested within the same partitions ("HMM Profile"), and the
contacts of a Potts model fitted by pseudo-likelihood ("CCMpred"), which needs no training data.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from flax import nnx

from data_pipeline.layout import dataset_file
from esm_jax.errors import EsmJaxError
from eval.common import published
from eval.common.linear_probes import BilinearContactProbe, bilinear_forward
from eval.common.report import per_item, write_results
from eval.common.representations import parse_layers, per_residue_layers
from eval.common.splits import Fold, grouped_random_folds
from eval.common.task import Backbone, Result, Task, TaskOptions, option
from eval.structure.contacts.metrics import contact_precisions, mean_precisions, random_ranking_precisions
from eval.structure.contacts.training import cross_validated_precisions
from eval.structure.holdout_sets import HOLDOUT_SETS, LabelledStructure, load_holdout_structures
from eval.structure.msa.baselines import POTTS_CACHE, cached_potts_scores, profile_features
from eval.structure.scop_labels import ASTRAL_FILE, LEVEL_FIELDS, group_at, read_chain_index
from eval.structure.secondary.linear import fit_probe, per_protein_accuracy, predict
from eval.structure.secondary.metrics import SS3_STATES, accuracy, encode_states, majority_accuracy

NAME = "structural-holdout"
METRICS = ("Q3", "majority-class Q3", "long P@L", "random-ranking long P@L")
ALIGNMENT_METRICS = ("profile long P@L", "Potts long P@L")


def reported_metrics(baselines: AlignmentBaselines | None) -> tuple[str, ...]:
    """The metrics each level reports: the alignment rows only when their baselines were computed."""
    return METRICS + (() if baselines is None else ALIGNMENT_METRICS)


@dataclasses.dataclass(frozen=True)
class Options(TaskOptions):
    sets: str = option(",".join(HOLDOUT_SETS), "comma-separated structure sets")
    levels: str = option(",".join(LEVEL_FIELDS), "comma-separated hold-out levels")
    folds: int = option(5, "partitions per level")
    max_structures: int | None = option(None, "first N labelled structures (none: all)")
    astral: Path | None = option(None, f"ASTRAL FASTA (none: --data/{ASTRAL_FILE})")
    rank: int = option(64, "projection size of the bilinear contact probe")
    steps: int = option(300, "Adam steps per contact probe fit")
    learning_rate: float = option(1e-3, "contact probe learning rate")
    l2: float = option(1e-4, "L2 penalty on the secondary-structure probe weights")
    iterations: int = option(300, "L-BFGS iterations per secondary-structure probe")
    no_baselines: bool = option(False, "skip the profile and Potts rows (structures with a family alignment)")
    msa_max_sequences: int = option(256, "alignment rows sampled for the profile and Potts baselines (0: all)")
    potts_iterations: int = option(30, "Potts L-BFGS iterations")
    toks_per_batch: int = option(4096, "tokens per backbone batch")


@dataclasses.dataclass(frozen=True)
class AlignmentBaselines:
    """Per structure, None where it has no family alignment: its sequence profile and its Potts long-range P@L."""

    profiles: list[np.ndarray | None]
    potts: list[float | None]


def alignment_baselines(structures: list[LabelledStructure], options: Options, cache: Path) -> AlignmentBaselines:
    """Profiles and Potts precisions of the aligned structures (Potts scores kept in ``cache``, as contacts-linear)."""
    max_rows = options.msa_max_sequences or None
    profiles, potts = [], []
    aligned = [s.protein for s in structures if s.protein.alignment is not None]
    for structure in structures:
        protein = structure.protein
        if protein.alignment is None:
            profiles.append(None)
            potts.append(None)
            continue
        profiles.append(profile_features(protein, max_rows, options.seed))
        scores = cached_potts_scores(protein, max_rows, options.potts_iterations, options.seed, cache)
        potts.append(contact_precisions(scores, protein.contacts, protein.valid)["long P@L"])
        print(f"{NAME} potts: {sum(p is not None for p in potts)}/{len(aligned)}", flush=True)
    return AlignmentBaselines(profiles, potts)


def secondary_structure_scores(
    structures: list[LabelledStructure], features: list[np.ndarray], fold: Fold, options: Options
) -> dict[str, float | dict[str, float]]:
    """Q3 of a softmax probe fitted on the fold's training structures with DSSP, and the majority-class Q3.

    NaN when the fold has no DSSP structure on either side. ``Q3 per structure``: each test structure's Q3.
    """
    train, test = ([i for i in part if structures[i].ss3] for part in fold)
    if not train or not test:
        return {"Q3": math.nan, "majority-class Q3": math.nan, "Q3 per structure": {}}
    x_train, y_train = _residues(structures, features, train)
    x_test, y_test = _residues(structures, features, test)
    every_train, every_test = np.ones(len(y_train), bool), np.ones(len(y_test), bool)
    probe = fit_probe(x_train, y_train, every_train, len(SS3_STATES), options)
    predicted = predict(probe, x_test)
    each = per_protein_accuracy(predicted, y_test, every_test, [len(features[i]) for i in test])
    return {
        "Q3": accuracy(predicted, y_test),
        "majority-class Q3": majority_accuracy(y_train, every_train, y_test, every_test),
        "Q3 per structure": per_item([structures[i].protein.name for i in test], each),
    }


def _residues(
    structures: list[LabelledStructure], features: list[np.ndarray], indices: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Residue features and 3-state labels of ``indices``, labels cut to the feature rows (the model's window)."""
    rows = [features[i] for i in indices]
    labels = [
        encode_states(structures[i].ss3[: len(x)], SS3_STATES, structures[i].protein.name)
        for i, x in zip(indices, rows, strict=True)
    ]
    return np.concatenate(rows), np.concatenate(labels)


def contact_scores(
    structures: list[LabelledStructure], features: list[np.ndarray], fold: Fold, options: Options
) -> dict[str, float | dict[str, float]]:
    """Long-range P@L of the bilinear probe fitted on the fold's training structures, and of a random ranking.

    ``long P@L per structure``: each test structure's long-range P@L.
    """
    proteins = [s.protein for s in structures]
    dim = features[0].shape[1]
    per_protein = cross_validated_precisions(
        proteins,
        features,
        [fold],
        lambda seed: BilinearContactProbe(dim, options.rank, rngs=nnx.Rngs(seed)),
        bilinear_forward,
        steps=options.steps,
        learning_rate=options.learning_rate,
        seed=options.seed,
    )
    chance = random_ranking_precisions(proteins[i] for i in fold[1])
    each = per_item([proteins[i].name for i in sorted(fold[1])], [row["long P@L"] for row in per_protein])
    return {
        "long P@L": mean_precisions(per_protein)["long P@L"],
        "random-ranking long P@L": chance["long P@L"],
        "long P@L per structure": each,
    }


def alignment_scores(
    structures: list[LabelledStructure], baselines: AlignmentBaselines, fold: Fold, options: Options
) -> dict[str, float]:
    """Long P@L over the fold's aligned test structures: the profile probe (fitted on its aligned training
    structures) and the Potts model. NaN when either side of the fold has no aligned structure."""
    train, test = ([int(i) for i in part if baselines.profiles[i] is not None] for part in fold)
    if not train or not test:
        return {metric: math.nan for metric in ALIGNMENT_METRICS}
    kept = sorted(train + test)
    position = {index: number for number, index in enumerate(kept)}
    subset = [structures[i] for i in kept]
    profiles = [baselines.profiles[i] for i in kept]
    local_fold = (np.array([position[i] for i in train]), np.array([position[i] for i in test]))
    return {
        "profile long P@L": contact_scores(subset, profiles, local_fold, options)["long P@L"],
        "Potts long P@L": float(np.mean([baselines.potts[i] for i in test])),
    }


def mean_and_sd(values: list[float]) -> dict[str, float | int]:
    """Mean and sample SD over the partitions that have a value (``partitions``: how many)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "sd": math.nan, "partitions": 0}
    sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
    return {"mean": float(np.mean(finite)), "sd": sd, "partitions": len(finite)}


def holdout_folds(groups: list[str], folds: int, seed: int) -> list[Fold] | None:
    """``folds`` partitions that keep each group's structures together (None: fewer groups than folds)."""
    if len(set(groups)) < folds:
        return None
    return grouped_random_folds(groups, folds, seed)


def level_result(
    level: str,
    structures: list[LabelledStructure],
    features: list[np.ndarray],
    options: Options,
    baselines: AlignmentBaselines | None = None,
) -> dict:
    """Per-partition scores and their mean ± SD at one level, or why the level has too few groups for the folds.

    ``per_structure``: each structure's Q3 and long P@L, from the partition that tested it. With ``baselines``,
    the profile and Potts rows too.
    """
    groups = [group_at(s.sccs, level) for s in structures]
    entry = {"groups": len(set(groups)), "structures": len(structures)}
    folds = holdout_folds(groups, options.folds, options.seed)
    if folds is None:
        reason = f"only {entry['groups']} distinct {level} group(s) for {options.folds} folds: no numbers reported"
        return entry | {"too_few_groups": reason}
    partitions, per_structure = [], {"Q3": {}, "long P@L": {}}
    for train, test in folds:
        scores = secondary_structure_scores(structures, features, (train, test), options)
        scores |= contact_scores(structures, features, (train, test), options)
        if baselines is not None:
            scores |= alignment_scores(structures, baselines, (train, test), options)
        for metric, table in per_structure.items():
            table |= scores.pop(f"{metric} per structure")
        test_groups = sorted({groups[i] for i in test})
        ss_count = sum(structures[i].ss3 is not None for i in test)
        partitions.append({"test_groups": test_groups, "test_structures": len(test), "test_ss_structures": ss_count})
        partitions[-1] |= scores
        print(f"{NAME} {level} partition {len(partitions)}: Q3 {scores['Q3']:.3f}, P@L {scores['long P@L']:.3f}")
    entry |= {"partitions": partitions, "per_structure": per_structure}
    return entry | {m: mean_and_sd([p[m] for p in partitions]) for m in reported_metrics(baselines)}


def report_row(level: str, entry: dict, metrics: tuple[str, ...] = METRICS) -> dict[str, object]:
    """One Markdown row: the level's mean ± SD in %, as Table 3 prints them."""
    row: dict[str, object] = {"level": level, "groups": entry["groups"], "structures": entry["structures"]}
    if "too_few_groups" in entry:
        return row | {metric: entry["too_few_groups"] for metric in metrics}
    for metric in metrics:
        found = entry[metric]
        if found["partitions"] == 0:
            row[metric] = "no partition had structures to score on both sides"
            continue
        row[metric] = f"{100 * found['mean']:.1f} ± {100 * found['sd']:.1f}"
        if found["partitions"] < len(entry["partitions"]):
            row[metric] += f" ({found['partitions']} of {len(entry['partitions'])} partitions)"
    return row


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    if options.folds < 2:
        raise EsmJaxError(f"{NAME}: --folds {options.folds}: cross validation needs at least 2 folds")
    if options.max_structures is not None and options.max_structures < 1:
        raise EsmJaxError(f"{NAME}: --max-structures {options.max_structures}: give at least 1, or none for all")
    levels = options.levels.split(",")
    unknown = sorted(set(levels) - set(LEVEL_FIELDS))
    if unknown:
        raise EsmJaxError(f"{NAME}: --levels: unknown level(s) {unknown}; choose from {', '.join(LEVEL_FIELDS)}")
    astral = Path(options.astral) if options.astral else dataset_file(ASTRAL_FILE, data)
    found = load_holdout_structures(options.sets.split(","), Path(data), read_chain_index(astral))
    structures = found.labelled[: options.max_structures]
    if not structures:
        raise EsmJaxError(f"{NAME}: no structure of {options.sets} has an SCOPe label in {astral}")
    model = backbone.model
    layer = parse_layers("last", model)[-1]
    records = [(s.protein.name, s.protein.sequence) for s in structures]
    features = per_residue_layers(model, records, [layer], toks_per_batch=options.toks_per_batch, desc=NAME)[layer]
    baselines = None if options.no_baselines else alignment_baselines(structures, options, out / POTTS_CACHE)
    metrics = reported_metrics(baselines)
    entries = {level: level_result(level, structures, features, options, baselines) for level in levels}
    per_structure = {level: entry.pop("per_structure", {}) for level, entry in entries.items()}
    per_item_tables = {
        f"{level} {metric}": table for level, tables in per_structure.items() for metric, table in tables.items()
    }
    results = {
        "layer": layer,
        "astral": str(astral),
        "labelled": {s.protein.name: s.sccs for s in structures},
        "unlabelled": found.unlabelled,
        "aligned": [s.protein.name for s in structures if s.protein.alignment is not None] if baselines else [],
        "levels": entries,
        "per_item": per_item_tables,
    }
    results |= backbone.report_fields()
    write_results(
        out,
        NAME,
        results,
        [report_row(level, entry, metrics) for level, entry in results["levels"].items()],
        title="Structural hold-out: linear projections",
        notes=_notes(structures, found.unlabelled, options),
        published=[published.SECONDARY_STRUCTURE_LINEAR, published.CONTACTS_LINEAR],
    )
    return Result(
        {
            level: {"Q3": entry["Q3"]["mean"], "long P@L": entry["long P@L"]["mean"]}
            for level, entry in results["levels"].items()
            if "too_few_groups" not in entry
        }
    )


def _notes(structures: list[LabelledStructure], unlabelled: dict[str, str], options: Options) -> str:
    with_ss = sum(s.ss3 is not None for s in structures)
    return (
        f"{len(structures)} structures with an SCOPe label from the ASTRAL 40% set ({with_ss} with a DSSP string); "
        f"{len(unlabelled)} left out without one (listed in the JSON with the reason). Per level, the structures "
        f"are split into {options.folds} partitions by family, superfamily or fold (groups assigned at random, "
        "seeded), so no group is in both training and test structures; SCOPe's family 0 ('automated matches') "
        "counts as one family per superfamily. Scores are the final layer's linear projections, mean ± sample SD "
        "over partitions, in %. Secondary structure is Q3: the DSSP strings here have 3 states, while Table 3 "
        "reports eight-class accuracy, so the published SSP columns below are Q8 and not directly comparable. "
        "Contacts: top-L precision at separation ≥ 24 (CB-CB < 8 Å). Chance: the training partition's majority "
        "state, and a random ranking of pairs. A level with fewer groups than folds gets no numbers. The JSON's "
        "per_item gives each structure's Q3 and long P@L per level (`esm-jax eval compare` pairs them between runs). "
        "Alignment-only rows, as Table 3's HMM Profile and CCMpred rows, over the structures with a family alignment "
        f"(the Kortemme domains' Pfam alignments, {options.msa_max_sequences or 'all'} rows sampled): the same "
        "bilinear probe on the sequence profile, fitted on the partition's aligned training structures, and a "
        "pseudo-likelihood Potts model (CCMpred-style, APC-corrected coupling norms), both scored on the partition's "
        "aligned test structures. Table 3's profiles are HHblits HMMs, so these rows follow its method, not its inputs."
    )


TASK = Task(NAME, __doc__, Options, run)
