"""The ``esm-jax`` command: one sub-command per job, each a thin layer over the library.

Commands implemented outside the ``esm_jax`` package (the data pipeline, which needs TensorFlow)
are imported only when they run, so ``import esm_jax`` never loads TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

import jax

from esm_jax.cli import convert, demo, extract, plan, score_variants, train
from esm_jax.cli.configuration import split_overrides
from esm_jax.errors import EsmJaxError
from esm_jax.pretrained import cache_dir

COMMANDS = {
    "extract": extract,
    "convert": convert,
    "score-variants": score_variants,
    "demo": demo,
    "train": train,
    "plan": plan,
}
# name -> (module with main(argv), one-line help)
EXTERNAL_COMMANDS = {
    "build-data": ("data_pipeline.build.cli", "FASTA corpora to TFRecord training data (UR50/S, UR50/D, UR100)"),
    "eval": ("eval.cli", "the paper's evaluations on a checkpoint (ECE, homology, probes, ...)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esm-jax",
        description="ESM protein language models (ESM-1b, ESM-1v, ESM-2) in JAX: embeddings, contacts, checkpoints.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(subcommands, name)
    for name, (_, summary) in EXTERNAL_COMMANDS.items():
        external = subcommands.add_parser(name, help=summary, add_help=False, prefix_chars="\0")
        external.add_argument("arguments", nargs=argparse.REMAINDER)
    return parser


def _use_compilation_cache() -> None:
    """Keep compiled programs on disk so a second run of a command skips compilation."""
    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXTERNAL_COMMANDS:
        module = importlib.import_module(EXTERNAL_COMMANDS[argv[0]][0])
        return _reporting_errors(argv[0], lambda: module.main(argv[1:]))
    argv, overrides = split_overrides(argv)
    args = build_parser().parse_args(argv)
    if overrides and not hasattr(args, "config_overrides"):
        raise SystemExit(f"error: esm-jax {args.command} takes no --config.* overrides")
    if overrides:
        args.config_overrides = overrides
    _use_compilation_cache()
    return _reporting_errors(args.command, lambda: COMMANDS[args.command].run(args))


def _reporting_errors(command: str, call: Callable[[], int | None]) -> int:
    """Run a command; input and state errors become one line on stderr and exit status 2, not a traceback."""
    try:
        return call() or 0
    except (EsmJaxError, FileExistsError) as error:
        print(f"esm-jax {command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
