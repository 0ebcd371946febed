"""Secondary structure by linear projection of frozen representations (ESM-1b Table 3): Q8 and Q3.

A multinomial logistic regression (L2-regularised, fitted by L-BFGS with a jitted optax step) maps each residue's
representation to its DSSP state: an 8-class probe and a 3-class probe, fitted per layer (a layer sweep, plotted)
on the NetSurfP-2.0 training subset (minus the sequence it shares with CB513) and scored on CB513, TS115 and
CASP12 (Klausen et al., Proteins 2019). Q3 is also reported from the 8-class probe's predictions reduced to three
states. Optionally a 3-class probe is fitted on a sample of FLIP's full NetSurfP-2.0 training split and scored on
its NEW364 test set (``--flip-train``). Only resolved residues are trained on and scored.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from eval.common import published
from eval.common.charts import curves_png
from eval.common.linear_probes import SoftmaxProbe, softmax_loss
from eval.common.probe_training import fit_lbfgs
from eval.common.report import interval_text, per_item, write_results
from eval.common.representations import parse_layers, per_residue_layers
from eval.common.statistics import pooled_ratio_interval, resample_counts
from eval.common.task import Backbone, Result, Task, TaskOptions, option
from eval.structure.secondary.data import TEST_FILES, load_flip_ss3, load_ss8_sets
from eval.structure.secondary.features import ResidueLabels, padded_rows, residue_labels
from eval.structure.secondary.metrics import accuracy, majority_accuracy, ss8_to_ss3

NAME = "secondary-structure-linear"


@dataclasses.dataclass(frozen=True)
class Options(TaskOptions):
    layers: str = option("all", "'all', 'last' or comma-separated layers")
    max_train: int | None = option(None, "first N training proteins (none: all 499)")
    max_test: int | None = option(None, "first N proteins of each test set (none: all)")
    tests: str = option(",".join(TEST_FILES), "comma-separated test sets")
    l2: float = option(1e-4, "L2 penalty on the probe weights")
    iterations: int = option(300, "L-BFGS iterations per probe")
    flip_train: int = option(0, "also fit Q3 on N sampled FLIP training chains (0: skip; -1: all)")
    toks_per_batch: int = option(4096, "tokens per backbone batch")


def fit_probe(x: np.ndarray, y: np.ndarray, mask: np.ndarray, classes: int, options: Options) -> SoftmaxProbe:
    """A softmax probe fitted on the rows of ``x`` where ``mask`` (padding rows never count)."""
    keep = mask & (y >= 0)
    x_rows, real = padded_rows(x[keep])
    y_rows, _ = padded_rows(y[keep].astype(np.int32))
    probe = SoftmaxProbe(x.shape[1], classes, rngs=nnx.Rngs(options.seed))
    batch = {"x": x_rows, "y": y_rows, "mask": real, "l2": np.float32(options.l2)}
    fit_lbfgs(probe, softmax_loss, batch, iterations=options.iterations)
    return probe


def predict(probe: SoftmaxProbe, x: np.ndarray) -> np.ndarray:
    """Class indices for every row of ``x`` (padded to a fixed chunk, so few shapes compile)."""
    graphdef, state = nnx.split(probe)
    padded, real = padded_rows(x)
    return np.asarray(_classify(graphdef, state, padded))[real]


@functools.partial(jax.jit, static_argnums=0)
def _classify(graphdef, state, rows):
    return jnp.argmax(nnx.merge(graphdef, state)(rows), axis=-1)


def embed(model, records, layers: list[int], desc: str) -> tuple[dict[int, np.ndarray], ResidueLabels]:
    """Residue features of every layer (concatenated over records) and the matching labels."""
    features, labels, _ = embed_with_lengths(model, records, layers, desc)
    return features, labels


def embed_with_lengths(
    model, records, layers: list[int], desc: str
) -> tuple[dict[int, np.ndarray], ResidueLabels, list[int]]:
    """As :func:`embed`, with each record's number of feature rows (to score the records one by one)."""
    features = per_residue_layers(model, [(r.id, r.sequence) for r in records], layers, desc=desc)
    lengths = [f.shape[0] for f in features[layers[0]]]
    labels = residue_labels(records, lengths)
    return {layer: np.concatenate(values) for layer, values in features.items()}, labels, lengths


