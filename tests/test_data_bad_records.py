"""Bad input records: each case is counted and reported with file and record, skipped or fatal by option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_pipeline.build.bad_records import Policy
from data_pipeline.build.dataset import build_dataset
from data_pipeline.errors import BadRecordError, DataPipelineError
from data_pipeline.input.shard_reader import read_split
from data_pipeline.layout import DATASET_NAME, REPORT_NAME, BuildOptions, CorpusFiles


def _report(result) -> dict:
    return json.loads((result.data_dir / REPORT_NAME).read_text())


def test_skip_policy_reports_every_member_flaw_with_file_and_record(flawed_corpus, tmp_path):
    result = build_dataset("ur100", flawed_corpus, tmp_path / "out", BuildOptions(heldout_fraction=0.0))
    report = _report(result)
    assert report["counts"] == {
        "duplicate_id": 1,
        "empty_sequence": 1,
        "invalid_character": 1,
        "mapping_entry_without_sequence": 1,
        "member_in_several_clusters": 1,
        "member_without_cluster": 1,
    }
    where = {(r["reason"], Path(r["path"]).name, r["record"]) for r in report["records"]}
    assert ("invalid_character", "members.fasta", 28) in where
    assert ("empty_sequence", "members.fasta", 27) in where
    assert ("duplicate_id", "members.fasta", 29) in where
    assert ("member_without_cluster", "members.fasta", 30) in where
    assert ("mapping_entry_without_sequence", "mapping.tsv", 2) in where
    assert ("member_in_several_clusters", "mapping.tsv", 3) in where
    bad_char = next(r for r in report["records"] if r["reason"] == "invalid_character")
    assert "'J' at residue 11" in bad_char["detail"]
    assert len(read_split(result.data_dir, "train")) == 26


def test_skip_policy_reports_a_duplicate_representative(flawed_corpus, tmp_path):
    result = build_dataset("ur50_s", flawed_corpus, tmp_path / "out", BuildOptions(heldout_fraction=0.0))
    assert _report(result)["counts"] == {"duplicate_id": 1}
    assert len(read_split(result.data_dir, "train")) == 8


@pytest.mark.parametrize("config", ["ur50_s", "ur50_d", "ur100"])
def test_fail_policy_stops_at_the_first_bad_record_and_names_it(flawed_corpus, tmp_path, config):
    options = BuildOptions(heldout_fraction=0.0, on_bad_record=Policy.FAIL)
    with pytest.raises(BadRecordError, match=r"\.(fasta|tsv), (record|line) \d+ \(.*To fix:"):
        build_dataset(config, flawed_corpus, tmp_path / "out", options)
    assert not (tmp_path / "out" / DATASET_NAME / config).exists()


def test_a_failed_rebuild_leaves_the_existing_dataset_intact(flawed_corpus, tmp_path):
    first = build_dataset("ur100", flawed_corpus, tmp_path / "out", BuildOptions(heldout_fraction=0.0))
    before = sorted(p.name for p in first.data_dir.iterdir())
    options = BuildOptions(heldout_fraction=0.0, on_bad_record=Policy.FAIL)
    with pytest.raises(BadRecordError):
        build_dataset("ur100", flawed_corpus, tmp_path / "out", options, overwrite=True)
    assert sorted(p.name for p in first.data_dir.iterdir()) == before
    assert len(read_split(first.data_dir, "train")) == 26


def test_lower_case_is_refused_unless_asked_for(write_fasta, tmp_path):
    lower = write_fasta(tmp_path / "lower.fasta", [("UniRef50_L1", "mkvlaag"), ("UniRef50_U1", "MKVLAAG")])
    files = CorpusFiles(uniref50_fastas=(lower,))
    result = build_dataset("ur50_s", files, tmp_path / "a", BuildOptions(heldout_fraction=0.0, on_bad_record="skip"))
    assert "--upper-case" in _report(result)["records"][0]["detail"]
    assert [e["id"] for e in read_split(result.data_dir, "train")] == ["UniRef50_U1"]
    options = BuildOptions(heldout_fraction=0.0, upper_case=True)
    accepted = build_dataset("ur50_s", files, tmp_path / "b", options)
    assert sorted(e["sequence"] for e in read_split(accepted.data_dir, "train")) == ["MKVLAAG", "MKVLAAG"]


def test_a_split_left_without_valid_records_is_a_clear_error(write_fasta, tmp_path):
    files = CorpusFiles(uniref50_fastas=(write_fasta(tmp_path / "bad.fasta", [("UniRef50_B1", "MK*")]),))
    with pytest.raises(DataPipelineError, match="no valid records.*1 bad records skipped"):
        build_dataset("ur50_s", files, tmp_path / "out", BuildOptions(heldout_fraction=0.0))


def test_a_malformed_mapping_line_is_a_clear_error(flawed_corpus, tmp_path):
    broken = tmp_path / "broken.tsv"
    broken.write_text("UR50_cluster_name\tmapped_id\nUniRef50_X only-one-column\n")
    files = CorpusFiles(member_fastas=flawed_corpus.member_fastas, mapping_tsv=str(broken))
    with pytest.raises(ValueError, match=r"broken\.tsv: line 2: expected 'cluster<TAB>member"):
        build_dataset("ur100", files, tmp_path / "out")
