"""Gibbs sampling from the MLM: reproducible per key, fixed positions kept, draws follow softmax(logits / T)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from esm_jax import ModelConfig, build_model
from esm_jax.alphabet import STANDARD_AMINO_ACIDS, Alphabet
from esm_jax.inference.generation import gibbs_sample

ALPHABET = Alphabet()
TEMPLATE = "MKTA<mask><mask>IAKQRQ<mask>SFVKSH"


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig("esm2", 1, 32, 2, 64), seed=9)


def test_the_same_key_gives_the_same_sequences_and_another_key_others(model):
    first = gibbs_sample(model, TEMPLATE, jax.random.key(0), num_samples=6, num_sweeps=3)
    assert first == gibbs_sample(model, TEMPLATE, jax.random.key(0), num_samples=6, num_sweeps=3)
    assert first != gibbs_sample(model, TEMPLATE, jax.random.key(1), num_samples=6, num_sweeps=3)
    assert len(set(first)) > 1  # chains are independent


def test_only_designable_positions_change_and_only_to_standard_amino_acids(model):
    for sequence in gibbs_sample(model, TEMPLATE, jax.random.key(2), num_samples=6, num_sweeps=3):
        assert len(sequence) == 19
        assert sequence[:4] == "MKTA" and sequence[6:12] == "IAKQRQ" and sequence[13:] == "SFVKSH"
        assert all(sequence[i] in STANDARD_AMINO_ACIDS for i in (4, 5, 12))
    free = gibbs_sample(model, "MKTAYIAKQ", jax.random.key(3), design_positions=[0, 8], num_samples=8)
    assert all(s[1:8] == "KTAYIAK" for s in free)


def test_zero_temperature_fills_left_to_right_with_the_most_likely_letter(model):
    (greedy,) = gibbs_sample(model, TEMPLATE, jax.random.key(4), temperature=0, order="sequential")
    tokens = np.array([[ALPHABET.cls_idx, *ALPHABET.encode(TEMPLATE), ALPHABET.eos_idx]])
    allowed = [ALPHABET.get_idx(letter) for letter in STANDARD_AMINO_ACIDS]
    for position in (5, 6, 13):  # token indices of the three masks, visited in order
        logits = np.asarray(model(tokens)["logits"][0, position])
        tokens[0, position] = allowed[int(np.argmax(logits[allowed]))]
    assert greedy == "".join(ALPHABET.get_tok(int(t)) for t in tokens[0, 1:-1])


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_draws_at_one_position_follow_the_tempered_model_distribution(model, temperature):
    template = "MKTAYIAKQR<mask>ISFVKSH"
    draws = gibbs_sample(model, template, jax.random.key(5), num_samples=4000, temperature=temperature)
    counts = np.array([sum(s[10] == letter for s in draws) for letter in STANDARD_AMINO_ACIDS])
    tokens = np.array([[ALPHABET.cls_idx, *ALPHABET.encode(template), ALPHABET.eos_idx]])
    logits = np.asarray(model(tokens)["logits"][0, 11], dtype=np.float64)
    logits = logits[[ALPHABET.get_idx(letter) for letter in STANDARD_AMINO_ACIDS]] / temperature
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    spread = np.sqrt(4000 * expected * (1 - expected))
    assert np.all(np.abs(counts - 4000 * expected) < 5 * spread + 1)
    assert counts.sum() == 4000


def test_bad_options_are_refused(model):
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="order must be one of"):
        gibbs_sample(model, TEMPLATE, key, order="backwards")
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        gibbs_sample(model, TEMPLATE, key, temperature=-1)
    with pytest.raises(ValueError, match=r"<mask> at residue indices \[4, 5, 12\] outside design_positions"):
        gibbs_sample(model, TEMPLATE, key, design_positions=[0])
    with pytest.raises(ValueError, match=r"design_positions must be residue indices in 0\.\.18"):
        gibbs_sample(model, TEMPLATE, key, design_positions=[4, 5, 12, 19])
