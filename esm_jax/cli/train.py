"""``esm-jax train``: masked-language-model pretraining from a config; resumes from its workdir."""

from __future__ import annotations

import argparse

import jax

from esm_jax.cli.configuration import add_config_arguments, load_config

DESCRIPTION = """\
Pretrain an ESM model with the masked-language-model objective. The run lives in --workdir
(checkpoints, TensorBoard events, metrics.jsonl, learning_curve.png, summary.json); running the
same command again resumes exactly where it stopped. A finished run is left as it is (raise
--config.train.total_steps to train on); a config of another model is refused before anything is
written. SIGTERM (e.g. a preemption) stops at the next step boundary and saves a checkpoint.

Examples:
  esm-jax train --config configs/pretrain.py:tiny --workdir runs/tiny
  esm-jax train --config configs/pretrain.py:model=esm1b,data=ur50s --config.train.total_steps=1000 --workdir runs/b
Multi-process (one per host, or several on one machine for testing):
  esm-jax train ... --coordinator-address 10.0.0.1:1234 --num-processes 4 --process-id $RANK
On TPU pods and Slurm clusters `--distributed auto` lets JAX find the other processes.
"""


def add_parser(subcommands, name: str) -> None:
    parser = subcommands.add_parser(
        name,
        help="pretrain with the MLM objective (resumable)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument("--workdir", required=True, help="run folder; resumed from if it holds checkpoints")
    parser.add_argument(
        "--distributed",
        choices=("off", "auto"),
        default="off",
        help="auto: jax.distributed.initialize() with cluster auto-detection (TPU pods, Slurm)",
    )
    parser.add_argument("--coordinator-address", help="host:port of process 0 for multi-process runs")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)


def initialize_distributed(args: argparse.Namespace) -> None:
    """Join the other processes of a multi-process run (before any other JAX call)."""
    if args.coordinator_address:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only used by CPU devices
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    elif args.distributed == "auto":
        jax.distributed.initialize()


def run(args: argparse.Namespace) -> int:
    initialize_distributed(args)
    config = load_config(args)
    from esm_jax.train.trainer import train

    result = train(config, args.workdir)
    if jax.process_index() == 0:
        print(f"stopped at step {result.step} ({'early' if result.stopped_early else 'done'}); run in {result.workdir}")
    return 0
