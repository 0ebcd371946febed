"""How a command run by several processes (hosts, or several on one host) learns its share."""

from __future__ import annotations

import argparse

import jax


def add_process_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--num-processes", type=int, default=None, help="processes sharing the work (default: 1, or from --distributed)"
    )
    parser.add_argument("--process-id", type=int, default=None, help="this process's number, 0..N-1 (default: 0)")
    parser.add_argument(
        "--distributed",
        choices=("auto",),
        default=None,
        help="auto: join the multi-host JAX job this process belongs to (jax.distributed.initialize finds it on "
        "TPU pods, SLURM, Open MPI and Kubernetes) and take the share of its process number",
    )


def process_share_options(args: argparse.Namespace) -> tuple[int, int]:
    """``(process_id, num_processes)`` from the options, after joining the JAX job with ``--distributed``."""
    if args.distributed:
        if args.num_processes is not None or args.process_id is not None:
            raise SystemExit("error: --distributed assigns the process id and count; drop --num-processes/--process-id")
        jax.distributed.initialize()
        return jax.process_index(), jax.process_count()
    num_processes = 1 if args.num_processes is None else args.num_processes
    process_id = 0 if args.process_id is None else args.process_id
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise SystemExit(f"error: --process-id must be in 0..{num_processes - 1} for --num-processes {num_processes}")
    return process_id, num_processes
