"""The Potts model recovers a planted coupling; sequence weights, profiles and the L1 head by hand and vs sklearn."""

from __future__ import annotations

import numpy as np
import pytest

from eval.structure.contacts.l1_logistic import fit_l1_logistic, objective
from eval.structure.msa.features import GAP, encode_msa, profile, sequence_weights
from eval.structure.msa.potts import coupling_scores, fit_potts


def gibbs_sample(fields: np.ndarray, couplings: np.ndarray, count: int, sweeps: int, seed: int) -> np.ndarray:
    """``count`` independent chains of a Potts model after ``sweeps`` Gibbs sweeps."""
    rng = np.random.default_rng(seed)
    length, states = fields.shape
    x = rng.integers(0, states, size=(count, length))
    for _ in range(sweeps):
        for i in range(length):
            local = fields[i][None] + sum(couplings[i, :, j, x[:, j]] for j in range(length) if j != i)
            probs = np.exp(local - local.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            x[:, i] = (probs.cumsum(axis=1) > rng.random((count, 1))).argmax(axis=1)
    return x


def planted_logistic_data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, truth): 2000 rows of 12 normal features whose labels follow a logistic model of the first three."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, 12))
    truth = np.zeros(12)
    truth[:3] = [2.0, -1.5, 1.0]
    y = rng.random(2000) < 1 / (1 + np.exp(-(x @ truth - 0.5)))
    return x, y, truth


def test_pseudo_likelihood_recovers_a_planted_coupling():
    length, states = 7, 3
    rng = np.random.default_rng(1)
    fields = rng.normal(scale=0.3, size=(length, states))
    couplings = np.zeros((length, states, length, states))
    planted = 1.2 * (np.eye(states) - 1.0 / states)  # positions 1 and 4 prefer equal states
    couplings[1, :, 4, :] = planted
    couplings[4, :, 1, :] = planted.T
    msa = gibbs_sample(fields, couplings, count=2000, sweeps=20, seed=2)
    model = fit_potts(msa, np.ones(len(msa)), states=states, iterations=100)
    scores = coupling_scores(model, gap_state=None)
    upper = np.triu(scores, 1)
    assert np.unravel_index(np.argmax(upper), upper.shape) == (1, 4)
    recovered = model.couplings[1, :, 4, :]
    recovered = recovered - recovered.mean(0) - recovered.mean(1)[:, None] + recovered.mean()  # zero-sum gauge
    assert np.corrcoef(recovered.ravel(), planted.ravel())[0, 1] > 0.95
    assert np.allclose(model.couplings, np.transpose(model.couplings, (2, 3, 0, 1)))
    assert np.all(model.couplings[2, :, 2, :] == 0)


def test_padding_an_alignment_does_not_change_its_fit():
    rng = np.random.default_rng(0)
    msa = rng.integers(0, 4, size=(40, 9))
    weights = rng.uniform(0.5, 1.0, size=40)
    model = fit_potts(msa, weights, states=4, iterations=30)
    assert model.couplings.shape == (9, 4, 9, 4) and model.fields.shape == (9, 4)
    # a row of weight zero changes nothing
    with_extra = fit_potts(np.vstack([msa, msa[:1]]), np.append(weights, 0.0), states=4, iterations=30)
    assert np.allclose(model.couplings, with_extra.couplings, atol=1e-4)


def test_sequence_weights_and_profile_by_hand():
    msa = encode_msa(["AAAA", "AAAA", "AAAC", "CCCC"])
    # identity with AAAC is 3/4 < 0.8, so only the two identical rows are neighbours
    assert sequence_weights(msa).tolist() == [0.5, 0.5, 1.0, 1.0]
    freq = profile(msa, np.array([0.5, 0.5, 1.0, 1.0]), pseudocount=0.0)
    a, c = 0, "ARNDCQEGHILKMFPSTWYV".index("C")
    assert freq[0, a] == pytest.approx(2 / 3) and freq[0, c] == pytest.approx(1 / 3)
    assert freq[3, a] == pytest.approx(1 / 3) and freq[3, c] == pytest.approx(2 / 3)
    assert np.allclose(freq.sum(1), 1.0)
    assert encode_msa(["A-X"]).tolist() == [[0, GAP, GAP]]
    with pytest.raises(ValueError, match="row 2 has 2 columns"):
        encode_msa(["AAA", "AA"])


def test_l1_logistic_regression_matches_scikit_learn():
    linear_model = pytest.importorskip("sklearn.linear_model")
    x, y, _ = planted_logistic_data(seed=0)
    weights, intercept = fit_l1_logistic(x, y, c=0.05, iterations=4000)
    reference = linear_model.LogisticRegression(l1_ratio=1.0, C=0.05, solver="saga", tol=1e-10, max_iter=100000)
    reference.fit(x, y)
    assert np.abs(weights - reference.coef_[0]).max() < 1e-3
    assert intercept == pytest.approx(reference.intercept_[0], abs=1e-3)
    assert (
        objective(x, y, weights, intercept, 0.05)
        <= objective(x, y, reference.coef_[0], reference.intercept_[0], 0.05) + 1e-3
    )
    assert np.count_nonzero(weights[3:]) < 9  # the penalty zeroes uninformative features


def test_l1_logistic_regression_reaches_the_optimum_on_tiny_offset_features():
    """Attention-map-like columns (values ~1e-3 around an offset) beside the intercept: the fit still moves off zero
    and its objective is no worse than scikit-learn's."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    x, y, truth = planted_logistic_data(seed=1)
    tiny = 0.01 + 0.002 * x
    weights, intercept = fit_l1_logistic(tiny, y, c=5.0, iterations=4000)
    reference = linear_model.LogisticRegression(l1_ratio=1.0, C=5.0, solver="saga", tol=1e-12, max_iter=200000)
    reference.fit(tiny, y)
    ours = objective(tiny, y, weights, intercept, 5.0)
    theirs = objective(tiny, y, reference.coef_[0], reference.intercept_[0], 5.0)
    assert ours <= theirs + 1e-3 * abs(theirs)
    assert np.all(weights[:3] != 0) and np.all(np.sign(weights[:3]) == np.sign(truth[:3]))
