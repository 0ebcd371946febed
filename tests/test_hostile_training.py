"""Reruns, changed configs, kills and bad demo inputs never lose a run's results or leave a misleading record.

Training cases use the 2-layer synthetic-data config of ``tests.train_helpers``; the demo cases that train are slow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from esm_jax.cli.main import main
from esm_jax.errors import EsmJaxError
from esm_jax.train import trainer
from esm_jax.train.trainer import train
from tests.train_helpers import REPO, run_python, tiny_cli_overrides, tiny_config

STOP_AT = "ESM_JAX_TEST_SIGTERM_AT_BATCH"
CLI_OVERRIDES = tiny_cli_overrides(total_steps=3)


def self_terminating_batches(data, split: str, state: dict | None = None):
    """Synthetic batches that send this process SIGTERM when the training batch numbered ``$STOP_AT`` is fetched."""
    from tests.synthetic_batches import SyntheticBatches, batches

    class Terminating(SyntheticBatches):
        def __next__(self):
            batch = super().__next__()
            if self.position == int(os.environ[STOP_AT]):
                os.kill(os.getpid(), signal.SIGTERM)
            return batch

    if split != "train":
        return batches(data, split, state)
    return Terminating(data.seed, (state or {}).get("position", 0), None)


def _config(**train):
    return tiny_config(**{"total_steps": 3, "checkpoint_every": 2, **train})


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _train_steps(workdir: Path) -> list[int]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [record["step"] for record in records if record["split"] == "train"]


def _losses(workdir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {record["step"]: record["loss"] for record in records if record["split"] == "train"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A 3-step run with checkpoints at steps 2 and 3, finished."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    train(_config(), workdir)
    return workdir


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


@pytest.fixture
def drawn_steps(monkeypatch) -> list[list[int]]:
    """The training steps of every learning curve the trainer draws."""
    drawn: list[list[int]] = []
    original = trainer.learning_curve_png

    def recording(history, path):
        drawn.append([record["step"] for record in history if record["split"] == "train"])
        return original(history, path)

    monkeypatch.setattr(trainer, "learning_curve_png", recording)
    return drawn


@pytest.mark.parametrize("total_steps", [3, 2], ids=["same-steps", "fewer-steps"])
def test_rerunning_a_finished_run_leaves_every_file_byte_identical(run_copy, capsys, total_steps):
    before = _snapshot(run_copy)
    result = train(_config(total_steps=total_steps), run_copy)
    assert _snapshot(run_copy) == before
    assert "already finished at step 3" in capsys.readouterr().out
    summary = json.loads((run_copy / "summary.json").read_text())
    assert result.step == 3 and not result.stopped_early
    assert result.last_train == summary["train"] and result.last_heldout == summary["heldout"] is not None


def test_rerunning_a_finished_run_from_the_cli_says_so_and_changes_nothing(run_copy, capsys):
    before = _snapshot(run_copy)
    command = ["train", "--config", str(REPO / "configs/pretrain.py:tiny"), "--workdir", str(run_copy)]
    assert main([*command, *CLI_OVERRIDES]) == 0
    assert _snapshot(run_copy) == before
    out = capsys.readouterr().out
    assert "already finished at step 3" in out and "Raise --config.train.total_steps" in out


def test_a_finished_run_given_more_steps_is_extended_and_recorded_once(run_copy, drawn_steps):
    result = train(_config(total_steps=5), run_copy)
    assert result.step == 5 and not result.stopped_early
    assert _train_steps(run_copy) == [1, 2, 3, 4, 5]
    assert drawn_steps == [[1, 2, 3, 4, 5]]
    summary = json.loads((run_copy / "summary.json").read_text())
    assert summary["step"] == 5 and summary["train"]["step"] == 5 and summary["heldout"] is not None
    assert json.loads((run_copy / "config.json").read_text())["train"]["total_steps"] == 5


@pytest.mark.parametrize(
    "field, value", [("num_layers", 3), ("embed_dim", 48), ("attention_heads", 4), ("ffn_embed_dim", 96)]
)
def test_another_model_in_a_run_folder_is_refused_before_anything_is_written(run_copy, field, value):
    from esm_jax.checkpoints.training_run import load_trained_model

    before = _snapshot(run_copy)
    config = _config()
    config.model[field] = value
    with pytest.raises(EsmJaxError, match=f"different model \\({field} .* -> {value}\\)") as error:
        train(config, run_copy)
    assert "\n" not in str(error.value) and "new --workdir" in str(error.value)
    assert _snapshot(run_copy) == before
    assert load_trained_model(run_copy).num_layers == 2


def test_another_model_is_refused_from_the_cli_in_one_line(run_copy, capsys):
    before = _snapshot(run_copy)
    command = ["train", "--config", str(REPO / "configs/pretrain.py:tiny"), "--workdir", str(run_copy)]
    assert main([*command, *CLI_OVERRIDES, "--config.model.embed_dim=64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "embed_dim 32 -> 64" in err and err.startswith("esm-jax train: error:")
    assert _snapshot(run_copy) == before


def test_without_config_json_the_checkpoint_decides_and_nothing_is_written(run_copy):
    (run_copy / "config.json").unlink()
    before = _snapshot(run_copy)
    config = _config()
    config.model.num_layers = 3
    with pytest.raises(EsmJaxError, match="checkpoints/3 belongs to a run of a different model \\(num_layers 2 -> 3"):
        train(config, run_copy)
    assert _snapshot(run_copy) == before


def test_a_damaged_config_json_is_named_and_left_alone(run_copy):
    (run_copy / "config.json").write_text("{not json")
    before = _snapshot(run_copy)
    with pytest.raises(EsmJaxError, match="config.json is not a training config .* restore it or use a new --workdir"):
        train(_config(), run_copy)
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize("torn_line", [False, True], ids=["clean-kill", "kill-mid-write"])
def test_resuming_after_a_kill_records_every_step_once_and_draws_the_whole_run(
    finished_run, run_copy, drawn_steps, torn_line
):
    shutil.rmtree(run_copy / "checkpoints" / "3")  # killed after logging step 3, before its checkpoint
    if torn_line:
        with open(run_copy / "metrics.jsonl", "a") as handle:
            handle.write('{"split": "train", "step": 4, "lo')
    result = train(_config(), run_copy)
    assert result.step == 3
    assert _train_steps(run_copy) == [1, 2, 3]
    assert _losses(run_copy) == _losses(finished_run)
    assert drawn_steps == [[1, 2, 3]]
    summary = json.loads((run_copy / "summary.json").read_text())
    assert (
        summary["train"]["step"] == 3
        and summary["heldout"] == json.loads((finished_run / "summary.json").read_text())["heldout"]
    )


def test_a_run_killed_before_its_first_checkpoint_starts_a_clean_record(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text('{"split": "train", "step": 1, "loss": 9.0}\n')
    train(_config(total_steps=2), workdir)
    assert _train_steps(workdir) == [1, 2]
    assert _losses(workdir)[1] != 9.0


def test_sigterm_stops_at_the_next_step_and_the_rerun_finishes(tmp_path):
    script = (
        "import sys\n"
        "from esm_jax.train.trainer import train\n"
        "from tests.train_helpers import tiny_config\n"
        "config = tiny_config(total_steps=40, log_every=10, checkpoint_every=1000)\n"
        "config.data.factory = sys.argv[2]\n"
        "result = train(config, sys.argv[1])\n"
        "print('RESULT', result.step, result.stopped_early)\n"
    )
    workdir = tmp_path / "run"
    factory = "tests.test_hostile_training:self_terminating_batches"
    stopped = run_python(script, args=[str(workdir), factory], **{STOP_AT: "3"})
    assert "RESULT 3 True" in stopped.stdout
    assert sorted(int(path.name) for path in (workdir / "checkpoints").glob("[0-9]*")) == [3]
    assert _train_steps(workdir) == [3]  # the partial logging interval is flushed at the stop
    assert json.loads((workdir / "summary.json").read_text())["stopped_early"] is True
    finished = run_python(script, args=[str(workdir), "tests.synthetic_batches:batches"])
    assert "RESULT 40 False" in finished.stdout
    assert _train_steps(workdir) == [3, 10, 20, 30, 40]


# The demo: bad inputs are refused before anything is written.


@pytest.fixture
def proteins(write_fasta, tmp_path):
    """A FASTA of ``count`` distinct small proteins (optionally with a header of its own for the first)."""

    def make(count: int, first_header: str | None = None) -> Path:
        rng = np.random.default_rng(count)
        records = [(f"p{i}", "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 30))) for i in range(count)]
        path = tmp_path / "proteins.fasta"
        write_fasta(path, records)
        if first_header is not None:
            lines = path.read_text().splitlines()
            path.write_text("\n".join([f">{first_header}", *lines[1:]]) + "\n")
        return path

    return make


@pytest.mark.parametrize(
    "case, arguments, message",
    [
        ("steps-0", lambda p: ["--steps", "0"], "--steps must be at least 1, got 0"),
        ("steps-negative", lambda p: ["--steps", "-5"], "--steps must be at least 1, got -5"),
        ("num-proteins-0", lambda p: ["--num-proteins", "0"], "--num-proteins must be at least 1"),
        ("empty-header", lambda p: ["--fasta", str(p(30, ""))], "record 1 has an empty header"),
        ("blank-header", lambda p: ["--fasta", str(p(30, "   "))], "record 1 has an empty header"),
        ("3-proteins", lambda p: ["--fasta", str(p(3))], "holds 3 protein(s); the demo needs at least 20"),
        ("same-first-word", lambda p: ["--fasta", str(p(30, "p1 another"))], "records 1 and 2 share the name 'p1'"),
        ("missing-fasta", lambda p: ["--fasta", "/nonexistent/x.fasta"], "no such FASTA file"),
    ],
)
def test_bad_demo_inputs_get_one_line_errors_and_write_nothing(tmp_path, proteins, capsys, case, arguments, message):
    workdir = tmp_path / "demo"
    assert main(["demo", "--workdir", str(workdir), *arguments(proteins)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("esm-jax demo: error:") and err.count("\n") == 0 and message in err, err
    assert "--heldout-fraction" not in err
    assert not workdir.exists()


def test_the_attention_map_is_symmetric_and_apc_corrected():
    from esm_jax.cli.demo import attention_map
    from esm_jax.model import build_model

    model = build_model("esm2_t6_8M_UR50D")
    contacts = attention_map(model, "MKTAYIAKQRQISFVKSHFSRQ")
    assert contacts.shape == (22, 22)
    np.testing.assert_allclose(contacts, contacts.T, atol=1e-6)
    np.testing.assert_allclose(contacts.sum(axis=1), 0.0, atol=1e-5)  # APC leaves every row summing to zero


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, Path]:
    from esm_jax.fasta import bundled_proteome, read_fasta

    folder = tmp_path_factory.mktemp("demo")
    fasta = folder / "proteins.fasta"
    records = read_fasta(bundled_proteome(), strip_stop=True, limit=40)
    fasta.write_text("".join(f">{label}\n{sequence}\n" for label, sequence in records))
    workdir = folder / "demo"
    assert main(["demo", "--fasta", str(fasta), "--workdir", str(workdir), "--steps", "3", "--num-proteins", "2"]) == 0
    return fasta, workdir


@pytest.mark.slow
def test_the_demo_labels_its_map_as_attention_not_a_contact_prediction(demo_run):
    _, workdir = demo_run
    summary = (workdir / "report" / "summary.md").read_text()
    assert "APC-corrected attention" in summary and "not a contact prediction" in summary
    assert "predicted contacts" not in summary and "![APC-corrected attention map](attention_map.png)" in summary
    assert (workdir / "report" / "attention_map.png").stat().st_size > 0
    assert not (workdir / "report" / "contact_map.png").exists()


@pytest.mark.slow
def test_rerunning_the_demo_keeps_the_run_and_rebuilds_the_same_report(demo_run, capsys):
    fasta, workdir = demo_run
    run_before = _snapshot(workdir / "run")
    metrics_before = json.loads((workdir / "report" / "metrics.json").read_text())
    assert main(["demo", "--fasta", str(fasta), "--workdir", str(workdir), "--steps", "3", "--num-proteins", "2"]) == 0
    assert "already finished at step 3" in capsys.readouterr().out
    assert _snapshot(workdir / "run") == run_before
    metrics = json.loads((workdir / "report" / "metrics.json").read_text())
    for key in ("training_steps", "heldout_ece", "target_unigram_ece", "heldout_masked_accuracy"):
        assert metrics[key] == metrics_before[key], key
    curve = (workdir / "report" / "learning_curve.png").read_bytes()
    assert curve == (workdir / "run" / "learning_curve.png").read_bytes()
