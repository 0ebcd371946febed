"""ECE, the masked-LM scorer and the n-gram baselines give the values worked out by hand."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from esm_jax import Alphabet, build_model
from eval.language_model import ngram
from eval.language_model.heldout_data import original_tokens
from eval.language_model.masked_lm import MaskedLmScorer, ece
from eval.language_model.task import ece_intervals
from tests.eval_tiny_model import TINY

ALPHABET = Alphabet()


def ids(text: str) -> np.ndarray:
    return np.array([ALPHABET.get_idx(c) for c in text])


def test_ece_is_exp_of_mean_nll():
    assert ece(3 * math.log(25), 3) == pytest.approx(25.0)
    assert ece(0.0, 7) == 1.0
    assert ece(math.log(2) + math.log(8), 2) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="at least one"):
        ece(1.0, 0)


def test_scorer_sums_nll_of_selected_positions_only():
    model = build_model(TINY, seed=3)
    tokens = np.array([[0, 5, 6, 32, 8, 2, 1, 1], [0, 9, 10, 11, 32, 12, 13, 2]], np.int32)
    targets = np.full_like(tokens, ALPHABET.padding_idx)
    loss_mask = np.zeros(tokens.shape, np.float32)
    for row, column, original in ((0, 3, 7), (0, 1, 5), (1, 4, 14)):
        targets[row, column], loss_mask[row, column] = original, 1.0
    total, count = MaskedLmScorer(model).batch_nll(tokens, targets, loss_mask)
    logits = np.asarray(jax.device_get(model(tokens)["logits"]), np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -(log_probs[0, 3, 7] + log_probs[0, 1, 5] + log_probs[1, 4, 14])
    assert count == 3
    assert total == pytest.approx(expected, rel=1e-5)
    rows, counts = MaskedLmScorer(model).row_nll(tokens, targets, loss_mask)
    np.testing.assert_array_equal(counts, [2, 1])
    np.testing.assert_allclose(rows, [-(log_probs[0, 3, 7] + log_probs[0, 1, 5]), -log_probs[1, 4, 14]], rtol=1e-5)
    assert rows.sum() == pytest.approx(total, rel=1e-6)


def test_original_tokens_restores_selected_positions():
    batch = {
        "tokens": np.array([[0, 32, 6, 20, 2]]),
        "targets": np.array([[1, 5, 1, 7, 1]]),
        "loss_mask": np.array([[0, 1, 0, 1, 0]], np.float32),
    }
    np.testing.assert_array_equal(original_tokens(batch), [[0, 5, 6, 7, 2]])


def test_unigram_probabilities_by_hand():
    # corpus "AAG" + "GA": A 3 times, G twice, 5 residues; V = 25 letters
    model = ngram.NgramModel.fit([ids("AAG"), ids("GA")], order=1)
    log_p = model.log_probs(np.zeros((3, 0)), ngram.symbols(ids("AGL")), alpha=1.0)
    np.testing.assert_allclose(np.exp(log_p), [4 / 30, 3 / 30, 1 / 30])
    assert model.residues == 5


def test_bigram_probabilities_by_hand_with_begin_context():
    # bigrams of "AAG" and "GA" with begin symbol ^: ^A, AA, AG, ^G, GA
    model = ngram.NgramModel.fit([ids("AAG"), ids("GA")], order=2)
    a, g, lys = ngram.symbols(ids("AGK"))
    contexts = np.array([[a], [a], [ngram.BEGIN], [g], [g]])
    targets = np.array([g, lys, a, a, g])
    alpha = 0.5
    expected = [
        (1 + alpha) / (2 + 25 * alpha),  # P(G | A): AA, AG follow A
        (0 + alpha) / (2 + 25 * alpha),  # P(K | A)
        (1 + alpha) / (2 + 25 * alpha),  # P(A | ^): ^A, ^G
        (1 + alpha) / (1 + 25 * alpha),  # P(A | G): GA
        (0 + alpha) / (1 + 25 * alpha),  # P(G | G)
    ]
    np.testing.assert_allclose(np.exp(model.log_probs(contexts, targets, alpha)), expected)


def test_ngram_distribution_sums_to_one_for_seen_and_unseen_contexts():
    model = ngram.NgramModel.fit([ids("MKTAYIAKQRQISFVKSHFSRQ"), ids("MKV")], order=3)
    letters = np.arange(ngram.VOCAB)
    for context in ([ngram.BEGIN, 11 - 4], [0, 1], [24, 24]):
        contexts = np.tile(context, (ngram.VOCAB, 1))
        assert np.exp(model.log_probs(contexts, letters, 1.0)).sum() == pytest.approx(1.0)


def test_left_contexts_read_true_residues_and_begin_symbols():
    tokens = np.array([[0] + list(ids("MKV")) + [2, 1]])
    contexts = ngram.left_contexts(tokens, np.array([0, 0, 0]), np.array([1, 2, 3]), 2)
    m, k = ngram.symbols(ids("MK"))
    np.testing.assert_array_equal(contexts, [[ngram.BEGIN, ngram.BEGIN], [ngram.BEGIN, m], [m, k]])


def test_ngram_rejects_non_letters_and_bad_settings():
    with pytest.raises(ValueError, match="not an amino-acid letter"):
        ngram.symbols(np.array([5, ALPHABET.mask_idx]))
    with pytest.raises(ValueError, match="order"):
        ngram.NgramModel.fit([ids("AA")], order=0)
    with pytest.raises(ValueError, match="no training residues"):
        ngram.NgramModel.fit([], order=1)
    model = ngram.NgramModel.fit([ids("AA")], order=1)
    with pytest.raises(ValueError, match="alpha > 0"):
        model.log_probs(np.zeros((1, 0)), np.zeros(1, np.int64), alpha=0.0)


def test_ece_intervals_pool_sequences_and_pair_the_two_models():
    rng = np.random.default_rng(0)
    masked = rng.integers(1, 40, size=60)
    ngram_nll = masked * np.log(12.0) * rng.uniform(0.8, 1.2, size=60)
    model_nll = ngram_nll - 0.2 * masked  # lower on every sequence: ECE ratio exp(-0.2) throughout
    intervals = ece_intervals(model_nll, ngram_nll, masked)
    model_ece, ngram_ece = ece(model_nll.sum(), masked.sum()), ece(ngram_nll.sum(), masked.sum())
    assert intervals["model"][0] < model_ece < intervals["model"][1]
    assert intervals["ngram"][0] < ngram_ece < intervals["ngram"][1]
    difference = intervals["difference"]
    assert difference["difference"] == pytest.approx(model_ece - ngram_ece)
    assert difference["ci95"][0] < difference["difference"] < difference["ci95"][1] < 0
    assert difference["excludes_zero"]
    same = ece_intervals(ngram_nll, ngram_nll, masked)
    assert same["difference"] == {"difference": 0.0, "ci95": [0.0, 0.0], "excludes_zero": False}
