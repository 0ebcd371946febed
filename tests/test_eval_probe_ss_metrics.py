"""Q8/Q3 accuracy by hand, the 8-to-3 reduction, and the softmax probe against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from eval.common.linear_probes import SoftmaxProbe, softmax_loss
from eval.common.probe_training import fit_lbfgs
from eval.structure.secondary.data import load_ss8_sets
from eval.structure.secondary.deep import majority_class
from eval.structure.secondary.features import padded_rows, residue_labels
from eval.structure.secondary.metrics import (
    SS3_STATES,
    SS8_STATES,
    accuracy,
    encode_states,
    majority_accuracy,
    ss8_to_ss3,
)


def test_q8_and_q3_by_hand():
    labels = encode_states("HHEECCGT", SS8_STATES)
    predicted = encode_states("HGEECTGT", SS8_STATES)
    # 8 states: positions 1 (G vs H) and 5 (T vs C) wrong -> 6/8
    assert accuracy(predicted, labels) == 0.75
    # 3 states: G -> H and T -> C, so every residue agrees
    assert accuracy(ss8_to_ss3(predicted), ss8_to_ss3(labels)) == 1.0
    mask = np.array([1, 1, 0, 0, 0, 0, 0, 0], bool)
    assert accuracy(predicted, labels, mask) == 0.5


def test_the_reduction_follows_netsurfp():
    reduced = "".join(SS3_STATES[i] for i in ss8_to_ss3(encode_states(SS8_STATES, SS8_STATES)))
    assert reduced == "HHHEECCC"


def test_bad_labels_and_shapes_are_refused():
    with pytest.raises(ValueError, match="'X' at position 3"):
        encode_states("HEX", SS3_STATES, "record 7")
    with pytest.raises(ValueError, match="differ"):
        accuracy(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        accuracy(np.zeros(3), np.zeros(3), np.zeros(3, bool))


def test_labels_longer_or_shorter_than_the_features_are_refused():
    from data_pipeline.readers.netsurfp import SecondaryStructureRecord

    record = SecondaryStructureRecord("p1", "ACDE", "HHCC", "HHCC", np.ones(4, bool))
    assert residue_labels([record], [4]).ss8.tolist() == [0, 0, 7, 7]
    with pytest.raises(ValueError, match="p1: 5 feature rows, 4 residues"):
        residue_labels([record], [5])
    short = SecondaryStructureRecord("p2", "ACDE", "HHC", "HHC", np.ones(4, bool))
    with pytest.raises(ValueError, match="p2"):
        residue_labels([short], [4])
    # a model window cutting the sequence leaves the cut residues out and counts them
    assert residue_labels([record], [3]).beyond_window == 1


def test_padding_rows_are_masked_out():
    x = np.ones((5, 2), np.float32)
    padded, real = padded_rows(x, multiple=4)
    assert padded.shape == (8, 2) and real.tolist() == [True] * 5 + [False] * 3


def test_softmax_probe_matches_scikit_learn_multinomial_regression():
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(5, 3)) + rng.normal(scale=0.5, size=(600, 3)), axis=1).astype(np.int32)
    c = 0.5
    # scikit-learn minimises Σ CE + ‖W‖²/(2C); ours the mean CE + l2/2 ‖W‖², so l2 = 1 / (C N)
    reference = linear_model.LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x, y)
    probe = SoftmaxProbe(5, 3, rngs=nnx.Rngs(0))
    padded_x, real = padded_rows(x, 256)
    padded_y, _ = padded_rows(y, 256)
    fit_lbfgs(
        probe,
        softmax_loss,
        {"x": padded_x, "y": padded_y, "mask": real, "l2": np.float32(1.0 / (c * len(y)))},
        iterations=500,
        tolerance=1e-9,
    )
    ours = np.asarray(nnx.softmax(probe(x), axis=-1))
    assert np.abs(ours - reference.predict_proba(x)).max() < 2e-3
    assert (ours.argmax(1) == reference.predict(x)).mean() > 0.99


def test_majority_class_is_the_most_frequent_training_state_scored_on_the_test_residues():
    train, train_mask = np.array([0, 2, 2, 1, 2, -1]), np.array([1, 1, 1, 1, 0, 1], bool)
    labels, mask = np.array([2, 2, 0, 1]), np.array([1, 1, 1, 0], bool)
    assert majority_accuracy(train, train_mask, labels, mask) == pytest.approx(2 / 3)


def test_cb513_majority_class_chance_level(shared_data):
    """Always predicting the training set's most frequent 8-state (coil) scores 0.306 Q8 on CB513."""
    sets = load_ss8_sets(shared_data, tests=("CB513",))
    assert majority_class(sets.train, sets.tests["CB513"])["Q8"] == pytest.approx(0.306, abs=5e-4)
