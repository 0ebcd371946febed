"""This machine's matrix-multiplication peak in XLA (JAX) and PyTorch, float32 and bfloat16.

The ceiling every model benchmark is read against: a forward pass that is mostly GEMMs cannot run
faster than the library's best GEMM rate, so a ratio between esm-jax and fair-esm is bounded by the
ratio of what each reaches here. Square 2048³ products and the feed-forward shapes of an ESM-2 650M
layer (1024 tokens × 1280 → 5120 and back) and of the t12 4 × 512 forward (2048 tokens × 480 → 1920 and
back) are timed; each rate is the best of ``--repeats`` calls (at least 5), after one warm-up call and
a pause that lets the previous library's threads stop spinning (``benchmarks/settled.py``). bfloat16
products accumulate into float32 outputs, as esm-jax's layers do; the bfloat16 → bfloat16 rate is
printed beside it. What the libraries' rates are read against in turn: the cores' own float32
multiply-add peak (the widest vectors the build has: 16 floats with AVX-512, else 8; one thread per CPU),
their bfloat16 dot-product peak on CPUs with AVX-512 BF16, and a plain blocked float32 GEMM written for
this benchmark (``benchmarks/native_gemm.cc``, built here with ``-march=native``; rows rounded down to a
multiple of its row block per thread), all skipped without a C++ compiler. Run it on an idle machine
(``uptime`` load < 0.5).

    python benchmarks/gemm_peak.py
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from settled import SETTLE_SECONDS

SHAPES = {
    "2048^3": (2048, 2048, 2048),
    "650M fc1": (1024, 1280, 5120),
    "650M fc2": (1024, 5120, 1280),
    "t12 fc1": (2048, 480, 1920),
    "t12 fc2": (2048, 1920, 480),
}
NATIVE_SOURCE = Path(__file__).resolve().parent / "native_gemm.cc"


def _best_seconds(call, repeats: int) -> float:
    time.sleep(SETTLE_SECONDS)  # let the previous library's spinning threads go idle
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


def native_library(folder: str) -> ctypes.CDLL | None:
    """benchmarks/native_gemm.cc built for this CPU into ``folder``, or None without a C++ compiler."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return None
    library = Path(folder) / "native_gemm.so"
    command = [compiler, "-march=native", "-O3", "-std=c++17", "-shared", "-fPIC", str(NATIVE_SOURCE), "-o"]
    subprocess.run([*command, str(library), "-lpthread"], check=True, capture_output=True)
    native = ctypes.CDLL(str(library))
    native.native_gemm_row_block.restype = ctypes.c_int64
    native.native_gemm_seconds.restype = ctypes.c_double
    native.native_gemm_seconds.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    native.native_vector_floats.restype = ctypes.c_int
    native.native_fma_peak.restype = ctypes.c_double
    native.native_fma_peak.argtypes = [ctypes.c_int, ctypes.c_int64]
    native.native_bf16_dot_peak.restype = ctypes.c_double
    native.native_bf16_dot_peak.argtypes = [ctypes.c_int, ctypes.c_int64]
    return native


def native_rate(native: ctypes.CDLL, shape, threads: int, repeats: int) -> float:
    """GFLOP/s of the plain blocked GEMM, best of ``repeats`` calls after a warm-up, checked against numpy."""
    m, k, n = shape
    m -= m % (native.native_gemm_row_block() * threads)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), np.float32)
    pointers = tuple(array.ctypes.data for array in (a, b, c))
    time.sleep(SETTLE_SECONDS)
    seconds = [native.native_gemm_seconds(*pointers, m, k, n, threads) for _ in range(repeats + 1)][1:]
    rows = slice(0, m, 97)
    expected = a[rows].astype(np.float64) @ b.astype(np.float64)
    if not np.allclose(c[rows], expected, rtol=1e-4, atol=1e-3 * np.sqrt(k)):
        raise RuntimeError(f"native GEMM {shape}: wrong product")
    return 2 * m * k * n / min(seconds) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per rate (best is kept; at least 5)")
    args = parser.parse_args()
    repeats = max(args.repeats, 5)
    print(f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as folder:
        native = native_library(folder)
        if native is not None:
            peak = max(native.native_fma_peak(threads, 200_000_000) for _ in range(3))
            measured = f"{peak:.0f} GFLOP/s (best of 3)" if peak > 0 else "not measured (x86-64 with FMA only)"
            floats = native.native_vector_floats()
            print(f"float32 multiply-add peak, {floats}-float vectors, {threads} threads: {measured}")
            peak = max(native.native_bf16_dot_peak(threads, 200_000_000) for _ in range(3))
            measured = f"{peak:.0f} GFLOP/s (best of 3)" if peak > 0 else "not measured (no AVX-512 BF16)"
            print(f"bfloat16 dot-product peak (vdpbf16ps, float32 sums), {threads} threads: {measured}")
        print("| shape | XLA fp32 GF/s | torch fp32 GF/s | native fp32 GF/s | XLA bf16→fp32 GF/s | XLA bf16→bf16 GF/s "
              "| torch bf16 GF/s |\n|---|---|---|---|---|---|---|")  # fmt: skip
        for name, shape in SHAPES.items():
            row = (
                jax_rate(shape, jnp.float32, repeats),
                torch_rate(shape, torch.float32, repeats),
                native_rate(native, shape, threads, repeats) if native is not None else float("nan"),
                jax_rate(shape, jnp.bfloat16, repeats),
                jax_rate(shape, jnp.bfloat16, repeats, output_dtype=jnp.bfloat16),
                torch_rate(shape, torch.bfloat16, repeats),
            )
            print(f"| {name} | " + " | ".join(f"{rate:.0f}" for rate in row) + " |", flush=True)


if __name__ == "__main__":
    main()
