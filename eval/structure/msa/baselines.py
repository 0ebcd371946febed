"""Alignment-only contact baselines: the sequence profile (a per-residue feature) and the Potts model scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from esm_jax.files import atomic_output
from eval.structure.contacts.sets import ContactProtein
from eval.structure.msa.features import profile, sequence_weights
from eval.structure.msa.potts import coupling_scores, fit_potts

# Folder under a task's --out where Potts scores are kept: contacts-linear and structural-holdout share it.
POTTS_CACHE = ".potts-cache"


def _anchored(protein: ContactProtein, max_rows: int | None, seed: int) -> np.ndarray:
    if protein.alignment is None:
        raise ValueError(f"{protein.name} has no alignment; alignment baselines need one")
    return protein.alignment.anchored(protein.sequence, max_rows=max_rows, seed=seed)


def profile_features(protein: ContactProtein, max_rows: int | None = 2000, seed: int = 0) -> np.ndarray:
    """``(L, 21)`` weighted position-specific frequencies of the protein's query-anchored MSA."""
    msa = _anchored(protein, max_rows, seed)
    return profile(msa, sequence_weights(msa))


def potts_contact_scores(
    protein: ContactProtein, max_rows: int | None = 2000, iterations: int = 100, seed: int = 0
) -> np.ndarray:
    """``(L, L)`` APC-corrected coupling norms of a pseudo-likelihood Potts model of the protein's MSA.

    Query residues outside the family's columns are all-gap columns and so carry no signal of their own.
    """
    msa = _anchored(protein, max_rows, seed)
    return coupling_scores(fit_potts(msa, sequence_weights(msa), iterations=iterations))


def cached_potts_scores(
    protein: ContactProtein, max_rows: int | None, iterations: int, seed: int, folder: Path
) -> np.ndarray:
    """:func:`potts_contact_scores`, reused from ``folder`` when the same settings computed them before.

    They depend on the alignment and settings only, never on the checkpoint, so reruns on other models skip them.
    """
    path = folder / f"{protein.name}-rows{max_rows or 'all'}-it{iterations}-seed{seed}.npy"
    if path.is_file():
        return np.load(path)
    scores = potts_contact_scores(protein, max_rows, iterations, seed)
    with atomic_output(path, "wb") as handle:
        np.save(handle, scores)
    return scores
