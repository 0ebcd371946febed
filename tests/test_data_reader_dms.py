"""DMS CSV reader: the three real assays validate against their wild types; multi-mutants and bad rows."""

from __future__ import annotations

import pytest

from data_pipeline.errors import MalformedFileError
from data_pipeline.readers.dms import parse_mutant, read_dms_csv
from data_pipeline.readers.labeled_fasta import read_labeled_fasta


@pytest.fixture(scope="module")
def wild_types(shared_data) -> dict[str, str]:
    return {
        r.id: r.body for r in read_labeled_fasta(shared_data / "dms_deepsequence_subset" / "wild_type_sequences.fasta")
    }


@pytest.mark.parametrize(
    ("relative", "protein", "column", "rows"),
    [
        ("dms_deepsequence_subset/DLG4_RAT_Ranganathan2012.csv", "DLG4_RAT", "CRIPT", 1660),
        ("dms_deepsequence_subset/PABP_YEAST_Fields2013-singles.csv", "PABP_YEAST", "linear", 1188),
        ("esm_examples/BLAT_ECOLX_Ranganathan2015.csv", "BLAT_ECOLX", "2500", 4996),
    ],
)
def test_real_assays_match_their_wild_type_at_every_row(shared_data, wild_types, relative, protein, column, rows):
    variants = read_dms_csv(shared_data / relative, wild_types[protein], column)
    assert len(variants) == rows
    for variant in variants[:50]:
        (sub,) = variant.substitutions
        mutated = variant.apply(wild_types[protein])
        assert mutated[sub.position - 1] == sub.mutant and len(mutated) == len(wild_types[protein])


def test_the_wild_type_can_start_at_another_residue_number(wild_types):
    wild_type = wild_types["BLAT_ECOLX"]
    shifted = wild_type[23:]
    assert parse_mutant("H24C", shifted, first_position=24) == parse_mutant("H24C", wild_type)


def test_multi_mutants_are_split_and_each_part_checked(wild_types):
    wild_type = wild_types["DLG4_RAT"]
    subs = parse_mutant(f"{wild_type[310]}311A:{wild_type[319]}320W", wild_type)
    assert [(s.position, s.mutant) for s in subs] == [(311, "A"), (320, "W")]
    with pytest.raises(ValueError, match="position 311 is mutated twice"):
        parse_mutant(f"{wild_type[310]}311A:{wild_type[310]}311C", wild_type)
    with pytest.raises(ValueError, match="outside the wild type"):
        parse_mutant("A9999G", wild_type)
    with pytest.raises(ValueError, match="not one of the 20 standard amino acids"):
        parse_mutant(f"{wild_type[310]}311B", wild_type)


def _csv(tmp_path, text):
    path = tmp_path / "assay.csv"
    path.write_text(text)
    return path


def test_a_wrong_wild_type_letter_names_the_line_and_the_fix(tmp_path, wild_types):
    wild_type = wild_types["DLG4_RAT"]
    wrong = "W" if wild_type[310] != "W" else "A"
    path = _csv(tmp_path, f"mutant,CRIPT\n{wild_type[310]}311A,0.1\n{wrong}311A:{wild_type[319]}320W,0.2\n")
    with pytest.raises(
        MalformedFileError, match=rf"assay\.csv: line 3: mutant: '{wrong}311A' says {wrong} at 311.*numbering"
    ):
        read_dms_csv(path, wild_type, "CRIPT")


def test_missing_scores_and_columns_are_refused(tmp_path, wild_types):
    wild_type = wild_types["DLG4_RAT"]
    path = _csv(tmp_path, f"mutant,CRIPT\n{wild_type[310]}311A,\n")
    with pytest.raises(MalformedFileError, match="line 2 .*'CRIPT' is '', not a number"):
        read_dms_csv(path, wild_type, "CRIPT")
    with pytest.raises(MalformedFileError, match="header: no column 'Tm2F'"):
        read_dms_csv(path, wild_type, "Tm2F")
