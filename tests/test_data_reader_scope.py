"""SCOPe ASTRAL reader: the real 40% set parses into sid/class/fold/superfamily/family; bad headers are refused."""

from __future__ import annotations

import gzip
from collections import Counter

import pytest

from data_pipeline.errors import MalformedFileError
from data_pipeline.readers.scope import read_astral_fasta

ASTRAL = "astral-scopedom-seqres-gd-sel-gs-bib-40-2.07.fa.gz"


def test_the_real_astral_set_has_the_documented_counts(shared_data):
    domains = read_astral_fasta(shared_data / "scope_astral40_2.07" / ASTRAL)
    assert len(domains) == 14_323 and sum(len(d.sequence) for d in domains) == 2_611_087
    assert Counter(d.scop_class for d in domains) == {
        "a": 2540,
        "b": 2895,
        "c": 4160,
        "d": 3462,
        "e": 279,
        "f": 272,
        "g": 715,
    }
    assert len({d.fold for d in domains}) == 1232
    assert len({d.superfamily for d in domains}) == 2024
    assert len({d.family for d in domains}) == 4583
    first = domains[0]
    assert (first.sid, first.family, first.superfamily, first.fold, first.region) == (
        "d1dlwa_",
        "a.1.1.1",
        "a.1.1",
        "a.1",
        "A:",
    )
    assert first.sequence.isupper()


def test_rossmann_like_and_propeller_folds_are_flagged_for_exclusion(shared_data):
    domains = read_astral_fasta(shared_data / "scope_astral40_2.07" / ASTRAL)
    excluded = {d.fold for d in domains if d.excluded_from_remote_homology}
    assert excluded <= {
        "c.2",
        "c.3",
        "c.4",
        "c.5",
        "c.27",
        "c.28",
        "c.30",
        "c.31",
        "b.66",
        "b.67",
        "b.68",
        "b.69",
        "b.70",
    }
    assert {"c.2", "b.69"} <= excluded and not any(d.fold == "c.1" and d.excluded_from_remote_homology for d in domains)


def _first_records(shared_data, tmp_path, change) -> str:
    with gzip.open(shared_data / "scope_astral40_2.07" / ASTRAL, "rt") as text:
        lines = text.read().splitlines()[:12]
    path = tmp_path / "astral.fa"
    path.write_text("\n".join(change(lines)) + "\n")
    return path


def test_a_header_without_sccs_is_refused_with_its_record_number(shared_data, tmp_path):
    path = _first_records(shared_data, tmp_path, lambda lines: [lines[0].replace(" a.1.1.1 ", " "), *lines[1:]])
    with pytest.raises(MalformedFileError, match=r"astral\.fa: record 1: header .* is not 'sid sccs"):
        read_astral_fasta(path)


def test_a_non_residue_character_is_refused(shared_data, tmp_path):
    path = _first_records(shared_data, tmp_path, lambda lines: [lines[0], "slf#q" + lines[1][5:], *lines[2:]])
    with pytest.raises(MalformedFileError, match=r"record 1 \(d1dlwa_\): the sequence has '#' at position 4"):
        read_astral_fasta(path)
