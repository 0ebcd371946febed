"""Hostile inputs through the real ``esm-jax`` command line: one stderr line naming the problem, exit status 2.

Every case runs :func:`esm_jax.cli.main.main` on a prepared folder and checks that the files already in it are left
byte for byte as they were and that no traceback is shown. Also here: ``--debug``, umask-respecting output files,
progress lines in logs, and the random-weights column label.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import os
import re
from pathlib import Path

import numpy as np
import pytest

from esm_jax import progress
from esm_jax.cli.main import main
from esm_jax.files import write_text_atomically
from esm_jax.progress import progress_bar
from tests.eval_tiny_model import save_tiny_checkpoint

PROTEIN = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVV"
GOOD_FASTA = f">p1 first\n{PROTEIN}\n>p2\nMKVL\n"
CSV_TEXT = "mutant,fitness\nK2G,0.5\nT3W,1.5\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model"))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _prepare(folder: Path, checkpoint: Path) -> dict[str, str]:
    """Inputs every case may name: {name} in a case's argv is replaced by the path."""
    (folder / "out").mkdir()
    (folder / "out" / "keep.txt").write_text("left alone\n")
    (folder / "good.fasta").write_text(GOOD_FASTA)
    (folder / "good.csv").write_text(CSV_TEXT)
    return {"ckpt": str(checkpoint), "dir": str(folder), "out": str(folder / "out")}


def _write(folder: Path, name: str, content: str | bytes) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


