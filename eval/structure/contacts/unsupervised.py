"""Unsupervised contacts: an L1 logistic regression on APC-corrected attention maps, fitted on a few proteins.

Following Rao et al., "Transformer protein language models are unsupervised structure learners" (ICLR 2021):
every layer's and head's attention map is symmetrised and APC-corrected; a sparse (L1, ``C = 0.15``) logistic
regression over these maps, fitted on the pairs at least 6 apart of 20 proteins, predicts contacts. Here the
training proteins come from one set (default: the PDB chains) and the head is scored on others (default: the
Kortemme domains and CASP12) with top-L, L/2, L/5 precision by separation band. The checkpoint's own contact
head (fair-esm's released regression) is scored on the same proteins when the checkpoint has one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from esm_jax.errors import EsmJaxError
from esm_jax.inference.embedding import encode_records, iter_outputs
from esm_jax.model import BiLSTMLM
from esm_jax.plots import contact_map_png
from eval.common import published
from eval.common.linear_probes import contact_pair_mask
from eval.common.report import interval_text, per_item, write_results
from eval.common.task import Backbone, Result, Task, TaskOptions, option
from eval.structure.contacts.attention_maps import feature_count, iter_attention_features, iter_contact_logits
from eval.structure.contacts.l1_logistic import fit_l1_logistic
from eval.structure.contacts.metrics import contact_precisions, precisions_with_interval, random_ranking_precisions
from eval.structure.contacts.sets import ContactProtein, load_contact_set
from eval.structure.contacts.tables import precision_row

NAME = "contacts-unsupervised"


@dataclasses.dataclass(frozen=True)
class Options(TaskOptions):
    train_set: str = option("pdb-chains", "set the head is fitted on")
    train_proteins: int = option(20, "proteins to fit on (20, as Rao et al.)")
    sets: str = option("kortemme,casp12", "comma-separated sets to score")
    max_proteins: int | None = option(None, "first N proteins of each scored set (none: all)")
    c: float = option(0.15, "inverse L1 strength, scikit-learn's C")
    iterations: int = option(2000, "FISTA iterations")
    toks_per_batch: int = option(2048, "tokens per backbone batch")


def training_pairs(model, proteins: list[ContactProtein], toks_per_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Attention-map features ``(P, layers·heads)`` and labels of every scored pair of ``proteins``."""
    features, labels = [], []
    records = [(p.name, p.sequence) for p in proteins]
    for index, maps in iter_attention_features(model, records, toks_per_batch):
        protein = proteins[index]
        pairs = np.asarray(contact_pair_mask(protein.valid[None])[0]) > 0
        features.append(maps[pairs])
        labels.append(protein.contacts[pairs])
    return np.concatenate(features), np.concatenate(labels)


def score_sets(
    model, weights, intercept, sets: dict[str, list[ContactProtein]], toks_per_batch: int
) -> tuple[dict, dict]:
    """Per set: each protein's precisions of the fitted head, and the predictions of the set's first protein."""
    per_set, examples = {}, {}
    for name, proteins in sets.items():
        per_protein = [None] * len(proteins)
        records = [(p.name, p.sequence) for p in proteins]
        for index, logits in iter_contact_logits(model, records, weights, intercept, toks_per_batch):
            per_protein[index] = contact_precisions(logits, proteins[index].contacts, proteins[index].valid)
            if index == 0:
                examples[name] = 1.0 / (1.0 + np.exp(-logits))
        per_set[name] = per_protein
    return per_set, examples


def checkpoint_head(model, sets: dict[str, list[ContactProtein]], toks_per_batch: int) -> dict:
    """Per set: each protein's precisions of the model's own contact head (``return_contacts``)."""
    per_set = {}
    for name, proteins in sets.items():
        encoded = encode_records([(p.name, p.sequence) for p in proteins], truncation_seq_length=None)
        per_protein = [None] * len(proteins)
        for out in iter_outputs(model, encoded, [-1], return_contacts=True, toks_per_batch=toks_per_batch):
            protein = proteins[out.index]
            per_protein[out.index] = contact_precisions(out.contacts, protein.contacts, protein.valid)
        per_set[name] = per_protein
    return per_set


def long_range_per_item(head: str, sets: dict[str, list[ContactProtein]], per_set: dict) -> dict:
    """``{"<set> long P@L (<head>)": {protein: long P@L}}``: the values ``esm-jax eval compare`` pairs."""
    return {
        f"{name} long P@L ({head})": per_item([p.name for p in sets[name]], [row["long P@L"] for row in per_set[name]])
        for name in per_set
    }


