"""NetSurfP-2.0 CSV reader: real CB513/TS115/CASP12 and BioNeMo subsets; malformed rows are refused clearly."""

from __future__ import annotations

import pytest

from data_pipeline.errors import MalformedFileError
from data_pipeline.readers.netsurfp import read_netsurfp_csv, ss8_to_ss3


@pytest.mark.parametrize(
    ("name", "proteins", "residues"),
    [
        ("CB513_HHblits.csv", 511, 144_011),
        ("TS115_HHblits.csv", 115, 29_704),
        ("CASP12_HHblits.csv", 20, 6_801),
        ("netsurfp2_subset500_train.csv", 500, 124_830),
        ("netsurfp2_subset100_test.csv", 100, 20_817),
    ],
)
def test_real_files_parse_with_consistent_8_and_3_state_labels(shared_data, name, proteins, residues):
    records = read_netsurfp_csv(shared_data / "ss8_netsurfp2" / name)
    assert len(records) == proteins and sum(len(r.sequence) for r in records) == residues
    assert all(ss8_to_ss3(r.ss8) == r.ss3 and len(r.mask) == len(r.sequence) for r in records)
    assert 0 < sum(r.mask.sum() for r in records) <= residues


def test_the_one_training_sequence_shared_with_cb513_is_found(shared_data):
    cb513 = {r.sequence for r in read_netsurfp_csv(shared_data / "ss8_netsurfp2" / "CB513_HHblits.csv")}
    train = read_netsurfp_csv(shared_data / "ss8_netsurfp2" / "netsurfp2_subset500_train.csv")
    assert sum(r.sequence in cb513 for r in train) == 1


@pytest.fixture
def bionemo_lines(shared_data) -> list[str]:
    return (shared_data / "ss8_netsurfp2" / "netsurfp2_subset100_test.csv").read_text().splitlines()[:4]


def _write(tmp_path, lines):
    path = tmp_path / "broken.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_label_string_of_the_wrong_length_names_the_row(tmp_path, bionemo_lines):
    fields = bionemo_lines[2].split(",")
    fields[3] = fields[3][:-1]
    with pytest.raises(MalformedFileError, match=r"broken\.csv: line 3 \(.*\): per-residue fields differ in length"):
        read_netsurfp_csv(_write(tmp_path, [*bionemo_lines[:2], ",".join(fields)]))


def test_an_unknown_state_letter_is_refused(tmp_path, bionemo_lines):
    fields = bionemo_lines[1].split(",")
    fields[3] = "Q" + fields[3][1:]
    with pytest.raises(MalformedFileError, match="the 8-state string has 'Q' at position 1"):
        read_netsurfp_csv(_write(tmp_path, [bionemo_lines[0], ",".join(fields)]))


def test_an_unknown_header_is_refused(tmp_path, bionemo_lines):
    with pytest.raises(MalformedFileError, match="line 1: unknown header"):
        read_netsurfp_csv(_write(tmp_path, ["name,seq,labels", *bionemo_lines[1:]]))


def test_a_bad_disorder_value_in_the_prottrans_layout_is_refused(tmp_path, shared_data):
    lines = (shared_data / "ss8_netsurfp2" / "CASP12_HHblits.csv").read_text().splitlines()[:2]
    fields = lines[1].split(",")
    fields[3] = fields[3].replace("1.0", "0.5", 1)
    with pytest.raises(MalformedFileError, match="line 2: the disorder mask must be 1.0 or 0.0"):
        read_netsurfp_csv(_write(tmp_path, [lines[0], ",".join(fields)]))


@pytest.mark.parametrize(
    ("name", "scored"), [("CB513_HHblits.csv", 83_427), ("TS115_HHblits.csv", 27_501), ("CASP12_HHblits.csv", 6_004)]
)
def test_test_sets_are_scored_where_resolved_and_inside_cb513_mask(shared_data, name, scored):
    """CB513 defines its own evaluation residues (cb513_mask, 83,991); the mask keeps those that are also resolved."""
    records = read_netsurfp_csv(shared_data / "ss8_netsurfp2" / name)
    assert sum(int(r.mask.sum()) for r in records) == scored


def test_cb513_mask_removes_a_resolved_residue_from_scoring(tmp_path):
    header = "input, dssp3, dssp8, disorder, cb513_mask"
    row = "M K V,C H H,C H H,1.0 1.0 1.0,1.0 0.0 1.0"
    (record,) = read_netsurfp_csv(_write(tmp_path, [header, row]))
    assert record.mask.tolist() == [True, False, True]
    with pytest.raises(MalformedFileError, match="line 2: the cb513_mask mask must be 1.0 or 0.0"):
        read_netsurfp_csv(_write(tmp_path, [header, row.replace("0.0 1.0", "0.0 2.0")]))
