"""``esm-jax eval TASK``: run one evaluation (or ``all``) on a checkpoint over frozen parameters.

Each task lives in its own module, registered in :data:`TASKS` by module path; a task module
provides ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> dict`` (its headline
numbers). Common options (``--checkpoint``, ``--random-weights``, ``--data``, ``--out``) are added here. A task
whose input is not one checkpoint sets ``CHECKPOINT_REQUIRED = False``; one that ``all`` may not be able to run
provides ``skip_reason(args) -> str | None``.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Sequence
from pathlib import Path

from esm_jax import pretrained
from esm_jax.mesh import on_inference_mesh
from esm_jax.model import ESM, NAMED_MODELS, BiLSTMLM, build_model

# task name -> module implementing it
TASKS: dict[str, str] = {
    "language-model": "eval.language_model.task",
    "aa-embeddings": "eval.language_model.aa_embeddings",
    "remote-homology": "eval.homology.remote_homology",
    "family-alignment": "eval.homology.family_alignment",
    "mutational-effect": "eval.variants.mutational_effect",
    "zero-shot-variants": "eval.variants.zero_shot",
    "secondary-structure-linear": "eval.structure.secondary.linear",
    "contacts-linear": "eval.structure.contacts.linear",
    "contacts-unsupervised": "eval.structure.contacts.unsupervised",
    "secondary-structure-deep": "eval.structure.secondary.deep",
    "contacts-deep": "eval.structure.contacts.deep",
    "feature-combination": "eval.structure.feature_combination",
    "structure-vs-lm": "eval.structure.structure_vs_lm",
}


def default_data_dir() -> Path:
    """``$ESM_JAX_SHARED_DATA`` or ``../shared/data`` next to the working directory's repository."""
    return Path(os.environ.get("ESM_JAX_SHARED_DATA", Path.cwd().parent / "shared" / "data"))


def _add_common(parser: argparse.ArgumentParser, checkpoint_required: bool = True) -> None:
    parser.add_argument(
        "--checkpoint",
        required=checkpoint_required,
        help="model: .pt file, Hugging Face or esm-jax folder, training run folder, or released name",
    )
    parser.add_argument("--random-weights", action="store_true", help="use --checkpoint's shape with random weights")
    parser.add_argument("--seed", type=int, default=0, help="seed for random weights and any sampling (default: 0)")
    parser.add_argument(
        "--data", type=Path, default=None, help="data folder (default: $ESM_JAX_SHARED_DATA or ../shared/data)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("eval_results"), help="results folder (default: ./eval_results)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esm-jax eval", description=__doc__.splitlines()[0])
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    everything = tasks.add_parser("all", help="run every task with its defaults")
    _add_common(everything)
    for name, module_path in TASKS.items():
        module = importlib.import_module(module_path)
        task = tasks.add_parser(name, help=module.DESCRIPTION.splitlines()[0], description=module.DESCRIPTION)
        _add_common(task, getattr(module, "CHECKPOINT_REQUIRED", True))
        module.add_arguments(task)
    return parser


def load_backbone(args: argparse.Namespace) -> ESM | BiLSTMLM:
    """The frozen backbone named by ``--checkpoint`` (with ``--random-weights``: its shape, freshly initialised).

    ESM backbones split their batches over every local device (:func:`esm_jax.mesh.on_inference_mesh`).
    A training run of an LSTM baseline gives a :class:`BiLSTMLM`, which has logits only (language-model task).
    """
    if args.random_weights and args.checkpoint in NAMED_MODELS:
        return on_inference_mesh(build_model(args.checkpoint, seed=args.seed))
    model, _ = pretrained.load_model_and_alphabet(args.checkpoint)
    return on_inference_mesh(build_model(model.config, seed=args.seed)) if args.random_weights else model


def _task_arguments(module, common: argparse.Namespace) -> argparse.Namespace:
    """``common`` plus the task's own options at their defaults (for ``all``)."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return argparse.Namespace(**vars(parser.parse_args([])), **vars(common))


def _skip_reason(module, args: argparse.Namespace) -> str | None:
    """Why ``all`` leaves this task out for ``args`` (``None`` for tasks that run on any checkpoint)."""
    return module.skip_reason(args) if hasattr(module, "skip_reason") else None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.data is None:
        args.data = default_data_dir()
    names = list(TASKS) if args.task == "all" else [args.task]
    for name in names:
        module = importlib.import_module(TASKS[name])
        task_args = _task_arguments(module, args) if args.task == "all" else args
        reason = _skip_reason(module, task_args) if args.task == "all" else None
        print(f"{name}: skipped ({reason})" if reason else f"{name}: {module.run(task_args)}", flush=True)
    return 0
