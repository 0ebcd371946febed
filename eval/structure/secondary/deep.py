"""Secondary structure with a deep head (ESM-1b Table 4): a NetSurfP-2.0-style network on frozen features.

The head (:class:`eval.common.deep_heads.NetSurfPHead`: convolutions + two-layer BiLSTM, Klausen et al. 2019) is trained
with the same architecture and schedule on each input representation (a backbone layer, and one-hot amino acids as
a baseline without language-model information) on the NetSurfP-2.0 training subset, then scored (Q8, Q3) on CB513,
TS115 and CASP12; mean ± SD over seeds, as the paper reports. Every training and test protein is used by default
(a step's cost does not depend on how many there are); the head is small and short-trained for CPUs, about 5
minutes per seed and feature set on 2 cores. The full protocol is ``--seeds 5 --steps 20000 --hidden 1024
--kernels 129,257``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from data_pipeline.readers.netsurfp import SecondaryStructureRecord
from eval.common import published
from eval.common.deep_heads import NetSurfPHead
from eval.common.padding import pad_stack
from eval.common.probe_training import fit_adam, protein_batches
from eval.common.report import per_item, write_results
from eval.common.representations import feature_layer, per_residue_layers
from eval.common.seeds import formatted, mean_sd
from eval.common.task import Backbone, Result, Task, TaskOptions, option
from eval.structure.msa.features import one_hot_features
from eval.structure.secondary.data import TEST_FILES, load_ss8_sets
from eval.structure.secondary.metrics import SS3_STATES, SS8_STATES, accuracy, encode_states, majority_accuracy

NAME = "secondary-structure-deep"


@dataclasses.dataclass(frozen=True)
class Options(TaskOptions):
    features: str = option("last,onehot", "comma-separated feature sets: 'last', a layer number, 'onehot'")
    max_train: int = option(0, "first N training proteins (0: all)")
    max_test: int = option(0, "first N proteins per test set (0: all)")
    tests: str = option(",".join(TEST_FILES), "comma-separated test sets")
    seeds: int = option(3, "training seeds (the paper: 5)")
    steps: int = option(200, "Adam steps per seed")
    learning_rate: float = option(1e-3, "Adam learning rate")
    hidden: int = option(64, "LSTM units per direction (NetSurfP-2.0: 1024)")
    kernels: str = option("15,31", "comma-separated convolution widths (NetSurfP-2.0: 129,257)")
    toks_per_batch: int = option(2048, "residues per head batch")


def feature_sets(model, names: list[str], records: list[SecondaryStructureRecord], desc: str) -> dict[str, list]:
    """``{feature name: [(L, D) per record]}`` for every requested representation."""
    layers = {name: feature_layer(model, name) for name in names if name != "onehot"}
    pairs = [(r.id, r.sequence) for r in records]
    embedded = per_residue_layers(model, pairs, list(layers.values()), desc=desc) if layers else {}
    out = {}
    for name in names:
        if name == "onehot":
            out[name] = [one_hot_features(r.sequence) for r in records]
            continue
        features = embedded[layers[name]]
        for f, r in zip(features, records, strict=True):
            if f.shape[0] != len(r.sequence):
                raise ValueError(f"{r.id}: longer than the model's window; deep heads need every residue's features")
        out[name] = features
    return out


def batches(records: list[SecondaryStructureRecord], features: list[np.ndarray], toks_per_batch: int) -> list[tuple]:
    """Padded ``(indices, batch)`` groups with labels and the scored-residue mask; every record once."""
    out = []
    for chosen, rows, width in protein_batches([len(r.sequence) for r in records], toks_per_batch):
        picked = [records[i] for i in chosen]
        batch = {
            "x": pad_stack([features[i] for i in chosen], rows, width),
            "present": pad_stack([np.ones(len(r.sequence), bool) for r in picked], rows, width, fill=False),
            "mask": pad_stack([r.mask for r in picked], rows, width, fill=False),
            "ss8": pad_stack([encode_states(r.ss8, SS8_STATES, r.id) for r in picked], rows, width),
            "ss3": pad_stack([encode_states(r.ss3, SS3_STATES, r.id) for r in picked], rows, width),
        }
        out.append((chosen, batch))
    return out


def head_loss(head: NetSurfPHead, batch: dict) -> jax.Array:
    """Masked mean cross-entropy of the 8- and 3-state outputs, summed."""
    logits8, logits3 = head(batch["x"], batch["present"])
    mask = batch["mask"].astype(jnp.float32)
    total = optax.softmax_cross_entropy_with_integer_labels(logits8, batch["ss8"])
    total += optax.softmax_cross_entropy_with_integer_labels(logits3, batch["ss3"])
    return jnp.sum(total * mask) / jnp.maximum(mask.sum(), 1.0)


@functools.partial(jax.jit, static_argnums=0)
def _states(graphdef, state, x, present):
    return tuple(jnp.argmax(logits, -1) for logits in nnx.merge(graphdef, state)(x, present))


def evaluate(head: NetSurfPHead, groups: list[tuple]) -> tuple[dict[str, float], dict[int, float]]:
    """Q8 and Q3 over every scored residue of ``groups``, and each record's own Q8 by its index."""
    graphdef, state = nnx.split(head)
    predicted8, predicted3, labels8, labels3, masks, per_record = [], [], [], [], [], {}
    for chosen, batch in groups:
        p8, p3 = _states(graphdef, state, batch["x"], batch["present"])
        keep = batch["mask"]
        correct = (np.asarray(p8) == batch["ss8"]) & keep
        for row, index in enumerate(chosen):
            per_record[index] = float(correct[row].sum() / keep[row].sum()) if keep[row].any() else float("nan")
        predicted8.append(np.asarray(p8)[keep])
        predicted3.append(np.asarray(p3)[keep])
        labels8.append(batch["ss8"][keep])
        labels3.append(batch["ss3"][keep])
        masks.append(np.ones(int(keep.sum()), bool))
    q8 = accuracy(np.concatenate(predicted8), np.concatenate(labels8), np.concatenate(masks))
    q3 = accuracy(np.concatenate(predicted3), np.concatenate(labels3), np.concatenate(masks))
    return {"Q8": q8, "Q3": q3}, per_record


