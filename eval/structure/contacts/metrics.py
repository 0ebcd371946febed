"""Contact precision: top-L, L/2, L/5 precision in short, medium and long sequence-separation bands.

The standard protein contact-prediction scores (as used by ESM-1b, Rives et al. PNAS 2021, and CASP): among
residue pairs ``i < j`` whose separation ``j - i`` lies in a band, take the ``k = L // d`` highest-scoring pairs
(``L`` the sequence length, ``d`` in 1, 2, 5) and report the fraction that are true contacts. Pairs involving a
residue without coordinates are never candidates. Ties at the cut-off are resolved by expectation: the tied
pairs fill the remaining places in proportion to how many of them are contacts, which is the mean precision over
every order of the ties and so does not depend on how pairs happen to be numbered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from eval.common.statistics import bootstrap_mean

# band name -> (smallest separation, largest separation or None)
BANDS: dict[str, tuple[int, int | None]] = {"short": (6, 11), "medium": (12, 23), "long": (24, None)}
# top-L/d for these names
DIVISORS: dict[str, int] = {"L": 1, "L/2": 2, "L/5": 5}
MIN_SEPARATION = 6


def precision_at_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Expected precision of the ``k`` best ``scores`` (1-D) against boolean ``labels``, ties shared out evenly."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal 1-D shapes")
    if not 0 < k <= scores.size:
        raise ValueError(f"k = {k} must be between 1 and the number of candidates ({scores.size})")
    cutoff = np.sort(scores)[::-1][k - 1]
    above = scores > cutoff
    tied = scores == cutoff
    remaining = k - int(above.sum())
    return float((labels[above].sum() + remaining * labels[tied].mean()) / k)


def band_mask(length: int, band: str) -> np.ndarray:
    """``(L, L)`` bool: upper-triangle pairs whose separation lies in ``band``."""
    low, high = BANDS[band]
    separation = np.arange(length)[None, :] - np.arange(length)[:, None]
    mask = separation >= low
    if high is not None:
        mask &= separation <= high
    return mask


def contact_precisions(scores: np.ndarray, contacts: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """``{"long P@L": ..., "medium P@L/5": ...}`` for one protein; NaN for a band with no candidate pair.

    ``scores`` and ``contacts`` are ``(L, L)``; ``valid`` (L,) marks residues with coordinates (default: all).
    """
    scores = np.asarray(scores)
    contacts = np.asarray(contacts, dtype=bool)
    length = scores.shape[0]
    if scores.shape != (length, length) or contacts.shape != scores.shape:
        raise ValueError(f"scores {scores.shape} and contacts {contacts.shape} must both be (L, L)")
    if np.isnan(scores).any():
        raise ValueError("contact scores contain NaN; the predictor produced invalid values")
    valid = np.ones(length, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if valid.shape != (length,):
        raise ValueError(f"valid has shape {valid.shape}, expected ({length},)")
    pair_valid = valid[:, None] & valid[None, :]
    results = {}
    for band in BANDS:
        candidates = band_mask(length, band) & pair_valid
        for name, divisor in DIVISORS.items():
            key = f"{band} P@{name}"
            count = int(candidates.sum())
            if count == 0:
                results[key] = float("nan")
                continue
            k = min(max(1, length // divisor), count)
            results[key] = precision_at_k(scores[candidates], contacts[candidates], k)
    return results


def mean_precisions(per_protein: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each precision over proteins, ignoring proteins where a band had no candidate pair."""
    rows = list(per_protein)
    if not rows:
        raise ValueError("no proteins to average")
    return {key: float(np.nanmean([row[key] for row in rows])) for key in rows[0]}


def precisions_with_interval(per_protein: Sequence[Mapping[str, float]], seed: int) -> dict:
    """:func:`mean_precisions` with long P@L's 95% bootstrap interval over proteins (``"long P@L ci95"``)."""
    interval = bootstrap_mean([row["long P@L"] for row in per_protein], seed=seed)
    return mean_precisions(per_protein) | {"long P@L ci95": [interval["ci95_low"], interval["ci95_high"]]}


def random_ranking_precisions(proteins: Iterable) -> dict[str, float]:
    """Chance level: what a random ranking of pairs scores in expectation, averaged over ``proteins``.

    With every pair tied, :func:`contact_precisions` shares the places out evenly, so each precision is the
    fraction of contacts among the band's candidate pairs: the expected precision of any random order.
    """
    return mean_precisions(contact_precisions(np.zeros(p.contacts.shape), p.contacts, p.valid) for p in proteins)
