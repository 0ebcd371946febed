"""Every evaluation task is registered behind one interface: help renders, options round-trip through flags and
configs, unknown options and bad paths are one-line errors."""

from __future__ import annotations

import pytest

from esm_jax.cli import main as esm_jax_main
from esm_jax.errors import EsmJaxError
from eval.cli import build_parser, main
from eval.common.task import Backbone, Task, options_config, options_from_config
from eval.tasks import TASK_MODULES, get_task

TASKS = list(TASK_MODULES)

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
    "structural-holdout",
    "feature-combination",
    "mutational-effect",
    "zero-shot-variants",
    "compare",
    "summary",
)


def test_tasks_are_registered_and_each_module_defines_its_task():
    assert set(PAPER_TASKS) == set(TASKS)
    for name in TASKS:
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
        assert task.description.strip() and task.options().seed == 0


@pytest.mark.parametrize("task", TASKS)
def test_flags_and_config_give_the_same_default_options(task):
    """The flags and the ml_collections config are both generated from the options dataclass."""
    options = get_task(task).options
    args = build_parser().parse_args([task, "--checkpoint", "x"] if get_task(task).needs_checkpoint else [task])
    from_flags = options(**{name: getattr(args, name) for name in options.__dataclass_fields__})
    from_config = options_from_config(options, options_config(options).to_dict())
    assert from_flags == options() == from_config


def test_a_flag_reaches_the_options_typed():
    args = build_parser().parse_args(
        ["secondary-structure-linear", "--checkpoint", "x", "--max-train", "7", "--l2", "0.5", "--seed", "3"]
    )
    from eval.common.task import options_from_flags

    options = options_from_flags(get_task("secondary-structure-linear").options, args)
    assert (options.max_train, options.l2, options.seed) == (7, 0.5, 3)


def test_an_unknown_config_option_is_refused_naming_it_and_the_known_ones():
    with pytest.raises(EsmJaxError, match=r"config.evals.x: unknown option\(s\) rnak; known: .*rank"):
        options_from_config(get_task("contacts-linear").options, {"rnak": 3}, where="config.evals.x")


def test_an_unknown_task_is_refused_with_the_known_ones():
    with pytest.raises(EsmJaxError, match="unknown evaluation task 'contact-linear'; known: language-model"):
        get_task("contact-linear")


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
    import jax
    import numpy as np
    from flax import nnx

    from esm_jax.checkpoints import native
    from esm_jax.model import build_model

    trained = build_model("esm2_t6_8M_UR50D", seed=5)
    native.save(trained, tmp_path / "ckpt")
    untrained = Backbone(str(tmp_path / "ckpt"), random_weights=True, seed=0).model
    assert untrained.config == trained.config
    ours, theirs = jax.tree.leaves(nnx.state(untrained, nnx.Param)), jax.tree.leaves(nnx.state(trained, nnx.Param))
    assert [a.shape for a in ours] == [b.shape for b in theirs]
    randomised = [(a, b) for a, b in zip(ours, theirs, strict=True) if np.std(b) > 0]  # not constant-initialised
    assert randomised and not any(np.allclose(a, b) for a, b in randomised)
