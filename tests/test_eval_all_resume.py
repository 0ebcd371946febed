"""``esm-jax eval all --resume`` keeps the tasks an earlier run of the same model finished and runs the rest."""

from __future__ import annotations

import json

import pytest

import eval.cli as eval_cli
from esm_jax.errors import EsmJaxError
from eval.common.report import write_results
from eval.common.task import Backbone, Task, TaskOptions
from tests.eval_tiny_model import save_tiny_checkpoint


@pytest.fixture
def two_tasks(monkeypatch):
    """Tasks ``first`` and ``second`` that record each run and write results as a real task does."""
    ran = []

    def make(name):
        def run(backbone, data, out, options):
            ran.append(name)
            write_results(out, name, backbone.report_fields(), [{"metric": 1.0}], title=name)
            return "ran"

        return Task(name=name, description=name, options=TaskOptions, run=run)

    tasks = {name: make(name) for name in ("first", "second")}
    monkeypatch.setattr(eval_cli, "TASK_MODULES", dict.fromkeys(tasks, "unused"))
    monkeypatch.setattr(eval_cli, "get_task", tasks.__getitem__)
    return ran


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny fair-esm checkpoint, outside the results folder."""
    return str(save_tiny_checkpoint(tmp_path / "model"))


def _all(out, checkpoint, *flags):
    return eval_cli.main(["all", "--checkpoint", checkpoint, "--random-weights", "--out", str(out), *flags])


def _fields(checkpoint, random_weights=True, seed=0):
    return Backbone(checkpoint, random_weights=random_weights, seed=seed).report_fields()


def test_resume_runs_only_the_tasks_without_results_of_the_same_model(tmp_path, checkpoint, two_tasks, capsys):
    write_results(tmp_path, "first", _fields(checkpoint), [{"m": 1}], title="first")
    assert _all(tmp_path, checkpoint, "--resume") == 0
    assert two_tasks == ["second"]
    assert f"first: kept from an earlier run ({tmp_path / 'first.json'})" in capsys.readouterr().out


def test_without_resume_every_task_runs_again(tmp_path, checkpoint, two_tasks):
    write_results(tmp_path, "first", _fields(checkpoint), [{"m": 1}], title="first")
    _all(tmp_path, checkpoint)
    assert two_tasks == ["first", "second"]


def test_results_whose_markdown_was_never_written_count_as_unfinished(tmp_path, checkpoint, two_tasks):
    (tmp_path / "first.json").write_text(json.dumps(_fields(checkpoint)))
    _all(tmp_path, checkpoint, "--resume")
    assert two_tasks == ["first", "second"]


def test_resume_refuses_a_folder_holding_another_models_results(tmp_path, checkpoint, two_tasks):
    write_results(tmp_path, "first", _fields(checkpoint, random_weights=False), [{"m": 1}], title="first")
    with pytest.raises(EsmJaxError, match=r"first\.json: results of .*'random_weights': False.*give another --out"):
        _all(tmp_path, checkpoint, "--resume")
    assert two_tasks == []


def test_resume_refuses_other_weights_saved_at_the_same_checkpoint_path(tmp_path, two_tasks):
    """A model trained again into the same folder is another model, though its path and flags are the same."""
    path = save_tiny_checkpoint(tmp_path / "model", seed=0)
    write_results(tmp_path, "first", _fields(str(path), random_weights=False), [{"m": 1}], title="first")
    save_tiny_checkpoint(tmp_path / "model", seed=1)
    with pytest.raises(EsmJaxError, match=r"first\.json: results of .*'weights_sha256'.*give another --out"):
        eval_cli.main(["all", "--checkpoint", str(path), "--out", str(tmp_path), "--resume"])
    assert two_tasks == []


def test_results_written_before_weights_were_hashed_are_refused(tmp_path, checkpoint, two_tasks):
    unhashed = {"checkpoint": checkpoint, "random_weights": True}
    write_results(tmp_path, "first", unhashed, [{"m": 1}], title="first")
    with pytest.raises(EsmJaxError, match=r"'weights_sha256': None"):
        _all(tmp_path, checkpoint, "--resume")


def test_results_that_name_no_model_are_kept(tmp_path, checkpoint, two_tasks):
    """A task that reads a training run's log (structure-vs-lm) writes the run, not a checkpoint."""
    write_results(tmp_path, "first", {"run": "runs/x"}, [{"m": 1}], title="first")
    _all(tmp_path, checkpoint, "--resume")
    assert two_tasks == ["second"]


def test_the_weights_digest_names_the_weights_not_the_path(tmp_path, checkpoint):
    copy = save_tiny_checkpoint(tmp_path / "copy", seed=0)
    trained = _fields(checkpoint, random_weights=False)["weights_sha256"]
    assert trained == _fields(str(copy), random_weights=False)["weights_sha256"]
    assert _fields(checkpoint, seed=0)["weights_sha256"] == _fields(checkpoint, seed=0)["weights_sha256"]
    assert _fields(checkpoint, seed=0)["weights_sha256"] != _fields(checkpoint, seed=1)["weights_sha256"]
    assert len(trained) == 16 and int(trained, 16) >= 0


def test_a_model_a_training_run_passes_in_is_not_hashed(checkpoint):
    model = Backbone(checkpoint).model
    assert "weights_sha256" not in Backbone("runs/x step 5", model=model).report_fields()