def majority_class(train: list[SecondaryStructureRecord], test: list[SecondaryStructureRecord]) -> dict[str, float]:
    """Chance level: Q8 and Q3 of always predicting the state most frequent among the training residues."""

    def labels(records: list[SecondaryStructureRecord], field: str, states: str) -> tuple[np.ndarray, np.ndarray]:
        encoded = np.concatenate([encode_states(getattr(r, field), states, r.id) for r in records])
        return encoded, np.concatenate([np.asarray(r.mask, bool) for r in records])

    return {
        "Q8": majority_accuracy(*labels(train, "ss8", SS8_STATES), *labels(test, "ss8", SS8_STATES)),
        "Q3": majority_accuracy(*labels(train, "ss3", SS3_STATES), *labels(test, "ss3", SS3_STATES)),
    }


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    model = backbone.model
    names = options.features.split(",")
    kernels = tuple(int(k) for k in options.kernels.split(","))
    sets = load_ss8_sets(
        Path(data), options.max_train or None, options.max_test or None, tuple(options.tests.split(","))
    )
    train_features = feature_sets(model, names, sets.train, "ss8 train")
    test_features = {t: feature_sets(model, names, records, t) for t, records in sets.tests.items()}
    results = {"features": {}, "train_proteins": len(sets.train), "dropped_train": sets.dropped, "per_item": {}}
    rows = []
    for name in names:
        train_groups = [b for _, b in batches(sets.train, train_features[name], options.toks_per_batch)]
        test_groups = {t: batches(sets.tests[t], test_features[t][name], options.toks_per_batch) for t in sets.tests}
        runs: dict[str, list] = {t: [] for t in sets.tests}
        per_record: dict[str, list] = {t: [] for t in sets.tests}
        for seed in range(options.seeds):
            head = NetSurfPHead(
                train_features[name][0].shape[1], hidden=options.hidden, kernels=kernels, rngs=nnx.Rngs(seed)
            )
            fit_adam(
                head,
                head_loss,
                train_groups,
                steps=options.steps,
                learning_rate=options.learning_rate,
                seed=seed,
                desc=f"{name} seed {seed}",
            )
            for test, groups in test_groups.items():
                pooled, by_index = evaluate(head, groups)
                runs[test].append(pooled)
                per_record[test].append([by_index[i] for i in range(len(sets.tests[test]))])
            print(f"{NAME} {name} seed {seed}: " + ", ".join(f"{t} Q8 {r[-1]['Q8']:.3f}" for t, r in runs.items()))
        summary = {test: mean_sd(values) for test, values in runs.items()}
        results["features"][name] = summary
        for test, values in per_record.items():
            ids = [record.id for record in sets.tests[test]]
            results["per_item"][f"{test} Q8 ({name})"] = per_item(ids, np.mean(values, axis=0))
        for test, stats in summary.items():
            rows.append(
                {
                    "features": name,
                    "test set": test,
                    "proteins": len(sets.tests[test]),
                    "Q8": formatted(stats, "Q8"),
                    "Q3": formatted(stats, "Q3"),
                }
            )
    results["majority_class"] = {test: majority_class(sets.train, records) for test, records in sets.tests.items()}
    rows += [
        {"features": "majority class (chance)", "test set": test, "proteins": len(sets.tests[test])} | chance
        for test, chance in results["majority_class"].items()
    ]
    results |= {
        "seeds": options.seeds,
        "steps": options.steps,
        "hidden": options.hidden,
    } | backbone.report_fields()
    notes = (
        f"NetSurfP-style head (convolutions {options.kernels}, {options.hidden} LSTM units), {options.steps} steps; "
        f"mean ± SD over {options.seeds} seeds. The JSON's per_item gives each test protein's Q8 averaged over the "
        "seeds, which `esm-jax eval compare` pairs between two runs."
    )
    write_results(
        out,
        NAME,
        results,
        rows,
        title="Secondary structure: deep head",
        notes=notes,
        published=(published.SECONDARY_STRUCTURE_DEEP, published.RELATED_MODELS, published.RELATED_MODELS_README),
    )
    return Result({f"{n} {t} Q8": s[t]["Q8"]["mean"] for n, s in results["features"].items() for t in s})


TASK = Task(NAME, __doc__, Options, run)
