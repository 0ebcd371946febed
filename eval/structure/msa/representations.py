"""Representations pooled over a protein's MSA (ESM-1b Tables 6, 7): ``avg`` and ``cov`` features.

Each sampled alignment row is embedded on its own (ungapped); its residue representations are placed at the
query residues they are aligned to. ``avg`` is, at each query residue, the mean of the representations of the
rows (query included) that have a residue there. ``cov`` first reduces representations to ``k`` dimensions with a
PCA fitted on all the pooled residues (no labels involved), then takes at every pair ``i, j`` the uncentered
covariance over the rows, ``1/N Σ_n z_ni z_njᵀ`` (a gap contributes zeros), flattened to ``k²`` pair features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from esm_jax.model import ESM
from eval.common.pca import pca
from eval.common.representations import per_residue_layers
from eval.structure.contacts.sets import ContactProtein


@dataclasses.dataclass(frozen=True)
class MsaRepresentations:
    """Per protein: ``rows`` (N, L, D) representations at query residues (zeros at gaps) and ``present`` (N, L)."""

    rows: list[np.ndarray]
    present: list[np.ndarray]


def embed_alignments(
    model: ESM,
    proteins: Sequence[ContactProtein],
    query_features: Sequence[np.ndarray],
    layer: int,
    max_rows: int,
    seed: int = 0,
    toks_per_batch: int = 4096,
) -> MsaRepresentations:
    """The query's features plus up to ``max_rows`` sampled aligned rows per protein, placed on query residues."""
    records, owners = [], []
    for number, protein in enumerate(proteins):
        if protein.alignment is None:
            raise ValueError(f"{protein.name} has no alignment; MSA features need one")
        sequences, index = protein.alignment.residues(max_rows, seed)
        for row, sequence in enumerate(sequences):
            records.append((f"{protein.name}/{row}", sequence))
            owners.append((number, index[row]))
    embedded = per_residue_layers(model, records, [layer], toks_per_batch=toks_per_batch, desc="MSA rows")[
        model.normalize_layers([layer])[0]
    ]
    rows = [[query] for query in query_features]
    present = [[np.ones(len(p.sequence), bool)] for p in proteins]
    for (number, index), features in zip(owners, embedded, strict=True):
        placed = np.zeros_like(query_features[number])
        here = (index >= 0) & (index < features.shape[0])
        placed[here] = features[index[here]]
        rows[number].append(placed)
        present[number].append(here)
    return MsaRepresentations([np.stack(r) for r in rows], [np.stack(p) for p in present])


def average(msa: MsaRepresentations) -> list[np.ndarray]:
    """``(L, D)`` per protein: the mean representation over rows with a residue at each query residue."""
    return [r.sum(axis=0) / np.maximum(p.sum(axis=0), 1)[:, None] for r, p in zip(msa.rows, msa.present, strict=True)]


def pca_basis(msa: MsaRepresentations, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and top-``k`` principal directions ``(D, k)`` of every pooled residue representation."""
    pooled = np.concatenate([r[p] for r, p in zip(msa.rows, msa.present, strict=True)]).astype(np.float64)
    return pooled.mean(axis=0), pca(pooled, k).components.T


def covariance(msa: MsaRepresentations, k: int) -> list[np.ndarray]:
    """``(L, L, k²)`` per protein: uncentered covariance over rows of the PCA-reduced representations."""
    mean, basis = pca_basis(msa, k)
    out = []
    for rows, present in zip(msa.rows, msa.present, strict=True):
        reduced = ((rows - mean) @ basis) * present[..., None]
        pairs = np.einsum("nia,njb->ijab", reduced, reduced) / rows.shape[0]
        out.append(pairs.reshape(*pairs.shape[:2], k * k).astype(np.float32))
    return out
