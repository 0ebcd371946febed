"""Model FLOPs utilisation of the real training step on whatever accelerators are present.

Runs unchanged on a GPU host or a TPU VM (and, slowly, on a CPU): the configured model (default
ESM-2 650M, bfloat16 compute, layers scanned, the platform's fused attention) is trained on random
masked rows of ``--length`` tokens over a mesh of all local devices. With ``--packed`` (the default)
each row holds several sequences whose lengths follow a UniRef50-like log-normal (median ~270
residues), as the packed input pipeline delivers them. MFU = model FLOPs per second / (peak FLOP/s
per device × devices), with model FLOPs counting forward and backward over real tokens and each
sequence's own attention only (no padding, no rematerialisation; see esm_jax.train.metrics).

    python benchmarks/train_mfu.py                                   # ESM-2 650M, T=1024, packed
    python benchmarks/train_mfu.py --model esm1b_t33_650M_UR50S --no-packed --attention dense
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import ml_collections
import numpy as np

from esm_jax.mesh import build_mesh
from esm_jax.model import named_config
from esm_jax.model.config import ATTENTION_IMPLEMENTATIONS
from esm_jax.sharding import DEFAULT_RULES
from esm_jax.train.metrics import peak_flops, train_flops
from esm_jax.train.trainer import step_setup

OPTIMIZER = ml_collections.ConfigDict(
    dict(peak_learning_rate=1e-4, end_learning_rate=1e-5, warmup_steps=10, schedule="linear",
         b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.01, clip_grad_norm=1.0)
)  # fmt: skip


def random_rows(rows: int, length: int, packed: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Residue tokens laid out ``<cls> … <eos>`` per sequence, and their segment ids (0 = padding).

    Unpacked rows are one sequence of the full width; packed rows are filled with log-normal lengths,
    the last sequence of a row cropped to the space left (as the input pipeline crops long sequences).
    """
    rng = np.random.default_rng(seed)
    tokens = np.ones((rows, length), np.int32)
    segments = np.zeros((rows, length), np.int32)
    for row in range(rows):
        start, segment = 0, 1
        while length - start >= 3:
            size = length - start if not packed else min(int(rng.lognormal(5.6, 0.7)) + 2, length - start)
            tokens[row, start : start + size] = rng.integers(4, 24, size=size)
            tokens[row, [start, start + size - 1]] = (0, 2)
            segments[row, start : start + size] = segment
            start, segment = start + size, segment + 1
    return tokens, segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="esm2_t33_650M_UR50D")
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--rows-per-device", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--remat", default="dots_no_batch")
    parser.add_argument("--attention", default="auto", choices=ATTENTION_IMPLEMENTATIONS)
    parser.add_argument("--packed", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--fsdp", type=int, default=1, help="FSDP size; the rest of the devices is data parallel")
    args = parser.parse_args()

    config = named_config(args.model).replace(
        compute_dtype=args.dtype, scan_layers=True, remat_policy=args.remat, attention_impl=args.attention,
        max_positions=max(named_config(args.model).max_positions, args.length),
    )  # fmt: skip
    devices = jax.devices()
    mesh = build_mesh({"data": -1, "fsdp": args.fsdp, "tensor": 1})
    setup = step_setup(config, OPTIMIZER, 1000, mesh, DEFAULT_RULES)
    sharding = setup.batch_sharding
    rows = args.rows_per_device * len(devices)
    tokens, segments = random_rows(rows, args.length, args.packed)
    selected = (np.random.default_rng(1).random(tokens.shape) < 0.15) & (tokens >= 4)
    batch = {
        "tokens": jax.device_put(np.where(selected, 32, tokens).astype(np.int32), sharding),
        "targets": jax.device_put(tokens, sharding),
        "loss_mask": jax.device_put(selected.astype(np.float32), sharding),
    }
    if args.packed:
        batch["segment_ids"] = jax.device_put(segments, sharding)
    with jax.set_mesh(mesh):
        state = setup.initial_state(seed=0)
        step = setup.train_step
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    counts = jax.device_get(metrics)
    real = float(counts["tokens"])
    flops = train_flops(config, real, float(counts["attention_pairs"]))
    peak = peak_flops(devices[0]) * len(devices)
    print(f"{len(devices)} × {devices[0].device_kind}; {args.model} {args.dtype}, remat {args.remat}, "
          f"attention {args.attention}, batch {rows} × {args.length}, {'packed' if args.packed else 'one per row'}, "
          f"{real / tokens.size:.1%} real tokens")  # fmt: skip
    print(
        f"step {seconds * 1e3:.1f} ms (median of {len(times)}, best {min(times) * 1e3:.1f}), "
        f"{real / seconds:,.0f} real tokens/s ({real / seconds / len(devices):,.0f} per device), "
        f"{flops / seconds / 1e12:.1f} TFLOP/s, MFU {flops / seconds / peak:.1%} (peak {peak / 1e12:.0f} TFLOP/s)"
    )


if __name__ == "__main__":
    main()
