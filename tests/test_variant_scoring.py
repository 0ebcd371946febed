"""Batched zero-shot scores equal a straightforward one-variant-at-a-time computation, windows included."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from esm_jax import ModelConfig, build_model
from esm_jax.alphabet import Alphabet
from esm_jax.inference.mutations import MutantError, parse_mutants
from esm_jax.inference.variant_scoring import (
    STRATEGIES,
    default_window,
    score_mutants,
    sequence_log_likelihoods,
    window_bounds,
)

ALPHABET = Alphabet()
WILD_TYPE = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVV"
MUTANTS = ["M1A", "K2G:T3W", "V70C", "A4A", "I6L:S13T:E24D", "R26P", "Q22K:R26E", "E24W", "Q66A:V69K", "G28F"]
TOLERANCE = 1e-5  # a few float32 ulps: other batch shapes may round differently; pseudo-ppl sums 2L terms


@pytest.fixture(scope="module")
def esm2():
    config = ModelConfig(architecture="esm2", num_layers=1, embed_dim=32, attention_heads=2, ffn_embed_dim=64)
    return build_model(config, seed=5)


@pytest.fixture(scope="module")
def esm1b_short():
    """An ESM-1b model whose learned positions cover only 40 tokens: 38-residue window, shorter than WILD_TYPE."""
    return build_model(ModelConfig("esm1b", 1, 32, 2, 64, max_positions=40, emb_layer_norm_before=True), seed=6)


def _slice(indices, length, window):
    """The documented rule, written out: centre on the midpoint of the positions, keep inside the sequence."""
    if length <= window:
        return 0, length
    start = (min(indices) + max(indices)) // 2 - window // 2
    start = max(0, min(start, length - window))
    return start, start + window


_CACHE: dict = {}


def _log_probs(model, residues: str, masked=()) -> np.ndarray:
    """(L, V) log-probabilities of one sequence in one unbatched call, BOS/EOS dropped (cached per input)."""
    key = (id(model), residues, tuple(masked))
    if key not in _CACHE:
        tokens = np.array([[ALPHABET.cls_idx, *ALPHABET.encode(residues), ALPHABET.eos_idx]])
        tokens[0, [index + 1 for index in masked]] = ALPHABET.mask_idx
        _CACHE[key] = np.asarray(jax.nn.log_softmax(model(tokens)["logits"][0, 1:-1], axis=-1))
    return _CACHE[key]


def _pll(model, sequence: str, window: int) -> float:
    total = 0.0
    for index in range(len(sequence)):
        start, end = _slice([index], len(sequence), window)
        log_probs = _log_probs(model, sequence[start:end], [index - start])
        total += float(log_probs[index - start, ALPHABET.get_idx(sequence[index])])  # summed in float64
    return total


def _reference(model, wild_type, mutants, strategy, window):
    scores = []
    for mutant in mutants:
        if strategy == "pseudo-ppl":
            scores.append(_pll(model, mutant.apply(wild_type), window) - _pll(model, wild_type, window))
            continue
        start, end = _slice(mutant.indices, len(wild_type), window)
        masked = [index - start for index in mutant.indices] if strategy == "masked-marginals" else []
        log_probs = _log_probs(model, wild_type[start:end], masked)
        scores.append(
            sum(
                float(log_probs[index - start, ALPHABET.get_idx(sub.mutant)])
                - float(log_probs[index - start, ALPHABET.get_idx(sub.wild_type)])
                for index, sub in zip(mutant.indices, mutant.substitutions, strict=True)
            )
        )
    return np.array(scores)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_scores_equal_unbatched_reference(esm2, strategy):
    mutants = parse_mutants(MUTANTS, WILD_TYPE)
    got = score_mutants(esm2, WILD_TYPE, mutants, strategy, toks_per_batch=300)  # 4-row batches, padded rows
    expected = _reference(esm2, WILD_TYPE, mutants, strategy, default_window(esm2))
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
    assert got[MUTANTS.index("A4A")] == 0.0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_long_sequences_use_the_sliding_window_rule(esm1b_short, strategy):
    assert default_window(esm1b_short) == 38 < len(WILD_TYPE)
    mutants = parse_mutants(MUTANTS, WILD_TYPE)
    got = score_mutants(esm1b_short, WILD_TYPE, mutants, strategy, toks_per_batch=512)
    np.testing.assert_allclose(got, _reference(esm1b_short, WILD_TYPE, mutants, strategy, 38), atol=TOLERANCE, rtol=0)


def test_the_window_argument_slides_only_over_longer_sequences(esm2):
    mutants = parse_mutants(MUTANTS, WILD_TYPE)
    whole = score_mutants(esm2, WILD_TYPE, mutants, "masked-marginals", toks_per_batch=300)
    for window in (len(WILD_TYPE), 200):
        exact = score_mutants(esm2, WILD_TYPE, mutants, "masked-marginals", window=window, toks_per_batch=300)
        np.testing.assert_array_equal(exact, whole)
    narrow = score_mutants(esm2, WILD_TYPE, mutants, "masked-marginals", window=40, toks_per_batch=300)
    expected = _reference(esm2, WILD_TYPE, mutants, "masked-marginals", 40)
    np.testing.assert_allclose(narrow, expected, atol=TOLERANCE, rtol=0)
    assert np.abs(narrow - whole).max() > 1e-3  # the narrow window is really used


def test_window_bounds_centre_and_clamp():
    assert window_bounds([5], 10, 20) == (0, 10)
    assert window_bounds([0], 100, 20) == (0, 20)
    assert window_bounds([99], 100, 20) == (80, 100)
    assert window_bounds([50], 100, 20) == (40, 60)
    assert window_bounds([45, 60], 100, 20) == (42, 62)
    with pytest.raises(ValueError, match=r"positions 10\.\.40 span more than the model window of 20"):
        window_bounds([9, 39], 100, 20)


def test_masked_marginals_mask_all_mutated_positions_together(esm2):
    (double,) = parse_mutants(["K2G:T3W"], WILD_TYPE)
    singles = parse_mutants(["K2G", "T3W"], WILD_TYPE)
    joint = score_mutants(esm2, WILD_TYPE, [double], "masked-marginals")[0]
    log_probs = _log_probs(esm2, WILD_TYPE, [1, 2])
    expected = (log_probs[1, ALPHABET.get_idx("G")] - log_probs[1, ALPHABET.get_idx("K")]) + (
        log_probs[2, ALPHABET.get_idx("W")] - log_probs[2, ALPHABET.get_idx("T")]
    )
    assert joint == pytest.approx(expected, abs=TOLERANCE)
    assert joint != pytest.approx(score_mutants(esm2, WILD_TYPE, singles, "masked-marginals").sum(), abs=1e-4)


def test_sequence_log_likelihood_masks_each_residue_and_reads_its_own_letter(esm2):
    designed = [WILD_TYPE, "GSHMAC"]
    got = sequence_log_likelihoods(esm2, designed, toks_per_batch=300)
    np.testing.assert_allclose(got, [_pll(esm2, s, 1022) for s in designed], atol=TOLERANCE, rtol=0)
    # fair-esm's predict.py masks tokens 1..L-2 but reads sequence[i] (the next residue's letter) there
    off_by_one = sum(
        float(_log_probs(esm2, WILD_TYPE, [i - 1])[i - 1, ALPHABET.get_idx(WILD_TYPE[i])])
        for i in range(1, len(WILD_TYPE) - 1)
    )
    assert abs(got[0] - off_by_one) > 1.0


def test_mutants_of_another_wild_type_and_unknown_strategies_are_refused(esm2):
    mutants = parse_mutants(["K2G"], WILD_TYPE)
    with pytest.raises(MutantError, match="was not parsed against this wild type"):
        score_mutants(esm2, "M" + "A" * 69, mutants, "wt-marginals")
    with pytest.raises(ValueError, match="unknown scoring strategy 'mutant-marginals'"):
        score_mutants(esm2, WILD_TYPE, mutants, "mutant-marginals")


def test_a_multi_mutant_wider_than_the_window_is_refused(esm1b_short):
    mutants = parse_mutants(["M1K:V70A"], WILD_TYPE)
    with pytest.raises(ValueError, match=r"positions 1\.\.70 span more than the model window of 38 residues"):
        score_mutants(esm1b_short, WILD_TYPE, mutants, "masked-marginals")
