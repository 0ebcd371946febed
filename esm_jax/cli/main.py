"""The ``esm-jax`` command: one sub-command per job, each a thin layer over the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import jax

from esm_jax.cli import convert, demo, extract
from esm_jax.errors import EsmJaxError
from esm_jax.pretrained import cache_dir

COMMANDS = {"extract": extract, "convert": convert, "demo": demo}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esm-jax",
        description="ESM protein language models (ESM-1b, ESM-1v, ESM-2) in JAX: embeddings, contacts, checkpoints.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(subcommands, name)
    return parser


def _use_compilation_cache() -> None:
    """Keep compiled programs on disk so a second run of a command skips compilation."""
    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _use_compilation_cache()
    try:
        return COMMANDS[args.command].run(args) or 0
    except (EsmJaxError, FileExistsError) as error:
        print(f"esm-jax {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
