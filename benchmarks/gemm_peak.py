"""This machine's matrix-multiplication peak in XLA (JAX) and PyTorch, float32 and bfloat16.

The ceiling every model benchmark is read against: a forward pass that is mostly GEMMs cannot run
faster than the library's best GEMM rate, so a ratio between esm-jax and fair-esm is bounded by the
ratio of what each reaches here. Square 2048³ products and the shapes of an ESM-2 650M layer (1024
tokens × 1280 → 5120 and back) are timed; each rate is the best of ``--repeats`` calls (at least 5),
after one warm-up call. bfloat16 products accumulate into float32 outputs, as esm-jax's layers do;
the bfloat16 → bfloat16 rate is printed beside it. Run it on an idle machine (``uptime`` load < 0.5).

    python benchmarks/gemm_peak.py
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

SHAPES = {"2048^3": (2048, 2048, 2048), "650M fc1": (1024, 1280, 5120), "650M fc2": (1024, 5120, 1280)}


def _best_seconds(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def jax_rate(shape, dtype, repeats: int, output_dtype=jnp.float32) -> float:
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((m, k), dtype=np.float32), dtype)
    b = jnp.asarray(rng.standard_normal((k, n), dtype=np.float32), dtype)
    product = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=output_dtype))
    return 2 * m * k * n / _best_seconds(lambda: product(a, b).block_until_ready(), repeats) / 1e9


def torch_rate(shape, dtype, repeats: int) -> float:
    m, k, n = shape
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    with torch.no_grad():
        return 2 * m * k * n / _best_seconds(lambda: a @ b, repeats) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per rate (best is kept; at least 5)")
    args = parser.parse_args()
    repeats = max(args.repeats, 5)
    print(f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("| shape | XLA fp32 GF/s | torch fp32 GF/s | XLA bf16→fp32 GF/s | XLA bf16→bf16 GF/s | torch bf16 GF/s |")
    print("|---|---|---|---|---|---|")
    for name, shape in SHAPES.items():
        row = (
            jax_rate(shape, jnp.float32, repeats),
            torch_rate(shape, torch.float32, repeats),
            jax_rate(shape, jnp.bfloat16, repeats),
            jax_rate(shape, jnp.bfloat16, repeats, output_dtype=jnp.bfloat16),
            torch_rate(shape, torch.bfloat16, repeats),
        )
        print(f"| {name} | " + " | ".join(f"{rate:.0f}" for rate in row) + " |", flush=True)


if __name__ == "__main__":
    main()