def head_rows(head: str, sets: dict[str, list[ContactProtein]], scored: dict) -> list[dict]:
    """Markdown rows of one head: the nine precisions and long P@L's 95% interval over proteins."""
    return [
        precision_row(name, head, len(sets[name]), precisions)
        | {"long P@L 95% CI": interval_text(precisions["long P@L ci95"])}
        for name, precisions in scored.items()
    ]


def skip_reason(backbone: Backbone, options: Options) -> str | None:
    """Why this task cannot run on ``backbone`` (None: it can): its features are attention maps, which LSTMs lack."""
    if isinstance(backbone.model, BiLSTMLM):
        return (
            f"{NAME} reads attention maps, and {backbone.checkpoint or 'this model'} is an LSTM baseline, which has "
            "none; run it on a Transformer checkpoint"
        )
    return None


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    reason = skip_reason(backbone, options)
    if reason:
        raise EsmJaxError(reason)
    model = backbone.model
    data = Path(data)
    train = load_contact_set(options.train_set, data, options.train_proteins)
    sets = {name: load_contact_set(name, data, options.max_proteins) for name in options.sets.split(",")}
    overlap = {p.sequence for p in train} & {p.sequence for proteins in sets.values() for p in proteins}
    if overlap:
        raise ValueError(f"{len(overlap)} training sequences are also scored; choose disjoint --train-set and --sets")
    x, y = training_pairs(model, train, options.toks_per_batch)
    weights, intercept = fit_l1_logistic(x, y, c=options.c, iterations=options.iterations)
    fitted, examples = score_sets(model, weights, intercept, sets, options.toks_per_batch)
    scored = {name: precisions_with_interval(per_protein, options.seed) for name, per_protein in fitted.items()}
    results = {
        "train": {"set": options.train_set, "proteins": len(train), "pairs": int(len(y)), "contacts": int(y.sum())},
        "features": feature_count(model),
        "nonzero_weights": int(np.count_nonzero(weights)),
        "fitted_head": scored,
        "per_item": long_range_per_item("attention L1 head", sets, fitted),
    } | backbone.report_fields()
    rows = head_rows("attention L1 head", sets, scored)
    results["random_ranking"] = {name: random_ranking_precisions(proteins) for name, proteins in sets.items()}
    rows += [precision_row(n, "random ranking (chance)", len(sets[n]), p) for n, p in results["random_ranking"].items()]
    if model.has_contact_regression:
        own = checkpoint_head(model, sets, options.toks_per_batch)
        results["checkpoint_head"] = {
            name: precisions_with_interval(per_protein, options.seed) for name, per_protein in own.items()
        }
        results["per_item"] |= long_range_per_item("checkpoint contact head", sets, own)
        rows += head_rows("checkpoint contact head", sets, results["checkpoint_head"])
    figures = []
    for name, probabilities in examples.items():
        figure = f"{NAME}-{name}-{sets[name][0].name}.png"
        contact_map_png(probabilities, Path(out) / figure, f"{sets[name][0].name}: attention L1 head")
        figures.append(figure)
    notes = (
        f"Head fitted on {len(train)} {options.train_set} proteins ({len(y)} pairs ≥ 6 apart), C = {options.c}; "
        f"{results['nonzero_weights']} of {results['features']} attention maps kept. Method: Rao et al. 2021. "
        "Precisions are averaged over proteins; long P@L carries a 95% percentile-bootstrap interval over proteins "
        "(JSON: 'long P@L ci95'), and the JSON's per_item gives each protein's long P@L per head, which "
        "`esm-jax eval compare` pairs between two runs."
    )
    if results["nonzero_weights"] == 0:
        notes += (
            " No map carries enough contact signal at this C: the head predicts one probability everywhere, so its"
            " rows are chance level (ties broken by position), the same for any model; raise --c to compare models."
        )
    write_results(
        out,
        NAME,
        results,
        rows,
        title="Contacts from attention maps",
        notes=notes,
        figures=figures,
        published=published.CONTACTS_UNSUPERVISED,
    )
    return Result({name: precisions["long P@L"] for name, precisions in scored.items()})


TASK = Task(NAME, __doc__, Options, run, skip_reason=skip_reason)
