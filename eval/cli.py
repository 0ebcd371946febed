"""``esm-jax eval TASK``: run one evaluation (or ``all``) on a checkpoint over frozen parameters.

The tasks are listed in :mod:`eval.tasks`; each one's flags come from its options dataclass
(:mod:`eval.common.task`). Common flags: ``--checkpoint``, ``--random-weights``, ``--data``, ``--out``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from data_pipeline.layout import data_root
from esm_jax.errors import EsmJaxError
from eval.common.task import Backbone, Task, add_option_flags, options_from_flags
from eval.tasks import TASK_MODULES, get_task


def _add_common(parser: argparse.ArgumentParser, checkpoint_required: bool = True) -> None:
    parser.add_argument(
        "--checkpoint",
        required=checkpoint_required,
        help="model: .pt file, Hugging Face or esm-jax folder, training run folder, or released name",
    )
    parser.add_argument("--random-weights", action="store_true", help="use --checkpoint's shape with random weights")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data folder (default: $ESM_JAX_DATA, else ~/.cache/esm_jax/data; esm-jax data fetch fills it)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("eval_results"), help="results folder (default: ./eval_results)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esm-jax eval", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    everything = subparsers.add_parser("all", help="run every task with its defaults")
    _add_common(everything)
    everything.add_argument("--seed", type=int, default=0, help="seed for random weights and any sampling")
    everything.add_argument(
        "--resume",
        action="store_true",
        help="keep tasks whose results an earlier run of the same model left in --out; run the rest",
    )
    for name in TASK_MODULES:
        task = get_task(name)
        summary = task.description.splitlines()[0].replace("%", "%%")
        sub = subparsers.add_parser(name, help=summary, description=task.description)
        _add_common(sub, task.needs_checkpoint)
        add_option_flags(sub, task.options)
    return parser


def _run_one(task: Task, backbone: Backbone, options, args: argparse.Namespace, check_skip: bool) -> str:
    reason = task.why_skipped(backbone, options) if check_skip else None
    if reason:
        return f"{task.name}: skipped ({reason})"
    return f"{task.name}: {task.run(backbone, args.data, args.out, options)}"


def finished_before(task: Task, backbone: Backbone, out: Path) -> str | None:
    """Why ``task`` need not run again: its results are in ``out`` from the same model (None: they are not).

    Results of another model, including other weights at the same checkpoint path (a run trained again into its
    folder, or results written before weights were hashed), are refused rather than kept, so one folder never
    mixes two models' results.
    """
    path = out / f"{task.name}.json"
    if not (path.is_file() and path.with_suffix(".md").is_file()):
        return None
    try:
        written = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EsmJaxError(
            f"{path}: cannot read the earlier results ({error}); delete it to run {task.name} again"
        ) from error
    if "checkpoint" not in written:  # a task that reads a training run names no model
        return f"{task.name}: kept from an earlier run ({path})"
    expected = backbone.report_fields()
    found = {key: written.get(key) for key in expected}
    if found != expected:
        raise EsmJaxError(
            f"{path}: results of {found}, not of {expected}; resume into the folder of the same model, "
            "or give another --out"
        )
    return f"{task.name}: kept from an earlier run ({path})"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.data is None:
        args.data = data_root()
    backbone = Backbone(args.checkpoint, random_weights=args.random_weights, seed=args.seed)
    if args.task == "all":
        for name in TASK_MODULES:
            task = get_task(name)
            kept = finished_before(task, backbone, args.out) if args.resume else None
            if kept:
                print(kept, flush=True)
                continue
            print(_run_one(task, backbone, task.options(seed=args.seed), args, check_skip=True), flush=True)
    else:
        task = get_task(args.task)
        print(_run_one(task, backbone, options_from_flags(task.options, args), args, check_skip=False), flush=True)
    return 0
