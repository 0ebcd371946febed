"""`esm-jax eval structure-vs-lm` on a tiny training run with three checkpoints, scored on real data subsets."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from configs import laptop, pretrain, structure_emergence
from esm_jax.errors import CheckpointError, EsmJaxError
from eval import cli
from eval.common.task import Backbone
from eval.structure.structure_vs_lm import TREND_POINTS
from eval.tasks import get_task
from tests.eval_tiny_model import assert_summarised, build_heldout_dataset, save_tiny_checkpoint
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
    assert_summarised("structure-vs-lm", results, tmp_path)
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


def _run(checkpoint, out, steps: str | None = None):
    """The task run as ``esm-jax eval structure-vs-lm --checkpoint CHECKPOINT`` runs it (with no data folder)."""
    task = get_task("structure-vs-lm")
    return task.run(Backbone(str(checkpoint)), out / "no_data", out, task.options(steps=steps))


def _skip_reason(checkpoint) -> str | None:
    """Why ``esm-jax eval all --checkpoint CHECKPOINT`` skips the task (None: it runs)."""
    task = get_task("structure-vs-lm")
    return task.why_skipped(Backbone(str(checkpoint)), task.options())


def test_a_single_checkpoint_is_refused_and_skipped_by_all(training_run, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not a training run"):
        _run(checkpoint, tmp_path)
    assert "not a training run" in _skip_reason(checkpoint)
    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    shutil.copy(training_run / "config.json", empty / "config.json")
    with pytest.raises(CheckpointError, match=r"needs at least 2; chosen steps \[\], saved \[\]"):
        _run(empty, tmp_path)
    with pytest.raises(CheckpointError, match=r"needs at least 2; chosen steps \[4\]"):
        cli.main(["structure-vs-lm", "--run", str(training_run), "--steps", "4"])
    with pytest.raises(CheckpointError, match=r"no checkpoint at steps \[5\]"):
        _run(training_run, tmp_path, steps="4,5")
    with pytest.raises(EsmJaxError, match=r"--steps: '4,x': expected comma-separated step numbers"):
        _run(training_run, tmp_path, steps="4,x")
    assert _skip_reason(training_run) is None


def test_random_weights_are_refused(tmp_path):
    task = get_task("structure-vs-lm")
    backbone = Backbone(str(_logged_run(tmp_path / "run")), random_weights=True)
    assert "--random-weights does not apply" in task.why_skipped(backbone, task.options())


def _logged_run(folder):
    """A run folder without checkpoints whose metrics.jsonl holds the held-out ECE and probe records of steps 2-6."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"evals": {"structure-vs-lm": {"every": 2, "ss_train": 8}}}))
    records = [{"split": "train", "step": 2, "ece": 20.0}]
    for step, ece in ((2, 18.0), (4, 15.0), (6, 12.0)):
        records.append({"split": "heldout", "step": step, "ece": ece, "targets": 500})
    for step, ss8 in ((2, 0.2), (4, 0.3), (6, 0.1), (6, 0.4)):  # step 6 logged twice: the last record counts
        records.append({"split": "structure-vs-lm", "step": step, "ss8_accuracy": ss8, "contact_long_p_at_l": ss8 / 2})
    records.append({"split": "structure-vs-lm", "step": 8, "ss8_accuracy": 0.5, "contact_long_p_at_l": 0.3})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return folder


def test_logged_metrics_are_reported_without_loading_checkpoints(tmp_path, capsys):
    run = _logged_run(tmp_path / "run")
    out = tmp_path / "out"
    assert _skip_reason(run) is None
    result = _run(run, out)  # no checkpoint and no data folder: only the log can answer
    assert result.metrics == {"step": 6, "ece": 12.0, "ss8_accuracy": 0.4, "contact_long_p_at_l": 0.2}
    results = json.loads((out / "structure-vs-lm.json").read_text())
    assert [(row["step"], row["ece"], row["ss8_accuracy"]) for row in results["checkpoints"]] == [
        (2, 18.0, 0.2),
        (4, 15.0, 0.3),
        (6, 12.0, 0.4),
    ]
    assert results["evaluator_options"] == {"structure-vs-lm": {"every": 2, "ss_train": 8}}
    assert "read from the run's metrics.jsonl" in (out / "structure-vs-lm.md").read_text()
    # Fig. 6's line: SS8 rises by 0.1 for every 3 points of ECE lost, exactly
    trend = results["trend"]["ss8_accuracy"]
    assert trend["slope"] == pytest.approx(-1 / 30) and trend["r"] == pytest.approx(-1.0) and trend["points"] == 3
    assert "slope per unit of ECE" in (out / "structure-vs-lm.md").read_text()
    assert "fewer than 6 checkpoints the fit is shown but not a finding" in (out / "structure-vs-lm.md").read_text()
    assert (out / "structure-vs-lm.png").stat().st_size > 0
    assert "structure-vs-lm step " not in capsys.readouterr().out
    assert _run(run, out, steps="2,6").metrics["ece"] == 12.0
    assert [row["step"] for row in json.loads((out / "structure-vs-lm.json").read_text())["checkpoints"]] == [2, 6]


def test_steps_the_log_lacks_are_evaluated_from_checkpoints(tmp_path):
    run = _logged_run(tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"no checkpoint at steps \[2, 8\]; saved steps: \[\]"):
        _run(run, tmp_path / "out", steps="2,8")


@pytest.mark.parametrize("module", [structure_emergence, laptop], ids=["structure_emergence", "laptop"])
def test_emergence_config_logs_six_or_more_evenly_spaced_points_spanning_the_run(module):
    """configs/structure_emergence.py and laptop.py: held-out ECE and the probes logged together at ≥ 6 steps."""
    config = module.get_config()
    every, total = config.evals.structure_vs_lm.every, config.train.total_steps
    assert config.evals.heldout.every == every == config.train.checkpoint_every
    assert total % every == 0 and total // every >= TREND_POINTS
    assert config.train.keep_checkpoints >= total // every


def test_laptop_run_is_the_esm2_8m_shape_on_the_tiny_runs_data_in_float32():
    config, tiny = laptop.get_config(), pretrain.get_config("tiny")
    shape = {key: config.model[key] for key in ("architecture", "num_layers", "embed_dim", "attention_heads")}
    assert shape == {"architecture": "esm2", "num_layers": 6, "embed_dim": 320, "attention_heads": 20}
    assert config.model.compute_dtype == "float32" and config.data.to_dict() == tiny.data.to_dict()
    assert 0 < config.optimizer.warmup_steps < config.train.total_steps
