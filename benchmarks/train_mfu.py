"""Model FLOPs utilisation of the real training step on whatever accelerators are present.

Runs unchanged on a GPU host or a TPU VM (and, slowly, on a CPU): the configured model (default
ESM-1b 650M, bfloat16 compute, layers scanned) is trained on random masked batches of
``--length`` tokens over a mesh of all local devices, and MFU = model FLOPs per second / (peak
FLOP/s per device × devices), with model FLOPs counting forward and backward but not
rematerialisation (see esm_jax.train.metrics).

    python benchmarks/train_mfu.py                                   # ESM-1b, L=1024, 8 sequences per device
    python benchmarks/train_mfu.py --model esm2_t33_650M_UR50D --rows-per-device 16 --remat none
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import ml_collections
import numpy as np

from esm_jax.model import named_config
from esm_jax.sharding import DEFAULT_RULES, state_shardings
from esm_jax.train.mesh import batch_sharding, build_mesh
from esm_jax.train.metrics import peak_flops, train_flops_per_token
from esm_jax.train.optimizer import learning_rate_schedule, make_optimizer
from esm_jax.train.state import abstract_state, initialise
from esm_jax.train.step import make_train_step

OPTIMIZER = ml_collections.ConfigDict(
    dict(peak_learning_rate=1e-4, end_learning_rate=1e-5, warmup_steps=10, schedule="linear",
         b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.01, clip_grad_norm=1.0)
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="esm1b_t33_650M_UR50S")
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--rows-per-device", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--remat", default="dots_no_batch")
    parser.add_argument("--attention", default="dense", choices=("dense", "per_head"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--fsdp", type=int, default=1, help="FSDP size; the rest of the devices is data parallel")
    args = parser.parse_args()

    config = named_config(args.model).replace(
        compute_dtype=args.dtype, scan_layers=True, remat_policy=args.remat, attention_impl=args.attention,
        max_positions=max(named_config(args.model).max_positions, args.length),
    )  # fmt: skip
    devices = jax.devices()
    mesh = build_mesh({"data": -1, "fsdp": args.fsdp, "tensor": 1})
    tx = make_optimizer(OPTIMIZER, 1000)
    graphdef, abstract = abstract_state(config, tx)
    shardings = state_shardings(abstract, mesh, DEFAULT_RULES)
    sharding = batch_sharding(mesh)
    rows = args.rows_per_device * len(devices)
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, 24, size=(rows, args.length)).astype(np.int32)
    selected = rng.random((rows, args.length)) < 0.15
    batch = {
        "tokens": jax.device_put(np.where(selected, 32, tokens).astype(np.int32), sharding),
        "targets": jax.device_put(tokens, sharding),
        "loss_mask": jax.device_put(selected.astype(np.float32), sharding),
    }
    with jax.set_mesh(mesh):
        state = initialise(config, tx, shardings, 0)
        step = make_train_step(graphdef, shardings, sharding, 1, learning_rate_schedule(OPTIMIZER, 1000))
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    flops = train_flops_per_token(config, args.length) * rows * args.length
    peak = peak_flops(devices[0]) * len(devices)
    print(f"{len(devices)} × {devices[0].device_kind}; {args.model} {args.dtype}, remat {args.remat}, "
          f"batch {rows} × {args.length}")  # fmt: skip
    print(
        f"step {seconds * 1e3:.1f} ms, {rows * args.length / seconds:,.0f} tokens/s, "
        f"{flops / seconds / 1e12:.1f} TFLOP/s, MFU {flops / seconds / peak:.1%} (peak {peak / 1e12:.0f} TFLOP/s)"
    )


if __name__ == "__main__":
    main()
