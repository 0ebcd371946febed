"""`esm-jax eval structure-vs-lm` on a tiny training run with three checkpoints, scored on real data subsets."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from esm_jax.errors import CheckpointError
from eval import cli
from eval.structure import structure_vs_lm
from tests.eval_tiny_model import build_heldout_dataset, save_tiny_checkpoint
from tests.train_helpers import tiny_config

SMALL = ["--ss-train", "8", "--ss-test", "4", "--iterations", "20", "--contact-set", "pdb-chains"]
SMALL += ["--contact-proteins", "6", "--folds", "2", "--contact-steps", "5", "--rank", "8"]


@pytest.fixture(scope="module")
def training_run(tmp_path_factory):
    """The tiny trainer config run for 6 steps on synthetic batches, saving steps 2, 4 and 6."""
    from esm_jax.train.trainer import train

    workdir = tmp_path_factory.mktemp("run")
    train(tiny_config(total_steps=6, checkpoint_every=2, keep_checkpoints=3), workdir)
    return workdir


@pytest.fixture(scope="module")
def heldout_dataset(shared_data, tmp_path_factory):
    """120 real UniRef50 representatives, a quarter of the clusters held out, built by the data pipeline."""
    return build_heldout_dataset(shared_data, tmp_path_factory.mktemp("lm_data"), proteins=120, max_length=300)


def test_one_row_per_checkpoint(training_run, heldout_dataset, shared_data, tmp_path, capsys):
    argv = ["structure-vs-lm", "--run", str(training_run), "--dataset", str(heldout_dataset)]
    assert cli.main([*argv, "--data", str(shared_data), "--out", str(tmp_path), *SMALL]) == 0
    results = json.loads((tmp_path / "structure-vs-lm.json").read_text())
    assert [row["step"] for row in results["checkpoints"]] == [2, 4, 6]
    for row in results["checkpoints"]:
        assert math.isfinite(row["ece"]) and 1.0 < row["ece"] < 100.0
        assert 0.0 <= row["ss8_accuracy"] <= 1.0 and 0.0 <= row["contact_long_p_at_l"] <= 1.0
        assert row["masked_tokens"] > 0
    assert len({row["ece"] for row in results["checkpoints"]}) == 3, "each checkpoint's own weights are scored"
    assert results["contacts"]["proteins"] == 6 and results["secondary_structure"]["test_proteins"] == 4
    assert (tmp_path / "structure-vs-lm.png").stat().st_size > 0
    table = (tmp_path / "structure-vs-lm.md").read_text()
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + 3
    assert capsys.readouterr().out.count("structure-vs-lm step ") == 3


def _arguments(checkpoint, steps: list[int] | None = None):
    """The task's options at their defaults, as ``esm-jax eval all`` builds them."""
    common = cli.build_parser().parse_args(["all", "--checkpoint", str(checkpoint)])
    arguments = cli._task_arguments(structure_vs_lm, common)
    arguments.steps = steps
    return arguments


def test_a_single_checkpoint_is_refused_and_skipped_by_all(training_run, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not a training run"):
        structure_vs_lm.run(_arguments(checkpoint))
    assert "not a training run" in cli._skip_reason(structure_vs_lm, _arguments(checkpoint))
    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    shutil.copy(training_run / "config.json", empty / "config.json")
    with pytest.raises(CheckpointError, match=r"needs at least 2; chosen steps \[\], saved \[\]"):
        structure_vs_lm.run(_arguments(empty))
    with pytest.raises(CheckpointError, match=r"needs at least 2; chosen steps \[4\]"):
        cli.main(["structure-vs-lm", "--run", str(training_run), "--steps", "4"])
    with pytest.raises(CheckpointError, match=r"no checkpoint at steps \[5\]"):
        structure_vs_lm.run(_arguments(training_run, steps=[4, 5]))
    assert cli._skip_reason(structure_vs_lm, _arguments(training_run)) is None
