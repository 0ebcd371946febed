"""``esm-jax plan``: compile the configured training step for a TPU topology and report memory and speed."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import jax

from esm_jax.cli.configuration import add_config_arguments, load_config
from esm_jax.files import write_json_atomically

DESCRIPTION = """\
Check, on any machine with the `libtpu` package installed (pip install 'esm-jax[tpu]'), that a
training config fits and compiles on a TPU slice, before renting it. The real training step of the
configured model and global batch (packed rows with segment ids when data.shapes is "packed") is
compiled for the topology with the TPU's attention kernel (attention_impl "auto" is splash); the report
gives per-chip memory against HBM, FLOPs and HBM bytes per step (XLA's count plus the splash kernels'
work, which XLA cannot see and the plan adds analytically), and the roofline step time and MFU bound.

Example:
  esm-jax plan --config configs/pretrain.py:model=esm1b,data=ur50s,pod=v5e-256
  esm-jax plan --config configs/pretrain.py:tiny --topology v5e:2x2
  # before splash and packing: XLA attention, one sequence per row
  esm-jax plan --config configs/pretrain.py:model=esm1b,data=ur50s,pod=v5e-256 --config.model.attention_impl=dense \\
      --config.data.shapes=fixed
"""


def add_parser(subcommands, name: str) -> None:
    parser = subcommands.add_parser(
        name,
        help="compile a training config for a TPU topology (memory, FLOPs, MFU bound)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument("--topology", help="e.g. v5e:16x16, v4:4x4x8, v5p:4x4x8 (default: the config's topology)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    topology = args.topology or config.topology
    if not topology:
        raise SystemExit("error: give --topology (this config names none)")
    # Compiling only: let several plans (or a plan beside a TPU job) load libtpu at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    # Programs compiled for a topology without a TPU client can be written to the disk cache but never read back.
    jax.config.update("jax_enable_compilation_cache", False)
    from esm_jax.train.plan import plan

    report = plan(config, topology)
    print("\n".join(report.lines()))
    if args.json:
        write_json_atomically(args.json, dataclasses.asdict(report))
    return 0 if report.fits else 1
