"""``esm-jax plan``: compile a training step or a model's forward pass for a TPU topology; report memory and speed."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import jax

from esm_jax.cli.configuration import load_config
from esm_jax.files import write_json_atomically
from esm_jax.model.config import COMPUTE_DTYPES

DESCRIPTION = """\
Check, on any machine with the `libtpu` package installed (pip install 'esm-jax[tpu]'), that a
training config fits and compiles on a TPU slice, before renting it. The real training step of the
configured model and global batch (packed rows with segment ids when data.shapes is "packed") is
compiled for the topology with the TPU's attention kernel (attention_impl "auto" is splash); the report
gives per-chip memory against HBM, FLOPs and HBM bytes per step (XLA's count plus the splash kernels'
work, which XLA cannot see and the plan adds analytically), and the roofline step time and MFU bound.

With --inference MODEL instead of --config, the same for inference: the forward pass `esm-jax extract`
runs (the last layer's representations) of a released model, its float32 parameters sharded over the
--mesh and the --batch rows split over its data and fsdp axes; the report gives memory per device
(parameters included), FLOPs and HBM bytes per forward, and the roofline bound on tokens per second.

Example:
  esm-jax plan --config configs/pretrain.py:model=esm1b,data=ur50s,pod=v5e-256
  esm-jax plan --config configs/pretrain.py:tiny --topology v5e:2x2
  # before splash and packing: XLA attention, one sequence per row
  esm-jax plan --config configs/pretrain.py:model=esm1b,data=ur50s,pod=v5e-256 --config.model.attention_impl=dense \\
      --config.data.shapes=fixed
  # ESM-2 15B inference on 8 v5e chips, parameters split over all of them, 4 rows of 1024 tokens per chip
  esm-jax plan --inference esm2_t48_15B_UR50D --topology v5e:2x4 --batch 32x1024
"""
INFERENCE_ONLY = ("mesh", "batch", "dtype")


def add_parser(subcommands, name: str) -> None:
    parser = subcommands.add_parser(
        name,
        help="compile a training config or a model's inference for a TPU topology (memory, FLOPs, speed bound)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", help="config file and optional argument, e.g. configs/pretrain.py:tiny")
    what.add_argument("--inference", metavar="MODEL", help="plan inference of a released model, e.g. esm2_t36_3B_UR50D")
    parser.set_defaults(config_overrides=[])
    parser.add_argument(
        "--topology",
        help="e.g. v5e:16x16, v4:4x4x8, v5p:4x4x8 (default: the config's topology; required with --inference)",
    )
    inference = parser.add_argument_group("inference (with --inference)")
    inference.add_argument(
        "--mesh", help="mesh sizes, e.g. data=2,fsdp=4,tensor=1 (default: fsdp=-1, parameters split over every chip)"
    )
    inference.add_argument(
        "--batch",
        type=_batch_shape,
        metavar="ROWSxLENGTH",
        help="rows of tokens per forward, e.g. 16x1024 (default: one 1024-token row per data×fsdp shard of the "
        "mesh, i.e. one per chip on the default mesh); rows must be a multiple of data×fsdp",
    )
    inference.add_argument("--dtype", choices=sorted(COMPUTE_DTYPES), help="compute dtype (default: bfloat16)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")


def _batch_shape(text: str) -> tuple[int, int]:
    rows, _, length = text.lower().partition("x")
    if not (rows.isdigit() and length.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not ROWSxLENGTH, e.g. 16x1024")
    return int(rows), int(length)


def run(args: argparse.Namespace) -> int:
    # Compiling only: let several plans (or a plan beside a TPU job) load libtpu at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    # Programs compiled for a topology without a TPU client can be written to the disk cache but never read back.
    jax.config.update("jax_enable_compilation_cache", False)
    if args.inference:
        return _run_inference(args)
    given = [f"--{option}" for option in INFERENCE_ONLY if getattr(args, option) is not None]
    if given:
        raise SystemExit(f"error: {', '.join(given)}: for --inference only (a training config sets its own)")
    config = load_config(args)
    topology = args.topology or config.topology
    if not topology:
        raise SystemExit("error: give --topology (this config names none)")
    from esm_jax.train.plan import plan

    return _report(plan(config, topology), args.json)


def _run_inference(args: argparse.Namespace) -> int:
    if args.config_overrides:
        raise SystemExit("error: --config.* overrides apply to a training --config, not to --inference")
    if not args.topology:
        raise SystemExit("error: give --topology with --inference, e.g. --topology v5e:2x4")
    from esm_jax.inference.plan import DEFAULT_LENGTH, plan_inference
    from esm_jax.mesh import parse_mesh_sizes

    rows, length = args.batch or (None, DEFAULT_LENGTH)
    try:
        mesh = parse_mesh_sizes(args.mesh or "fsdp=-1")
        report = plan_inference(args.inference, args.topology, mesh, rows, length, args.dtype or "bfloat16")
    except ValueError as error:  # a mesh, batch or topology this plan cannot use: one line, not a traceback
        print(f"esm-jax plan: error: {error}", file=sys.stderr)
        return 2
    return _report(report, args.json)


def _report(report, json_path: Path | None) -> int:
    """Print ``report``; write it as JSON too when asked. Exit status 1 when it does not fit in HBM."""
    print("\n".join(report.lines()))
    if json_path:
        write_json_atomically(json_path, dataclasses.asdict(report))
    return 0 if report.fits else 1
