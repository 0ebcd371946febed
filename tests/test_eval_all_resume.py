"""``esm-jax eval all --resume`` keeps the tasks an earlier run of the same model finished and runs the rest."""

from __future__ import annotations

import json

import pytest

import eval.cli as eval_cli
from esm_jax.errors import EsmJaxError
from eval.common.report import write_results
from eval.common.task import Task, TaskOptions


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


def _all(out, *flags):
    return eval_cli.main(["all", "--checkpoint", "model-x", "--random-weights", "--out", str(out), *flags])


def test_resume_runs_only_the_tasks_without_results_of_the_same_model(tmp_path, two_tasks, capsys):
    write_results(tmp_path, "first", {"checkpoint": "model-x", "random_weights": True}, [{"m": 1}], title="first")
    assert _all(tmp_path, "--resume") == 0
    assert two_tasks == ["second"]
    assert f"first: kept from an earlier run ({tmp_path / 'first.json'})" in capsys.readouterr().out


def test_without_resume_every_task_runs_again(tmp_path, two_tasks):
    write_results(tmp_path, "first", {"checkpoint": "model-x", "random_weights": True}, [{"m": 1}], title="first")
    _all(tmp_path)
    assert two_tasks == ["first", "second"]


def test_results_whose_markdown_was_never_written_count_as_unfinished(tmp_path, two_tasks):
    (tmp_path / "first.json").write_text(json.dumps({"checkpoint": "model-x", "random_weights": True}))
    _all(tmp_path, "--resume")
    assert two_tasks == ["first", "second"]


def test_resume_refuses_a_folder_holding_another_models_results(tmp_path, two_tasks):
    write_results(tmp_path, "first", {"checkpoint": "model-x", "random_weights": False}, [{"m": 1}], title="first")
    with pytest.raises(EsmJaxError, match=r"first\.json: results of .*'random_weights': False.*give another --out"):
        _all(tmp_path, "--resume")
    assert two_tasks == []


def test_results_that_name_no_model_are_kept(tmp_path, two_tasks):
    """A task that reads a training run's log (structure-vs-lm) writes the run, not a checkpoint."""
    write_results(tmp_path, "first", {"run": "runs/x"}, [{"m": 1}], title="first")
    _all(tmp_path, "--resume")
    assert two_tasks == ["second"]