def _gzip_cut() -> bytes:
    whole = gzip.compress(GOOD_FASTA.encode() * 50)
    return whole[: len(whole) // 2]


EXTRACT = ["extract", "{ckpt}", "{dir}/good.fasta", "{out}", "--include", "mean"]
SCORE = ["score-variants", "--model-location", "{ckpt}", "--sequence", PROTEIN, "--dms-input", "{dir}/good.csv"]
SCORE_OUT = [*SCORE, "--dms-output", "{out}/scored.csv"]
TRAIN = ["train", "--config", "configs/pretrain.py:tiny", "--workdir", "{out}/run"]

# (id, files to write first {name: content}, argv, pattern the one stderr line must hold, exit status)
CASES = [
    # extract: inputs
    ("extract-missing-fasta", {}, [*EXTRACT[:2], "{dir}/absent.fasta", *EXTRACT[3:]], r"absent\.fasta: no such FASTA"),
    ("extract-no-header", {"a.fasta": "MKV\n>p\nMK\n"}, [*EXTRACT[:2], "{dir}/a.fasta", *EXTRACT[3:]],
     r"a\.fasta: line 1 comes before the first '>' header"),
    ("extract-empty-fasta", {"a.fasta": ""}, [*EXTRACT[:2], "{dir}/a.fasta", *EXTRACT[3:]], r"no FASTA records found"),
    ("extract-latin1-fasta", {"a.fasta": b">caf\xe9\nMKV\n"}, [*EXTRACT[:2], "{dir}/a.fasta", *EXTRACT[3:]],
     r"a\.fasta: not a readable FASTA file"),
    ("extract-bzip2-named-fasta", {"a.fasta": bz2.compress(GOOD_FASTA.encode())},
     [*EXTRACT[:2], "{dir}/a.fasta", *EXTRACT[3:]], r"a\.fasta: bzip2-compressed; decompress it"),
    ("extract-truncated-gzip", {"a.fasta.gz": _gzip_cut()}, [*EXTRACT[:2], "{dir}/a.fasta.gz", *EXTRACT[3:]],
     r"a\.fasta\.gz: not a readable FASTA file .*check the file is complete"),
    ("extract-bad-residue", {"a.fasta": ">p\nMK@V\n"}, [*EXTRACT[:2], "{dir}/a.fasta", *EXTRACT[3:]],
     r"sequence 'p': character '@' at position 3"),
    ("extract-empty-record", {"a.fasta": ">p\n>q\nMK\n"}, [*EXTRACT[:2], "{dir}/a.fasta", *EXTRACT[3:]],
     r"record 1 \('p'\) has an empty sequence"),
    ("extract-duplicate-label", {"a.fasta": ">p\nMK\n>p\nMV\n"}, [*EXTRACT[:2], "{dir}/a.fasta", *EXTRACT[3:]],
     r"repeats the label 'p'"),
    ("extract-fasta-is-folder", {"a.fasta/x": "x"}, [*EXTRACT[:2], "{dir}/a.fasta", *EXTRACT[3:]],
     r"a\.fasta: no such FASTA file"),
    # extract: options
    ("extract-negative-truncation", {}, [*EXTRACT, "--truncation-seq-length", "-5"],
     r"--truncation-seq-length -5: give a positive number"),
    ("extract-zero-tokens", {}, [*EXTRACT, "--toks-per-batch", "0"], r"--toks-per-batch 0: give a positive number"),
    ("extract-zero-shard", {}, [*EXTRACT, "--residues-per-shard", "-1"], r"--residues-per-shard -1"),
    ("extract-bad-include", {}, [*EXTRACT[:4], "--include", "everything"], r"argument --include: invalid choice"),
    ("extract-no-include", {}, EXTRACT[:4], r"the following arguments are required: --include"),
    ("extract-bad-long", {}, [*EXTRACT, "--long", "wrap"], r"argument --long: invalid choice: 'wrap'"),
    ("extract-bad-format", {}, [*EXTRACT, "--format", "hdf5"], r"argument --format: invalid choice"),
    ("extract-not-a-number", {}, [*EXTRACT, "--toks-per-batch", "lots"], r"invalid int value: 'lots'"),
    ("extract-unknown-option", {}, [*EXTRACT, "--fast"], r"unrecognized arguments: --fast"),
    ("extract-overrides", {}, [*EXTRACT, "--config.train.seed=1"], r"takes no --config\.\* overrides"),
    ("extract-bad-layer", {}, [*EXTRACT, "--repr-layers", "9"], r"9"),
    ("extract-bad-process-id", {}, [*EXTRACT, "--num-processes", "2", "--process-id", "5"],
     r"--process-id must be in 0\.\.1"),
    ("extract-bad-mesh", {}, [*EXTRACT, "--mesh", "data=banana"], r"--mesh data=banana"),
    ("extract-beam-npz", {}, [*EXTRACT, "--runner", "beam"], r"--runner beam writes --format shards"),
    ("extract-beam-sliding", {}, [*EXTRACT, "--runner", "beam", "--format", "shards", "--long", "sliding"],
     r"--long sliding runs with --runner jax only"),
    # extract: models
    ("extract-missing-model", {}, ["extract", "{dir}/absent.pt", *EXTRACT[2:]], r"absent\.pt"),
    ("extract-garbage-model", {"bad.pt": b"not a pickle at all"}, ["extract", "{dir}/bad.pt", *EXTRACT[2:]],
     r"bad\.pt"),
    ("extract-unknown-name", {}, ["extract", "esm9_t99", *EXTRACT[2:], "--random-weights"], r"esm9_t99"),
    # extract: output folder
    ("extract-output-is-file", {"out/file.txt": "x"}, [*EXTRACT[:3], "{out}/file.txt", *EXTRACT[4:]],
     r"file\.txt: a file, not a folder"),
    ("extract-other-settings", {"out/extract.json": '{"model": "other"}'}, EXTRACT,
     r"holds an extraction made with other settings"),
    ("extract-bad-manifest", {"out/extract.json": "{not json"}, EXTRACT, r"extract\.json: unreadable"),
    ("extract-folder-where-file-belongs", {"out/p1.npz/inside.txt": "x"}, EXTRACT,
     r"p1\.npz: .*a folder is where a file belongs"),
    # score-variants
    ("score-missing-csv", {}, [*SCORE[:-1], "{dir}/absent.csv", "--dms-output", "{out}/s.csv"],
     r"absent\.csv: no such"),
    ("score-latin1-csv", {"a.csv": b"mutant,note\nK2G,caf\xe9\n"}, [*SCORE[:-1], "{dir}/a.csv", "--dms-output",
     "{out}/s.csv"], r"a\.csv: not UTF-8 text .*save it as UTF-8"),
    ("score-empty-csv", {"a.csv": ""}, [*SCORE[:-1], "{dir}/a.csv", "--dms-output", "{out}/s.csv"], r"empty file"),
    ("score-long-row", {"a.csv": "mutant\nK2G,1\n"}, [*SCORE[:-1], "{dir}/a.csv", "--dms-output", "{out}/s.csv"],
     r"line 2: 2 fields but the header names 1"),
    ("score-no-column", {}, [*SCORE_OUT, "--mutation-col", "variant"], r"no column 'variant'"),
    ("score-not-a-number", {"a.csv": "mutant,fitness\nK2G,high\n"},
     [*SCORE[:-1], "{dir}/a.csv", "--dms-output", "{out}/s.csv", "--score-col", "fitness"], r"holds 'high', not a"),
    ("score-bad-mutant", {"a.csv": "mutant\nK2\n"}, [*SCORE[:-1], "{dir}/a.csv", "--dms-output", "{out}/s.csv"],
     r"'K2' is not <wild-type letter><position>"),
    ("score-wrong-wild-type", {"a.csv": "mutant\nA2G\n"}, [*SCORE[:-1], "{dir}/a.csv", "--dms-output", "{out}/s.csv"],
     r"'A2G' says A at 2 but the wild type has K"),
    ("score-past-the-end", {"a.csv": "mutant\nK900G\n"}, [*SCORE[:-1], "{dir}/a.csv", "--dms-output", "{out}/s.csv"],
     r"K900G"),
    ("score-model-twice", {}, [*SCORE_OUT, "--model-location", "{ckpt}", "{ckpt}"], r"names a model twice"),
    ("score-bad-strategy", {}, [*SCORE_OUT, "--scoring-strategy", "vibes"],
     r"--scoring_strategy: invalid choice: 'vibes'"),
    ("score-output-is-folder", {"out/scored.csv/inside.txt": "x"}, SCORE_OUT,
     r"scored\.csv: .*a folder is where a file belongs"),
    ("score-output-under-file", {"out/file.txt": "x"}, [*SCORE, "--dms-output", "{out}/file.txt/s.csv"],
     r"file\.txt"),
    ("score-no-sequence", {}, [a for a in SCORE_OUT if a not in ("--sequence", PROTEIN)],
     r"required: --sequence"),
    # convert
    ("convert-missing-source", {}, ["convert", "{dir}/absent.pt", "{out}/model"], r"absent\.pt"),
    ("convert-garbage-source", {"bad.pt": b"\x80\x02garbage"}, ["convert", "{dir}/bad.pt", "{out}/model"], r"bad\.pt"),
    ("convert-no-destination", {}, ["convert", "{ckpt}"], r"required: DESTINATION"),
    # train: config and overrides
    ("train-misspelled-section", {}, [*TRAIN, "--config.trian.seed=1"], r"--config\.trian\.seed: .*no section 'trian'"),
    ("train-misspelled-field", {}, [*TRAIN, "--config.train.total_step=5"], r"no field 'total_step'"),
    ("train-bad-list", {}, [*TRAIN, "--config.data.buckets=[64,"], r"--config\.data\.buckets expects a list"),
    ("train-bad-int", {}, [*TRAIN, "--config.train.total_steps=ten"], r"expects a int, got 'ten'"),
    ("train-value-as-section", {}, [*TRAIN, "--config.train.seed.x=1"], r"train\.seed is a value, not a section"),
    ("train-evaluator-not-dict", {}, [*TRAIN, "--config.evals.extra=50"], r"expects a dict"),
    ("train-override-without-value", {}, [*TRAIN, "--config.train.seed"], r"--config\.train\.seed needs a value"),
    ("train-missing-config", {}, ["train", "--config", "{dir}/absent.py", "--workdir", "{out}/run"],
     r"config file .*absent\.py does not exist"),
    ("train-config-without-get-config", {"c.py": "x = 1\n"}, ["train", "--config", "{dir}/c.py", "--workdir",
     "{out}/run"], r"defines no get_config"),
    ("train-no-workdir", {}, TRAIN[:3], r"required: --workdir"),
    # eval
    ("eval-unknown-option", {}, ["eval", "language-model", "--checkpoint", "{ckpt}", "--bogus", "1"],
     r"esm-jax eval.*unrecognized arguments: --bogus 1"),
    ("eval-missing-data", {}, ["eval", "secondary-structure-linear", "--checkpoint", "{ckpt}", "--data",
     "{dir}/nodata", "--out", "{out}/eval"], r"dataset ss8_netsurfp2 is not in .*nodata"),
    ("eval-unknown-task", {}, ["eval", "telepathy", "--checkpoint", "{ckpt}"], r"invalid choice: 'telepathy'"),
    # build-data (its own data errors exit with 1, as its main documents)
    ("build-data-unknown-config", {}, ["build-data", "--config", "ur90", "--out", "{out}"], r"invalid choice: 'ur90'"),
    ("build-data-unknown-option", {}, ["build-data", "--out", "{out}", "--frobnicate"],
     r"unrecognized arguments: --frobnicate"),
    ("build-data-missing-input", {}, ["build-data", "--uniref50", "{dir}/absent.fasta", "--out", "{out}"],
     r"absent\.fasta \(given with --uniref50\) does not exist"),
    # plan and the command itself
    ("plan-nothing", {}, ["plan"], r"one of the arguments --config --inference is required"),
    ("plan-inference-no-topology", {}, ["plan", "--inference", "esm2_t6_8M_UR50D"], r"give --topology"),
    ("plan-misspelled-field", {}, ["plan", "--config", "configs/pretrain.py:tiny", "--config.model.layers=3"],
     r"no field 'layers'"),
    ("no-command", {}, [], r"required: COMMAND"),
    ("unknown-command", {}, ["embed"], r"invalid choice: 'embed'"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_hostile_input_is_one_line_and_changes_nothing(case, checkpoint, tmp_path, capsys):
    _, files, argv, pattern, *status = case
    paths = _prepare(tmp_path, checkpoint)
    for name, content in files.items():
        _write(tmp_path, name, content)
    before = _files(tmp_path)
    code = main([argument.format(**paths) for argument in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == (status[0] if status else 2), err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("esm-jax") and ": error: " in lines[0], err
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    after = _files(tmp_path)
    assert {name: after.get(name) for name in before} == before


def test_enough_cases():
    assert len(CASES) >= 50


def test_debug_shows_the_traceback_then_the_line(checkpoint, tmp_path, capsys, monkeypatch):
    argv = ["extract", str(checkpoint), str(tmp_path / "absent.fasta"), str(tmp_path / "out"), "--include", "mean"]
    assert main(["--debug", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("esm-jax extract: error: ")
    monkeypatch.setenv("ESM_JAX_DEBUG", "1")
    assert main(argv) == 2
    assert "Traceback" in capsys.readouterr().err


def test_an_unexpected_error_is_one_line_pointing_at_debug(monkeypatch, tmp_path, capsys):
    from esm_jax.cli import extract as extract_command

    def broken(_args):
        raise RuntimeError("something\nspread over\nthree lines")

    monkeypatch.setattr(extract_command, "run", broken)
    assert main(["extract", "m", "f", str(tmp_path), "--include", "mean"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "esm-jax extract: error: RuntimeError: something spread over three lines (esm-jax --debug shows where)"
    )


def test_help_still_exits_zero(capsys):
    assert main(["extract", "--help"]) == 0
    assert "--long {truncate,sliding}" in capsys.readouterr().out


def test_a_gzip_file_named_fasta_is_read_by_its_content(checkpoint, tmp_path, capsys):
    (tmp_path / "zipped.fasta").write_bytes(gzip.compress(GOOD_FASTA.encode()))
    argv = ["extract", str(checkpoint), str(tmp_path / "zipped.fasta"), str(tmp_path / "out"), "--include", "mean"]
    assert main(argv) == 0
    assert (tmp_path / "out" / "p1.npz").is_file() and (tmp_path / "out" / "p2.npz").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line(checkpoint, tmp_path, capsys):
    (tmp_path / "good.fasta").write_text(GOOD_FASTA)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        code = main(["extract", str(checkpoint), str(tmp_path / "good.fasta"), str(out), "--include", "mean"])
    finally:
        out.chmod(0o700)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "choose a place you may write to" in line


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_respect_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = write_text_atomically(tmp_path / "new.txt", "x")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "kept.txt"
    path.write_text("old")
    path.chmod(0o640)
    write_text_atomically(path, "new")
    assert path.stat().st_mode & 0o777 == 0o640 and path.read_text() == "new"


def test_progress_bars_print_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    with progress_bar(total=3, desc="quick") as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""  # shorter than the logging interval: no lines
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    with progress_bar(total=3, desc="work") as bar:
        for _ in range(3):
            bar.update()
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err and err.endswith("\n")
    lines = err.splitlines()
    assert lines[0].startswith("work:   0%") and lines[-1].startswith("work: 100%") and len(lines) == len(set(lines))


def test_random_weights_are_named_in_the_score_column(tmp_path, capsys):
    (tmp_path / "in.csv").write_text(CSV_TEXT)
    argv = ["score-variants", "--model-location", "esm2_t6_8M_UR50D", "--random-weights", "--sequence", PROTEIN]
    argv += ["--dms-input", str(tmp_path / "in.csv"), "--dms-output", str(tmp_path / "out.csv")]
    assert main(argv) == 0
    with open(tmp_path / "out.csv", newline="") as handle:
        assert next(csv.reader(handle)) == ["mutant", "fitness", "esm2_t6_8M_UR50D (random weights)"]


def test_long_proteins_are_counted_in_one_warning(checkpoint, tmp_path, capsys):
    fasta = tmp_path / "long.fasta"
    fasta.write_text(f">short\nMKV\n>long1 x\n{'A' * 30}\n>long2\n{'G' * 25}\n")
    argv = ["extract", str(checkpoint), str(fasta), str(tmp_path / "out"), "--include", "mean"]
    assert main([*argv, "--truncation-seq-length", "20"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "esm-jax extract: warning: 2 of 3 proteins are longer than 20 residues (longest: 'long1', 30); only their "
        "first 20 are used; --long sliding covers them whole"
    ]
    assert np.load(tmp_path / "out" / "long1.npz")["mean_representations/2"].shape == (32,)
