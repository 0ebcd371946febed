"""FASTA-with-labels reader and FLIP's secondary-structure split on the real files; malformed files refused."""

from __future__ import annotations

import gzip
from collections import Counter

import pytest

from data_pipeline.errors import MalformedFileError
from data_pipeline.readers.labeled_fasta import read_flip_secondary_structure, read_labeled_fasta


@pytest.fixture(scope="module")
def flip_files(shared_data):
    folder = shared_data / "ss3_flip_netsurfp2"
    return folder / "sequences.fasta.gz", folder / "sampled.fasta.gz", folder / "mask.fasta.gz"


def test_flip_split_joins_the_three_real_files(flip_files):
    records = read_flip_secondary_structure(*flip_files)
    assert Counter((r.split, r.validation) for r in records) == {
        ("train", False): 9712,
        ("train", True): 1080,
        ("test", False): 364,
    }
    assert sum(len(r.sequence) for r in records) == 2_845_094
    assert Counter("".join(r.ss3 for r in records)) == {"C": 1_211_931, "H": 1_030_200, "E": 602_963}


def test_header_labels_are_read_as_key_value_pairs(shared_data):
    records = read_labeled_fasta(shared_data / "dms_deepsequence_subset" / "wild_type_sequences.fasta")
    lengths = {r.id: (int(r.labels["length"]), len(r.body)) for r in records}
    assert lengths == {"BLAT_ECOLX": (286, 286), "DLG4_RAT": (724, 724), "PABP_YEAST": (577, 577)}


def _rewrite(source, target, change):
    with gzip.open(source, "rt") as text:
        lines = text.read().splitlines()[:6]
    target.write_text("\n".join(change(lines)) + "\n")
    return target


def test_labels_shorter_than_the_sequence_name_the_record(flip_files, tmp_path):
    sequences, labels, mask = (
        _rewrite(path, tmp_path / f"{i}.fasta", lambda lines: lines) for i, path in enumerate(flip_files)
    )
    _rewrite(flip_files[1], labels, lambda lines: [*lines[:3], lines[3][:-2], *lines[4:]])
    with pytest.raises(MalformedFileError, match=r"1\.fasta: record 2 \(.*\): per-residue fields differ"):
        read_flip_secondary_structure(sequences, labels, mask)


def test_a_header_word_that_is_not_key_value_is_refused(flip_files, tmp_path):
    broken = _rewrite(flip_files[1], tmp_path / "labels.fasta", lambda lines: [lines[0] + " stray", *lines[1:]])
    with pytest.raises(MalformedFileError, match="record 1 .*header word 'stray' is not KEY=VALUE"):
        read_labeled_fasta(broken)


def test_an_unknown_split_name_is_refused(flip_files, tmp_path):
    sequences, labels, mask = (
        _rewrite(path, tmp_path / f"{i}.fasta", lambda lines: lines) for i, path in enumerate(flip_files)
    )
    _rewrite(flip_files[1], labels, lambda lines: [lines[0].replace("SET=train", "SET=dev"), *lines[1:]])
    with pytest.raises(MalformedFileError, match="SET=dev"):
        read_flip_secondary_structure(sequences, labels, mask)
