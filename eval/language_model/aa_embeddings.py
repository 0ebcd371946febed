"""Amino-acid embeddings (paper Fig. 1): PCA and t-SNE of the 20 standard amino acids' output-embedding rows.

ESM ties its output projection to the input token table, so the rows of ``embed_tokens`` are the output
embeddings the paper projects (Rives et al., PNAS 2021, Fig. 1, where a trained model's amino acids group
by biochemical properties such as hydrophobicity, aromaticity and charge). Points are coloured by the
side-chain classes of standard biochemistry (e.g. Nelson & Cox, Lehninger Principles of Biochemistry,
ch. 3; aromatic F/W/Y split out, and C, G, P, whose side chains have special conformational roles, kept
apart as "unique"), the six classes the paper's Fig. 1 legend uses. As a number: how often an amino acid's
nearest other amino acid (cosine, full dimension) is in its own class, against the chance rate.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from esm_jax.alphabet import STANDARD_AMINO_ACIDS, Alphabet
from eval.common import charts
from eval.common.pca import pca
from eval.common.report import write_results
from eval.common.task import Backbone, Result, Task, TaskOptions, option
from eval.common.tsne import tsne

NAME = "aa-embeddings"
# per amino acid, 1 where its nearest other amino acid shares its class: `eval compare` and `summary` pair these
NEAREST_IN_CLASS = "nearest amino acid in the same class"

AMINO_ACID_CLASSES: dict[str, str] = {
    "hydrophobic": "AVLIM",
    "aromatic": "FWY",
    "polar": "STNQ",
    "positively charged": "KRH",
    "negatively charged": "DE",
    "unique": "CGP",
}
CLASS_OF = {letter: name for name, letters in AMINO_ACID_CLASSES.items() for letter in letters}


@dataclasses.dataclass(frozen=True)
class Options(TaskOptions):
    perplexity: float = option(5.0, "t-SNE perplexity")
    tsne_iterations: int = option(1000, "t-SNE iterations")


def amino_acid_rows(model) -> np.ndarray:
    """(20, D) output-embedding rows of the standard amino acids, in ``STANDARD_AMINO_ACIDS`` order."""
    alphabet = Alphabet()
    table = np.asarray(model.embed_tokens.embedding[...], dtype=np.float64)
    return table[[alphabet.get_idx(letter) for letter in STANDARD_AMINO_ACIDS]]


def nearest_in_class(rows: np.ndarray, classes: list[str]) -> np.ndarray:
    """Per row: is its cosine-nearest other row in the same class?"""
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    labels = np.array(classes)
    return labels[np.argmax(similarity, axis=1)] == labels


def nearest_class_agreement(rows: np.ndarray, classes: list[str]) -> tuple[float, float]:
    """(fraction whose cosine-nearest other row shares the class, the same fraction for a random neighbour)."""
    agreement = float(np.mean(nearest_in_class(rows, classes)))
    labels = np.array(classes)
    sizes = np.array([np.sum(labels == label) for label in labels])
    chance = float(np.mean((sizes - 1) / (len(labels) - 1)))
    return agreement, chance


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    rows = amino_acid_rows(backbone.model)
    letters = list(STANDARD_AMINO_ACIDS)
    classes = [CLASS_OF[letter] for letter in letters]
    projected = pca(rows, 2)
    embedded = tsne(rows, perplexity=options.perplexity, iterations=options.tsne_iterations, seed=options.seed)
    agreement, chance = nearest_class_agreement(rows, classes)
    out = Path(out)
    figures = [
        charts.labelled_scatter_png(
            projected.points,
            letters,
            classes,
            out / f"{NAME}-pca.png",
            title=f"PCA of output embeddings ({backbone.checkpoint})",
            xlabel=f"PC 1 ({projected.explained[0]:.0%} of variance)",
            ylabel=f"PC 2 ({projected.explained[1]:.0%} of variance)",
        ),
        charts.labelled_scatter_png(
            embedded.points,
            letters,
            classes,
            out / f"{NAME}-tsne.png",
            title=f"t-SNE of output embeddings, perplexity {options.perplexity:g} ({backbone.checkpoint})",
            xlabel="t-SNE 1",
            ylabel="t-SNE 2",
        ),
    ]
    results = {
        **backbone.report_fields(),
        "embedding_dim": int(rows.shape[1]),
        "classes": AMINO_ACID_CLASSES,
        "pca_explained_variance": projected.explained.tolist(),
        "pca_points": dict(zip(letters, projected.points.tolist(), strict=True)),
        "tsne_points": dict(zip(letters, embedded.points.tolist(), strict=True)),
        "tsne_kl_divergence": embedded.kl_divergence,
        "nearest_class_agreement": agreement,
        "nearest_class_chance": chance,
        "per_item": {
            NEAREST_IN_CLASS: dict(zip(letters, nearest_in_class(rows, classes).astype(float).tolist(), strict=True))
        },
    }
    table = [
        {"measure": "nearest amino acid in the same class (cosine)", "value": agreement},
        {"measure": "same, for a random other amino acid (chance)", "value": chance},
        {"measure": "PCA variance explained, PC 1 + PC 2", "value": float(projected.explained.sum())},
        {"measure": "t-SNE KL divergence", "value": embedded.kl_divergence},
    ]
    notes = "Classes: " + "; ".join(f"{name}: {' '.join(aas)}" for name, aas in AMINO_ACID_CLASSES.items()) + "."
    write_results(
        out,
        NAME,
        results,
        table,
        title="Amino-acid output embeddings (paper Fig. 1)",
        notes=notes,
        figures=[figure.name for figure in figures],
    )
    return Result({"nearest_class_agreement": agreement, "chance": chance})


TASK = Task(NAME, __doc__, Options, run)
