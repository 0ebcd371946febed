"""Every evaluation task is registered, every help text of `esm-jax eval` renders, errors are one line."""

from __future__ import annotations

import pytest

from esm_jax.cli import main as esm_jax_main
from eval.cli import TASKS, build_parser, main

PAPER_TASKS = (
    "language-model",
    "aa-embeddings",
    "remote-homology",
    "family-alignment",
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


@pytest.mark.parametrize("task", ["all", *TASKS])
def test_help_renders(task, capsys):
    build_parser().format_help()
    with pytest.raises(SystemExit) as stop:
        main([task, "--help"])
    assert stop.value.code == 0
    assert "--checkpoint" in capsys.readouterr().out


def test_random_weights_take_the_shape_of_a_saved_checkpoint(tmp_path):
    import argparse

    import jax
    import numpy as np
    from flax import nnx

    from esm_jax.checkpoints import native
    from esm_jax.model import build_model
    from eval.cli import load_backbone

    trained = build_model("esm2_t6_8M_UR50D", seed=5)
    native.save(trained, tmp_path / "ckpt")
    args = argparse.Namespace(checkpoint=str(tmp_path / "ckpt"), random_weights=True, seed=0)
    untrained = load_backbone(args)
    assert untrained.config == trained.config
    ours, theirs = jax.tree.leaves(nnx.state(untrained, nnx.Param)), jax.tree.leaves(nnx.state(trained, nnx.Param))
    assert [a.shape for a in ours] == [b.shape for b in theirs]
    randomised = [(a, b) for a, b in zip(ours, theirs, strict=True) if np.std(b) > 0]  # not constant-initialised
    assert randomised and not any(np.allclose(a, b) for a, b in randomised)
