"""The ``esm-jax`` command: one sub-command per job, each a thin layer over the library.

Commands implemented outside the ``esm_jax`` package (the data pipeline, which needs TensorFlow)
are imported only when they run, so ``import esm_jax`` never loads TensorFlow.

Every error a user can hit ends the command with one line on stderr, ``esm-jax CMD: error: ...``,
and exit status 2: usage errors, the project's own errors, and any other exception (a file that
cannot be read or written, a value out of range). ``esm-jax --debug CMD`` (or ``ESM_JAX_DEBUG=1``)
prints the traceback first.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence

import jax

from esm_jax.cli import convert, demo, doctor, extract, plan, score_variants, train
from esm_jax.cli.configuration import ConfigError, split_overrides
from esm_jax.errors import EsmJaxError
from esm_jax.pretrained import cache_dir

COMMANDS = {
    "extract": extract,
    "convert": convert,
    "score-variants": score_variants,
    "demo": demo,
    "train": train,
    "plan": plan,
    "doctor": doctor,
}
# name -> (module with main(argv), one-line help)
EXTERNAL_COMMANDS = {
    "build-data": ("data_pipeline.build.cli", "FASTA corpora to TFRecord training data (UR50/S, UR50/D, UR100)"),
    "eval": ("eval.cli", "the paper's evaluations on a checkpoint (ECE, homology, probes, ...)"),
    "data": ("data_pipeline.fetch_cli", "list, fetch, verify and locate the datasets evaluations and training read"),
}


DEBUG_FLAG = "--debug"
_LONGEST_MESSAGE = 600  # characters of an unexpected error's text shown without --debug


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (the usage itself is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="esm-jax",
        description="ESM protein language models (ESM-1b, ESM-1v, ESM-2) in JAX: embeddings, contacts, checkpoints.",
    )
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of an error (also ESM_JAX_DEBUG=1)")
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
    """Run ``esm-jax ARGV``; returns the exit status (2 after an error, told in one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    doctor.keep_libtpu_quiet()
    debug = os.environ.get("ESM_JAX_DEBUG", "") not in ("", "0")
    while argv and argv[0] == DEBUG_FLAG:
        debug, argv = True, argv[1:]
    if argv and argv[0] in EXTERNAL_COMMANDS:
        module = EXTERNAL_COMMANDS[argv[0]][0]
        with _one_line_usage_errors():
            return _reporting_errors(argv[0], lambda: importlib.import_module(module).main(argv[1:]), debug)
    try:
        argv, overrides = split_overrides(argv)
        args = build_parser().parse_args(argv)
    except ConfigError as error:
        return _report("esm-jax", error, debug)
    except SystemExit as exit_:  # usage errors (already told in one line) and --help
        return _exit_status(exit_)
    if overrides and not hasattr(args, "config_overrides"):
        return _report(f"esm-jax {args.command}", ConfigError("this command takes no --config.* overrides"), debug)
    if overrides:
        args.config_overrides = overrides
    _use_compilation_cache()
    return _reporting_errors(args.command, lambda: COMMANDS[args.command].run(args), debug)


def _reporting_errors(command: str, call: Callable[[], int | None], debug: bool = False) -> int:
    """Run a command; any error becomes one line on stderr and exit status 2, not a traceback."""
    try:
        return call() or 0
    except SystemExit as exit_:
        if not isinstance(exit_.code, str):
            return _exit_status(exit_)
        return _report(f"esm-jax {command}", ConfigError(exit_.code.removeprefix("error: ")), debug)
    except Exception as error:  # noqa: BLE001 - the CLI boundary: every error is told in one line
        return _report(f"esm-jax {command}", error, debug)


def _report(prefix: str, error: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(error)
    print(f"{prefix}: error: {describe_error(error, debug)}", file=sys.stderr)
    return 2


def _exit_status(exit_: SystemExit) -> int:
    return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)


def describe_error(error: BaseException, debug: bool = False) -> str:
    """One line telling what went wrong and, where the error does not, what to do."""
    if isinstance(error, EsmJaxError):
        return _one_line(str(error))
    if isinstance(error, UnicodeDecodeError):
        return (
            f"a file is not UTF-8 text (byte {error.object[error.start : error.start + 1]!r} at offset {error.start}); "
            "save it as UTF-8"
        )
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}; {_what_to_do(error)}"
    text = _one_line(f"{type(error).__name__}: {error}")
    if len(text) > _LONGEST_MESSAGE:
        text = text[:_LONGEST_MESSAGE] + " ..."
    return text if debug else f"{text} (esm-jax --debug shows where)"


def _what_to_do(error: OSError) -> str:
    if isinstance(error, IsADirectoryError):
        return "a folder is where a file belongs; move it or choose another path"
    if isinstance(error, NotADirectoryError):
        return "a file is where a folder belongs; move it or choose another path"
    if isinstance(error, FileNotFoundError):
        return "check the path"
    if isinstance(error, FileExistsError):
        return "move it away or choose another path"
    if isinstance(error, PermissionError) or error.errno == errno.EROFS:
        return "choose a place you may write to (or read, for an input)"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space or choose another output folder"
    return "check the file and the disk"


def _one_line(text: str) -> str:
    return " ".join(text.split())


@contextlib.contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    """Commands outside this package build plain argparse parsers: give their usage errors one line too."""
    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = OneLineErrorParser.error
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original


if __name__ == "__main__":
    sys.exit(main())
