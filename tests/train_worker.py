"""Train the tiny test config on one mesh and dump the final state: the sharding tests run it as a subprocess.

    python -m tests.train_worker WORKDIR DUMP.npz [--mesh 2x2x2] [--steps 3] [--lstm] [--adam-eps 1]
        [--coordinator 127.0.0.1:PORT --num-processes 2 --process-id 0]

Trains (or resumes) the run in WORKDIR. Process 0 writes every state leaf, gathered whole, to DUMP.npz and
``DUMP.npz.json``: the logged training losses, the final step and the mesh shape the largest parameter is on.
"""

from __future__ import annotations

import argparse
import json

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from esm_jax.train.trainer import TrainResult, train
from tests.train_helpers import tiny_config


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("dump")
    parser.add_argument("--mesh", default=None, help="data x fsdp x tensor (default: every device on data)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lstm", action="store_true", help="train the LSTM baseline instead of the Transformer")
    parser.add_argument("--adam-eps", type=float, default=None)
    parser.add_argument("--coordinator", default=None, help="host:port of process 0 (multi-process runs)")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    return parser.parse_args()


def dump(result: TrainResult, path: str) -> None:
    """Every leaf of the final state, and what the test compares besides it."""
    gathered = multihost_utils.process_allgather(nnx.to_pure_dict(result.state), tiled=True)
    if jax.process_index() != 0:
        return
    leaves = jax.tree_util.tree_flatten_with_path(gathered)[0]
    np.savez(path, **{jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves})
    with open(result.workdir / "metrics.jsonl") as handle:
        losses = [record["loss"] for record in map(json.loads, handle) if record["split"] == "train"]
    kernel = max(jax.tree.leaves(result.state["model"]), key=lambda leaf: leaf.size)
    facts = {
        "losses": losses,
        "step": result.step,
        "mesh": dict(kernel.sharding.mesh.shape),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
    }
    with open(path + ".json", "w") as handle:
        json.dump(facts, handle)


def main() -> None:
    args = parse_arguments()
    if args.coordinator:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)
    config = tiny_config(total_steps=args.steps)
    if args.lstm:
        config.model = ml_collections.ConfigDict(dict(kind="lstm", num_layers=2, embed_dim=32, hidden_dim=32))
    if args.mesh:
        data, fsdp, tensor = (int(size) for size in args.mesh.split("x"))
        config.mesh.update(data=data, fsdp=fsdp, tensor=tensor)
    if args.adam_eps is not None:
        config.optimizer.eps = args.adam_eps
    dump(train(config, args.workdir), args.dump)


if __name__ == "__main__":
    main()
