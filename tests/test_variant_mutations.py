"""Mutant strings: fair-esm's --offset-idx numbering, multi-mutants, and clear refusals of bad strings."""

from __future__ import annotations

import pytest

from data_pipeline.readers import dms
from esm_jax.errors import EsmJaxError
from esm_jax.inference.mutations import MutantError, Substitution, parse_mutant, parse_mutants

WILD_TYPE = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVV"


def test_single_and_multi_mutants_are_split_in_written_order():
    assert parse_mutant("K2G", WILD_TYPE) == (Substitution("K", 2, "G"),)
    assert parse_mutant("V70A:M1W", WILD_TYPE) == (Substitution("V", 70, "A"), Substitution("M", 1, "W"))
    (mutant,) = parse_mutants([" V70A : M1W "], WILD_TYPE)
    assert mutant.indices == (69, 0)
    assert mutant.apply(WILD_TYPE) == "W" + WILD_TYPE[1:69] + "A"


def test_offset_is_the_number_of_the_first_residue_as_in_fair_esm():
    fragment = WILD_TYPE[23:]  # fair-esm's BLAT example: --sequence from residue 24, --offset-idx 24
    (shifted,) = parse_mutants(["E24K"], fragment, offset=24)
    (full,) = parse_mutants(["E24K"], WILD_TYPE)
    assert shifted.substitutions == full.substitutions
    assert shifted.indices == (0,) and full.indices == (23,)
    assert shifted.apply(fragment) == full.apply(WILD_TYPE)[23:]
    (zero_based,) = parse_mutants(["K1G"], WILD_TYPE, offset=0)  # fair-esm's default offset of 0
    assert zero_based.indices == (1,)


def test_synonymous_substitutions_are_kept():
    (mutant,) = parse_mutants(["M1M"], WILD_TYPE)
    assert mutant.apply(WILD_TYPE) == WILD_TYPE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A4", r"'A4' is not <wild-type letter><position><mutant letter>, e.g. A42G"),
        ("4G", r"'4G' is not <wild-type letter>"),
        ("a4g", r"'a4g' is not"),
        ("A-4G", r"'A-4G' is not"),
        ("A4G;K2A", r"'A4G;K2A' is not"),
        ("", r"empty mutant string"),
        ("A4G:", r"'' is not"),
        ("K4G", r"'K4G' says K at 4 but the wild type has A there \(residue numbering starts at 1"),
        ("A0G", r"position 0 of 'A0G' is outside the wild type \(1\.\.70\)"),
        ("V71A", r"position 71 of 'V71A' is outside the wild type \(1\.\.70\)"),
        ("A4B", r"'A4B' mutates to 'B', not one of the 20 standard amino acids"),
        ("A4X", r"'A4X' mutates to 'X'"),
        ("A4G:A4C", r"position 4 is mutated twice in 'A4G:A4C'"),
    ],
)
def test_bad_mutant_strings_are_refused_naming_row_part_and_expectation(text, message):
    with pytest.raises(MutantError, match=r"^assay\.csv: line 7: " + message):
        parse_mutants(["K2G", text], WILD_TYPE, where=["assay.csv: line 6", "assay.csv: line 7"])


def test_default_locations_count_mutants_from_one():
    with pytest.raises(MutantError, match=r"^mutant 2: 'K4G' says K at 4"):
        parse_mutants(["K2G", "K4G"], WILD_TYPE)
    with pytest.raises(ValueError, match="where has 1 entries for 2 mutants"):
        parse_mutants(["K2G", "A4G"], WILD_TYPE, where=["only one"])


def test_mutant_errors_are_esm_jax_value_errors():
    assert issubclass(MutantError, EsmJaxError) and issubclass(MutantError, ValueError)


def test_the_dms_reader_uses_this_parser():
    assert dms.Substitution is Substitution
    with pytest.raises(MutantError, match="says K at 4"):
        dms.parse_mutant("K4G", WILD_TYPE)
    variant = dms.Variant("E24K", parse_mutant("E24K", WILD_TYPE[23:], offset=24), 0.5)
    assert variant.apply(WILD_TYPE[23:], first_position=24) == "KERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVV"
