"""Every evaluation task is registered, every help text of `esm-jax eval` renders, errors are one line."""

from __future__ import annotations

import pytest

from esm_jax.cli import main as esm_jax_main
from eval.cli import TASKS, build_parser, main

OWN_TASKS = ("language-model", "aa-embeddings", "remote-homology", "family-alignment")
PAPER_TASKS = (
    *OWN_TASKS,
    "secondary-structure-linear",
    "contacts-linear",
    "contacts-unsupervised",
    "secondary-structure-deep",
    "contacts-deep",
    "structure-vs-lm",
    "feature-combination",
    "mutational-effect",
    "zero-shot-variants",
)


def test_tasks_are_registered():
    assert set(PAPER_TASKS) == set(TASKS)


def test_a_bad_path_is_one_error_line_and_exit_status_2(tmp_path, capsys):
    status = esm_jax_main.main(["eval", "structure-vs-lm", "--run", str(tmp_path / "missing")])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("esm-jax eval: error:") and "missing" in error and "Traceback" not in error


@pytest.mark.parametrize("task", ["all", *OWN_TASKS])
def test_help_renders(task, capsys):
    build_parser().format_help()
    with pytest.raises(SystemExit) as stop:
        main([task, "--help"])
    assert stop.value.code == 0
    assert "--checkpoint" in capsys.readouterr().out
