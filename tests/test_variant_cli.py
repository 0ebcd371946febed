"""`esm-jax score-variants`: fair-esm's options, one column per model, Spearman, atomic output, clear refusals."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from esm_jax import ModelConfig, build_model, pretrained
from esm_jax.cli.main import main
from esm_jax.inference.mutations import parse_mutants
from esm_jax.inference.rank_correlation import spearman
from esm_jax.inference.variant_scoring import score_mutants

WILD_TYPE = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVV"
ROWS = [("K2G", "0.5", "x"), ("T3W:A4C", "-1.25", "y"), ("V70C", "", "z"), ("E24D", "2.0", "w")]


def _tiny(path, seed):
    config = ModelConfig(architecture="esm2", num_layers=1, embed_dim=32, attention_heads=2, ffn_embed_dim=128)
    model = build_model(config, seed=seed)
    pretrained.save_fair_esm(model, path)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {str(folder / f"esm2_tiny_{seed}.pt"): _tiny(folder / f"esm2_tiny_{seed}.pt", seed) for seed in (1, 2)}


def _write_csv(path, rows, header=("mutant", "fitness", "note")):
    with open(path, "w", newline="", encoding="utf-8-sig") as handle:  # with a byte-order mark, as BLAT's file
        csv.writer(handle).writerows([header, *rows])
    return path


def _args(models, dms_input, dms_output, *extra):
    return [
        "score-variants",
        "--model-location",
        *models,
        "--sequence",
        WILD_TYPE,
        "--dms-input",
        str(dms_input),
        "--dms-output",
        str(dms_output),
        *extra,
    ]


def test_one_column_per_model_with_input_kept_and_spearman_reported(models, tmp_path, capsys):
    source = _write_csv(tmp_path / "in.csv", ROWS)
    out = tmp_path / "out" / "scored.csv"
    assert (
        main(_args(list(models), source, out, "--scoring-strategy", "masked-marginals", "--score-col", "fitness")) == 0
    )
    with open(out, newline="") as handle:
        written = list(csv.reader(handle))
    assert written[0] == ["mutant", "fitness", "note", *models]
    assert [row[:3] for row in written[1:]] == [list(row) for row in ROWS]
    printed = capsys.readouterr().out
    mutants = parse_mutants([row[0] for row in ROWS], WILD_TYPE)
    for column, (location, model) in enumerate(models.items(), start=3):
        expected = score_mutants(model, WILD_TYPE, mutants, "masked-marginals")
        got = np.array([float(row[column]) for row in written[1:]])
        np.testing.assert_allclose(got, expected, atol=1e-6)
        rho = spearman(got[[0, 1, 3]], [0.5, -1.25, 2.0])  # the row without a fitness value is skipped
        assert f"{location}: scored in" in printed and f"Spearman rho = {rho:.4f} against 'fitness' over 3" in printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["scored.csv"]


@pytest.mark.slow
def test_random_weights_of_a_released_shape(tmp_path, capsys):
    source = _write_csv(tmp_path / "in.csv", ROWS[:2])
    out = tmp_path / "scored.csv"
    assert main(_args(["esm2_t6_8M_UR50D"], source, out, "--random-weights", "--seed", "3")) == 0
    with open(out, newline="") as handle:
        assert list(csv.DictReader(handle))[0]["esm2_t6_8M_UR50D (random weights)"]


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        ([("K2G", "1", ""), ("K4G", "2", "")], (), r"in\.csv: line 3: 'K4G' says K at 4 but the wild type has A"),
        ([("K2G", "1", ""), ("K2", "2", "")], (), r"in\.csv: line 3: 'K2' is not <wild-type letter><position>"),
        ([("K2G", "1", "")], ("--mutation-col", "variant"), r"in\.csv: no column 'variant'; the columns are"),
        ([("K2G", "high", "")], ("--score-col", "fitness"), r"in\.csv: line 2: column 'fitness' holds 'high'"),
        ([("K2G", "1", "")], ("--offset-idx", "2"), r"line 2: 'K2G' says K at 2 but the wild type has M there"),
    ],
)
def test_bad_input_is_refused_before_any_output(models, tmp_path, capsys, rows, extra, message):
    source = _write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "scored.csv"
    assert main(_args(list(models)[:1], source, out, *extra)) == 2
    error = capsys.readouterr().err
    assert error.startswith("esm-jax score-variants: error: ")
    assert re.search(message, error), error
    assert not out.exists()


def test_a_model_named_twice_and_a_missing_file_are_refused(models, tmp_path, capsys):
    (location,) = list(models)[:1]
    assert main(_args([location, location], _write_csv(tmp_path / "in.csv", ROWS), tmp_path / "o.csv")) == 2
    assert "names a model twice" in capsys.readouterr().err
    assert main(_args([location], tmp_path / "absent.csv", tmp_path / "o.csv")) == 2
    assert "absent.csv: no such CSV file" in capsys.readouterr().err
