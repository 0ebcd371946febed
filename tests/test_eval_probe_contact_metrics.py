"""Contact precision on hand-made maps with known answers: bands, top-L/k, ties, missing atoms."""

from __future__ import annotations

import types

import numpy as np
import pytest

from esm_jax.model.heads import average_product_correct
from eval.structure.contacts.metrics import (
    BANDS,
    band_mask,
    contact_precisions,
    mean_precisions,
    precision_at_k,
    random_ranking_precisions,
)


def test_precision_at_k_counts_true_pairs_among_the_best():
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    labels = np.array([True, False, True, True])
    assert precision_at_k(scores, labels, 1) == 1.0
    assert precision_at_k(scores, labels, 2) == 0.5
    assert precision_at_k(scores, labels, 3) == pytest.approx(2 / 3)


def test_ties_at_the_cutoff_are_shared_out_in_expectation():
    # one clear winner (a contact), then three tied pairs of which one is a contact; k = 2:
    # the second place goes to a tied pair, a contact with probability 1/3
    scores = np.array([0.9, 0.5, 0.5, 0.5])
    labels = np.array([True, True, False, False])
    assert precision_at_k(scores, labels, 2) == pytest.approx((1 + 1 / 3) / 2)
    # the answer does not depend on the order in which tied pairs are numbered
    assert precision_at_k(scores[[0, 3, 2, 1]], labels[[0, 3, 2, 1]], 2) == pytest.approx((1 + 1 / 3) / 2)
    # constant scores give the base rate whatever k is
    assert precision_at_k(np.zeros(4), labels, 3) == pytest.approx(0.5)


def test_bands_split_pairs_by_separation():
    length = 40
    short, medium, long = (band_mask(length, b) for b in ("short", "medium", "long"))
    assert short[0, 6] and short[0, 11] and not short[0, 12] and not short[0, 5]
    assert medium[0, 12] and medium[0, 23] and not medium[0, 24]
    assert long[0, 24] and long[0, 39] and not long[1, 0]
    assert not (short & medium).any() and not (medium & long).any()


def test_precisions_on_a_known_contact_map():
    length = 30  # top-L = 30, L/2 = 15, L/5 = 6
    contacts = np.zeros((length, length), bool)
    scores = np.zeros((length, length))
    # long range: 3 true contacts ranked first, then 3 false pairs, then the rest tied at 0
    for n, (i, j) in enumerate([(0, 25), (1, 27), (2, 29)]):
        contacts[i, j] = contacts[j, i] = True
        scores[i, j] = scores[j, i] = 10 - n
    for n, (i, j) in enumerate([(0, 24), (0, 26), (3, 29)]):
        scores[i, j] = scores[j, i] = 5 - n
    # short range: 2 contacts, one ranked first, one unranked among zero-score ties
    contacts[4, 10] = contacts[10, 4] = contacts[5, 11] = contacts[11, 5] = True
    scores[4, 10] = scores[10, 4] = 3.0
    result = contact_precisions(scores, contacts)
    long_pairs = int(band_mask(length, "long").sum())  # 21 pairs: j - i >= 24 in 30 residues
    assert long_pairs == 21
    # k = 6 (L/5): 3 true + 3 false
    assert result["long P@L/5"] == pytest.approx(3 / 6)
    # k = min(15, 21) = 15: 3 true, 3 false, 9 places among 15 tied zero pairs with no contact
    assert result["long P@L/2"] == pytest.approx(3 / 15)
    # k = min(30, 21) = 21: every long pair
    assert result["long P@L"] == pytest.approx(3 / 21)
    short_pairs = int(band_mask(length, "short").sum())
    # k = 6: one true pair ranked first, 5 places among the other short pairs (one contact among them)
    assert result["short P@L/5"] == pytest.approx((1 + 5 * 1 / (short_pairs - 1)) / 6)
    assert result["medium P@L"] == 0.0


def test_residues_without_coordinates_are_never_candidates():
    length = 30  # top-L/5 = 6
    contacts = np.zeros((length, length), bool)
    scores = np.zeros((length, length))
    for i, j in [(0, 29), (2, 28), (3, 29), (0, 26), (2, 27), (3, 28)]:
        contacts[i, j] = contacts[j, i] = True
        scores[i, j] = scores[j, i] = 1.0
    for j in range(25, 30):  # five better-scored pairs of residue 1, which has no CB
        scores[1, j] = scores[j, 1] = 2.0
    valid = np.ones(length, bool)
    valid[1] = False
    assert contact_precisions(scores, contacts)["long P@L/5"] == pytest.approx(1 / 6)
    assert contact_precisions(scores, contacts, valid)["long P@L/5"] == 1.0
    only_pair_valid = np.zeros(length, bool)
    only_pair_valid[[0, 29]] = True
    assert contact_precisions(scores, contacts, only_pair_valid)["long P@L"] == 1.0
    assert np.isnan(contact_precisions(scores, contacts, only_pair_valid)["short P@L"])


def test_mean_over_proteins_skips_empty_bands():
    rows = [{"long P@L": 0.5, "short P@L": float("nan")}, {"long P@L": 0.25, "short P@L": 1.0}]
    assert mean_precisions(rows) == {"long P@L": 0.375, "short P@L": 1.0}


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        contact_precisions(np.full((8, 8), np.nan), np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match=r"\(L, L\)"):
        contact_precisions(np.zeros((8, 7)), np.zeros((8, 7), bool))
    with pytest.raises(ValueError, match="between 1"):
        precision_at_k(np.zeros(3), np.zeros(3, bool), 4)


def test_average_product_correction_matches_a_hand_computation():
    x = np.array([[0.0, 2.0, 1.0], [2.0, 0.0, 3.0], [1.0, 3.0, 0.0]])
    # row sums 3, 5, 4; total 12: APC_ij = x_ij - r_i r_j / 12
    expected = x - np.outer([3.0, 5.0, 4.0], [3.0, 5.0, 4.0]) / 12.0
    assert np.allclose(np.asarray(average_product_correct(x)), expected)
    assert np.asarray(average_product_correct(x))[0, 1] == pytest.approx(2.0 - 15.0 / 12.0)


def test_random_ranking_scores_the_contact_density_of_each_band():
    rng = np.random.default_rng(3)
    length = 60
    contacts = rng.random((length, length)) < 0.1
    contacts = contacts | contacts.T
    valid = np.ones(length, dtype=bool)
    valid[5] = False
    protein = types.SimpleNamespace(contacts=contacts, valid=valid)
    chance = random_ranking_precisions([protein])
    pair_valid = valid[:, None] & valid[None, :]
    for band in BANDS:
        density = contacts[band_mask(length, band) & pair_valid].mean()
        assert chance[f"{band} P@L"] == pytest.approx(density) == chance[f"{band} P@L/5"]
    shuffled = [contact_precisions(rng.random((length, length)), contacts, valid)["long P@L"] for _ in range(400)]
    assert np.mean(shuffled) == pytest.approx(chance["long P@L"], abs=0.01)
