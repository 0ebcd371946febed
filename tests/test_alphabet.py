"""The alphabet and batch converter tokenise exactly as fair-esm's, and explain bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest

from esm_jax.alphabet import Alphabet
from esm_jax.errors import InvalidSequenceError

esm = pytest.importorskip("esm")

REFERENCE = esm.Alphabet.from_architecture("ESM-1b")


def test_token_table_is_fair_esms():
    ours = Alphabet()
    assert ours.all_toks == REFERENCE.all_toks
    assert len(ours) == 33
    for attribute in ("cls_idx", "padding_idx", "eos_idx", "unk_idx", "mask_idx", "prepend_bos", "append_eos"):
        assert getattr(ours, attribute) == getattr(REFERENCE, attribute), attribute


def _random_text(rng: random.Random) -> str:
    pieces = list("LAGVSERTIDPKQNFYMHWCXBUZO.-") * 3 + ["<mask>", "<cls>", "<eos>", "<unk>", "<pad>", " ", "\n", "\t"]
    hazards = ["a", "j", "<", ">", "<mas", "1", "*", "é", "<Mask>"]
    text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
    if rng.random() < 0.3:
        position = rng.randint(0, len(text))
        text = text[:position] + rng.choice(hazards) + text[position:]
    return text


def test_encoding_agrees_with_fair_esm_on_random_strings():
    rng = random.Random(0)
    ours = Alphabet()
    for _ in range(3000):
        text = _random_text(rng)
        try:
            expected = REFERENCE.encode(text)
        except KeyError:
            with pytest.raises(InvalidSequenceError):
                ours.encode(text)
        else:
            assert ours.encode(text) == expected, text


def test_batches_match_fair_esm_including_truncation():
    batch = [("a", "MKTAYIAKQR"), ("b", "MK<mask>A"), ("c", "M")]
    for truncation in (None, 3, 1022):
        _, _, expected = REFERENCE.get_batch_converter(truncation)(batch)
        labels, strs, tokens = Alphabet().get_batch_converter(truncation)(batch)
        assert labels == ["a", "b", "c"] and strs == ["MKTAYIAKQR", "MK<mask>A", "M"]
        assert tokens.dtype == np.int32
        np.testing.assert_array_equal(tokens, expected.numpy())


def test_a_bad_character_names_label_character_and_position():
    with pytest.raises(InvalidSequenceError) as caught:
        Alphabet().get_batch_converter()([("ok", "MKT"), ("P12345 kinase", "MKTJAY")])
    error = caught.value
    assert (error.label, error.character, error.position) == ("P12345 kinase", "J", 4)
    assert "'P12345 kinase'" in str(error) and "position 4" in str(error) and "'X'" in str(error)


def test_lower_case_is_refused_unless_asked_to_upper_case():
    with pytest.raises(InvalidSequenceError, match="upper_case=True"):
        Alphabet().encode("MKta", label="s")
    assert Alphabet().encode("mkTA<mask>", upper_case=True) == Alphabet().encode("MKTA<mask>")
    _, _, tokens = Alphabet().get_batch_converter(upper_case=True)([("s", "gsh")])
    assert Alphabet().get_tok(int(tokens[0, 1])) == "G"


def test_an_unknown_special_token_is_refused():
    with pytest.raises(InvalidSequenceError, match="Special tokens must be one of"):
        Alphabet().encode("MK<MASK>A", label="s")


def test_an_empty_batch_is_refused():
    with pytest.raises(ValueError, match="empty"):
        Alphabet().get_batch_converter()([])
