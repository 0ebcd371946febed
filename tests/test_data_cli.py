"""``esm-jax build-data`` (data_pipeline.build.cli): help, a real end-to-end build with preview, clear failures."""

from __future__ import annotations

import pytest

from data_pipeline.build.cli import main
from data_pipeline.layout import DATASET_NAME, REPORT_NAME, dataset_folder


def test_help_explains_the_three_training_sets(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "ur50_d   members sampled evenly across clusters" in text and "--on-bad-record" in text


def test_one_command_builds_the_sample_and_previews_batches(uniref_sample_files, tmp_path, capsys):
    argv = ["--config", "ur50_s", "--uniref50", *uniref_sample_files.uniref50_fastas, "--hosts", "2"]
    assert main([*argv, "--out", str(tmp_path), "--preview", "2"]) == 0
    out = capsys.readouterr().out
    assert "train: 4,525 sequences in 2 shards" in out and "validation: 476 sequences in 2 shards" in out
    assert "batch 2: tokens int32[" in out
    assert (dataset_folder(tmp_path, "ur50_s") / REPORT_NAME).is_file()
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_missing_input_file_is_named(tmp_path, capsys):
    assert main(["--uniref50", str(tmp_path / "absent.fasta"), "--out", str(tmp_path / "out")]) == 2
    assert "absent.fasta (given with --uniref50) does not exist" in capsys.readouterr().err


def test_bad_records_can_be_made_fatal(flawed_corpus, tmp_path, capsys):
    argv = ["--config", "ur100", "--members", *flawed_corpus.member_fastas, "--mapping", flawed_corpus.mapping_tsv]
    assert main([*argv, "--heldout-fraction", "0", "--on-bad-record", "fail", "--out", str(tmp_path)]) == 2
    assert "To fix:" in capsys.readouterr().err


def test_an_unknown_config_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["--config", "ur90", "--out", str(tmp_path)])
    assert stop.value.code == 2


def test_a_member_based_set_without_members_says_which_options_are_missing(uniref_sample_files, tmp_path, capsys):
    argv = ["--config", "ur50_d", "--uniref50", *uniref_sample_files.uniref50_fastas, "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "needs member FASTA files (--members) and the cluster mapping TSV (--mapping)" in capsys.readouterr().err
    assert not (tmp_path / DATASET_NAME).exists()
