"""The four representation tasks are registered, and every help text of `esm-jax eval` renders."""

from __future__ import annotations

import pytest

from eval.cli import TASKS, build_parser, main

OWN_TASKS = ("language-model", "aa-embeddings", "remote-homology", "family-alignment")


def test_tasks_are_registered():
    assert set(OWN_TASKS) <= set(TASKS)


@pytest.mark.parametrize("task", ["all", *OWN_TASKS])
def test_help_renders(task, capsys):
    build_parser().format_help()
    with pytest.raises(SystemExit) as stop:
        main([task, "--help"])
    assert stop.value.code == 0
    assert "--checkpoint" in capsys.readouterr().out