def per_protein_accuracy(
    predicted: np.ndarray, labels: np.ndarray, mask: np.ndarray, lengths: list[int]
) -> list[float]:
    """Accuracy of each record's residues, the records laid end to end (NaN for one with no residue to score)."""
    correct, residues = per_protein_counts(predicted, labels, mask, lengths)
    return [float(c / r) if r else math.nan for c, r in zip(correct, residues, strict=True)]


def per_protein_counts(
    predicted: np.ndarray, labels: np.ndarray, mask: np.ndarray, lengths: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per record (laid end to end): residues predicted correctly and residues scored, to resample Q8/Q3."""
    record = np.repeat(np.arange(len(lengths)), lengths)
    mask = np.asarray(mask, dtype=bool)
    correct = np.bincount(record, weights=(np.asarray(predicted) == np.asarray(labels)) & mask, minlength=len(lengths))
    return correct, np.bincount(record, weights=mask, minlength=len(lengths))


def pooled_accuracy(
    predicted: np.ndarray, labels: np.ndarray, mask: np.ndarray, lengths: list[int], counts: np.ndarray
) -> dict[str, float | list[float] | None]:
    """Accuracy over all scored residues and its 95% bootstrap interval over records (``counts``: resampled)."""
    correct, residues = per_protein_counts(predicted, labels, mask, lengths)
    return {"value": accuracy(predicted, labels, mask), "ci95": pooled_ratio_interval(correct, residues, counts)}


def layer_scores(
    probes: tuple, x: np.ndarray, labels: ResidueLabels, lengths: list[int], counts: np.ndarray
) -> dict[str, float | list[float] | None]:
    """Q8, Q3 and Q3 from the 8-class predictions at one layer, each with its interval (``"Q8 ci95"``...)."""
    q8, q3 = (predict(probe, x) for probe in probes)
    found = {
        "Q8": pooled_accuracy(q8, labels.ss8, labels.mask, lengths, counts),
        "Q3": pooled_accuracy(q3, labels.ss3, labels.mask, lengths, counts),
        "Q3 from Q8": pooled_accuracy(ss8_to_ss3(q8), labels.ss3, labels.mask, lengths, counts),
    }
    return {name: score["value"] for name, score in found.items()} | {
        f"{name} ci95": score["ci95"] for name, score in found.items()
    }


def layer_row(test_set: str, layer: int, proteins: int, scores: dict) -> dict:
    """One Markdown row: Q8, Q3 and Q3 from Q8, each followed by its 95% interval over proteins."""
    row = {"test set": test_set, "layer": layer, "proteins": proteins}
    for name in ("Q8", "Q3", "Q3 from Q8"):
        row |= {name: scores[name], f"{name} 95% CI": interval_text(scores[f"{name} ci95"])}
    return row


def _per_protein(
    test_set: str, records, probes: tuple, x: np.ndarray, labels: ResidueLabels, lengths: list[int]
) -> dict[str, dict[str, float]]:
    """Q8 and Q3 of each test protein at one layer, by record id: what ``compare`` pairs between two runs."""
    ids = [r.id for r in records]
    q8, q3 = (predict(probe, x) for probe in probes)
    return {
        f"{test_set} Q8 (last layer)": per_item(ids, per_protein_accuracy(q8, labels.ss8, labels.mask, lengths)),
        f"{test_set} Q3 (last layer)": per_item(ids, per_protein_accuracy(q3, labels.ss3, labels.mask, lengths)),
    }


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    model = backbone.model
    layers = parse_layers(options.layers, model)
    sets = load_ss8_sets(Path(data), options.max_train, options.max_test, tuple(options.tests.split(",")))
    train_x, train = embed(model, sets.train, layers, "ss8 train")
    probes = {
        layer: (
            fit_probe(train_x[layer], train.ss8, train.mask, 8, options),
            fit_probe(train_x[layer], train.ss3, train.mask, 3, options),
        )
        for layer in layers
    }
    del train_x
    results = {
        "layers": layers,
        "train_proteins": len(sets.train),
        "dropped_train": sets.dropped,
        "tests": {},
        "per_item": {},
    }
    rows = []
    for name, records in sets.tests.items():
        test_x, test, lengths = embed_with_lengths(model, records, layers, name)
        counts = resample_counts(len(records), seed=options.seed)
        per_layer = {}
        for layer in layers:
            per_layer[layer] = layer_scores(probes[layer], test_x[layer], test, lengths, counts)
            rows.append(layer_row(name, layer, len(records), per_layer[layer]))
        majority = {
            "Q8": majority_accuracy(train.ss8, train.mask, test.ss8, test.mask),
            "Q3": majority_accuracy(train.ss3, train.mask, test.ss3, test.mask),
        }
        rows.append({"test set": name, "layer": "majority class (chance)", "proteins": len(records)} | majority)
        results["tests"][name] = {
            "proteins": len(records),
            "residues": int(test.mask.sum()),
            "residues_beyond_window": test.beyond_window,
            "per_layer": per_layer,
            "majority_class": majority,
        }
        results["per_item"] |= _per_protein(name, records, probes[layers[-1]], test_x[layers[-1]], test, lengths)
        print(f"{NAME} {name}: Q8 {per_layer[layers[-1]]['Q8']:.3f} at layer {layers[-1]}", flush=True)
    if options.flip_train:
        results["flip"] = flip_q3(model, layers, data, options)
        rows += [{"test set": "FLIP NEW364", "layer": k, "Q3": v} for k, v in results["flip"]["Q3"].items()]
    figure = f"{NAME}-layers.png"
    curves_png(
        layers,
        {
            f"{name} Q8": [entry["per_layer"][layer]["Q8"] for layer in layers]
            for name, entry in results["tests"].items()
        },
        Path(out) / figure,
        title="Secondary structure: linear probe per layer",
        xlabel="layer",
        ylabel="Q8 accuracy",
    )
    results |= backbone.report_fields()
    notes = (
        f"Trained on {len(sets.train)} NetSurfP-2.0 proteins (dropped as test duplicates: {', '.join(sets.dropped)}); "
        "per-residue accuracy over resolved residues, pooled over each test set. The 95% CI columns (JSON: "
        "'Q8 ci95' and so on, every layer) are percentile-bootstrap intervals over test proteins: proteins "
        "resampled, accuracy recomputed from their residues. The JSON's per_item gives each test protein's Q8 and "
        "Q3 at the last layer, which `esm-jax eval compare` pairs between two runs."
    )
    write_results(
        out,
        NAME,
        results,
        rows,
        title="Secondary structure: linear projections",
        notes=notes,
        figures=[figure],
        published=published.SECONDARY_STRUCTURE_LINEAR,
    )
    return Result({name: entry["per_layer"][layers[-1]]["Q8"] for name, entry in results["tests"].items()})


def flip_q3(model, layers: list[int], data: Path, options: Options) -> dict:
    """Q3 per layer of a 3-class probe fitted on FLIP training chains, scored on FLIP's NEW364 test set."""
    size = None if options.flip_train < 0 else options.flip_train
    train_records, test_records = load_flip_ss3(Path(data), size, options.max_test, options.seed)
    train_x, train = embed(model, train_records, layers, "flip train")
    probes = {layer: fit_probe(train_x[layer], train.ss3, train.mask, 3, options) for layer in layers}
    del train_x
    test_x, test = embed(model, test_records, layers, "flip test")
    scores = {layer: accuracy(predict(probes[layer], test_x[layer]), test.ss3, test.mask) for layer in layers}
    return {"train_proteins": len(train_records), "test_proteins": len(test_records), "Q3": scores}


TASK = Task(NAME, __doc__, Options, run)
