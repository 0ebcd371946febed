"""Alignment-only contact baselines: the sequence profile (a per-residue feature) and the Potts model scores."""

from __future__ import annotations

import numpy as np

from eval.structure.contacts.sets import ContactProtein
from eval.structure.msa.features import profile, sequence_weights
from eval.structure.msa.potts import coupling_scores, fit_potts


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
