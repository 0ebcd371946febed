"""The fused CPU attention kernel alone: this checkout's source against the source at earlier git revisions.

Builds ``esm_jax/model/cpu_attention.cc`` as it is now and as it was at each ``--revisions`` entry (the
same compiler and flags as esm-jax's own build), registers each under its own FFI target, and times one
attention call (queries, keys, values of ``--shape`` B,T,H,D, rotary tables, no padding) per build per
round, alternating, so every build runs under the same conditions. Prints the largest difference of each
build's context and log-sum-exp from this checkout's, and per build the best and median milliseconds and
GFLOP/s (four FLOPs per query, key and head dimension: two products). Run it on an idle machine.

    python benchmarks/cpu_attention_builds.py --revisions 7c6dcbc
    python benchmarks/cpu_attention_builds.py --revisions 7c6dcbc --shape 2,512,20,64 --rounds 40
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from esm_jax.model import cpu_attention
from esm_jax.model.rotary import default_inverse_frequencies, rotation_tables

SOURCE_IN_REPOSITORY = "esm_jax/model/cpu_attention.cc"


def _register(name: str, source: Path, folder: Path) -> str:
    """Build ``source`` into ``folder``, register it, and return its forward's FFI target name."""
    library = folder / f"{name}.so"
    command = cpu_attention.build_command(cpu_attention.compiler(), library, source=source)
    subprocess.run(command, check=True, capture_output=True)
    target = f"esm_jax_attention_{name}"
    cpu_attention.register(ctypes.cdll.LoadLibrary(str(library)), target)
    return target + "_forward"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--revisions", nargs="+", required=True, help="git revisions whose kernel source to time")
    parser.add_argument("--shape", default="4,512,20,24", help="B,T,H,D (default: the ESM-2 t12 forward row)")
    parser.add_argument("--rounds", type=int, default=80, help="alternating timed rounds (default: 80)")
    args = parser.parse_args()
    batch, length, heads, head_dim = (int(part) for part in args.shape.split(","))
    root = Path(__file__).resolve().parent.parent
    rng = np.random.default_rng(0)
    query, key, value = (jnp.asarray(rng.standard_normal((batch, length, heads * head_dim)), jnp.float32)
                         for _ in range(3))  # fmt: skip
    row_keys = jnp.zeros((batch, length), jnp.int32)
    cos, sin = (table[0] for table in rotation_tables(default_inverse_frequencies(head_dim), None, length))
    shapes = (jax.ShapeDtypeStruct(query.shape, jnp.float32),
              jax.ShapeDtypeStruct((batch, heads, length), jnp.float32))  # fmt: skip
    calls = {}
    with tempfile.TemporaryDirectory() as folder:
        sources = {"checkout": cpu_attention.SOURCE}
        for revision in args.revisions:
            text = subprocess.run(["git", "-C", str(root), "show", f"{revision}:{SOURCE_IN_REPOSITORY}"],
                                  check=True, capture_output=True, text=True).stdout  # fmt: skip
            sources[revision] = Path(folder) / f"{revision}.cc"
            sources[revision].write_text(text)
        for index, (name, source) in enumerate(sources.items()):
            target = _register(f"build{index}", source, Path(folder))
            call = jax.ffi.ffi_call(target, shapes)
            calls[name] = jax.jit(lambda q, k, v, call=call: call(q, k, v, row_keys, cos, sin, packed=False,
                                                                  heads=heads))  # fmt: skip
            jax.block_until_ready(calls[name](query, key, value))
    reference = calls["checkout"](query, key, value)
    print(f"shape {args.shape}, {args.rounds} rounds, load {os.getloadavg()[0]:.2f}")
    for name, call in calls.items():
        context, log_sum_exp = call(query, key, value)
        print(f"{name}: max |Δcontext| {float(jnp.abs(context - reference[0]).max()):.1e}, "
              f"max |Δlog-sum-exp| {float(jnp.abs(log_sum_exp - reference[1]).max()):.1e}")  # fmt: skip
    times = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call(query, key, value))
            times[name].append(time.perf_counter() - start)
    flops = 4 * batch * heads * length * length * head_dim
    print("| kernel source | best ms | median ms | GFLOP/s (median) |\n|---|---|---|---|")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"| {name} | {1e3 * min(seconds):.2f} | {1e3 * median:.2f} | {flops / median / 1e9:.0f} |")


if __name__ == "__main__":
    main()
