"""The fused CPU attention kernels: this checkout's source against the source at earlier git revisions.

Builds ``esm_jax/model/cpu_attention.cc`` as it is now and as it was at each ``--revisions`` entry (the
same compiler and flags as esm-jax's own build; ``--arch`` names another ``-march``), registers each under
its own FFI target, and times one attention call (queries, keys, values of ``--shape`` B,T,H,D, rotary
tables, no padding) per build per round, alternating, so every build runs under the same conditions; with
``--backward``, also one call of each build's backward kernel (on this checkout's forward outputs and a
random context gradient). Prints the largest difference of each build's outputs from this checkout's, and
per build and pass the best and median milliseconds and GFLOP/s (FLOPs per query, key and head dimension:
four in the forward's two products, ten in the backward's four and its recomputed scores). With
``--model``, also times that model's whole jitted forward (``repr_layers=[last]``, random weights) at
``--shape``'s B and T with each build's kernels, alternating, and prints how many kernel calls each
compiled forward holds. Run it on an idle machine.

    python benchmarks/cpu_attention_builds.py --revisions 7c6dcbc
    python benchmarks/cpu_attention_builds.py --revisions 7c6dcbc --shape 2,512,20,64 --rounds 40
    python benchmarks/cpu_attention_builds.py --revisions 7c6dcbc --backward
    python benchmarks/cpu_attention_builds.py --revisions 7c6dcbc --arch x86-64-v3   # AVX2 builds on any x86-64-v3 CPU
    python benchmarks/cpu_attention_builds.py --revisions 7c6dcbc --model esm2_t12_35M_UR50D --model-rounds 15
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
from flax import nnx

from esm_jax.model import build_model, cpu_attention, named_config
from esm_jax.model.rotary import default_inverse_frequencies, rotation_tables

SOURCE_IN_REPOSITORY = "esm_jax/model/cpu_attention.cc"


def _register(name: str, source: Path, folder: Path, arch: str) -> str:
    """Build ``source`` into ``folder``, register it, and return its FFI target name (without the pass suffix)."""
    library = folder / f"{name}.so"
    command = cpu_attention.build_command(cpu_attention.compiler(), library, arch=arch, source=source)
    subprocess.run(command, check=True, capture_output=True)
    target = f"esm_jax_attention_{name}"
    cpu_attention.register(ctypes.cdll.LoadLibrary(str(library)), target)
    return target


def model_forwards(name: str, batch: int, length: int, targets: dict[str, str]) -> tuple[dict, tuple]:
    """Each build's compiled forward of model ``name`` (random weights) on (batch, length) tokens, and its arguments.

    JAX reuses traces of the model's layers, so each build's forward is traced afresh after clearing them;
    the count of its kernel calls printed here shows which kernels each compiled forward runs.
    """
    model = build_model(name)
    graphdef, state = nnx.split(model)
    layers = model.config.num_layers
    tokens = np.random.default_rng(0).integers(4, 24, size=(batch, length)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = 0, 2
    compiled, default_target = {}, cpu_attention.TARGET
    for build, target in targets.items():
        jax.clear_caches()
        cpu_attention.TARGET = target
        try:
            forward = jax.jit(lambda state, tokens: nnx.merge(graphdef, state).forward(
                tokens, (layers,), False, False, lean=False, segment_ids=None))  # fmt: skip
            compiled[build] = forward.lower(state, tokens).compile()
        finally:
            cpu_attention.TARGET = default_target
        print(f"{build}: {compiled[build].as_text().count(target + '_forward')} kernel calls in the forward")
    return compiled, (state, tokens)


def _timed(calls: dict, arguments: tuple, rounds: int) -> dict[str, list[float]]:
    """Seconds of each call per round, the calls alternating within every round."""
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call(*arguments))
            times[name].append(time.perf_counter() - start)
    return times


def _print_table(title: str, times: dict[str, list[float]], flops: float) -> None:
    print(f"{title}\n| kernel source | best ms | median ms | GFLOP/s (median) |\n|---|---|---|---|")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"| {name} | {1e3 * min(seconds):.2f} | {1e3 * median:.2f} | {flops / median / 1e9:.0f} |")


def _largest_differences(outputs, reference) -> str:
    return ", ".join(f"{float(jnp.abs(out - ref).max()):.1e}" for out, ref in zip(outputs, reference, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--revisions", nargs="+", required=True, help="git revisions whose kernel source to time")
    parser.add_argument("--shape", default="4,512,20,24", help="B,T,H,D (default: the ESM-2 t12 forward row)")
    parser.add_argument("--rounds", type=int, default=80, help="alternating timed rounds (default: 80)")
    parser.add_argument("--backward", action="store_true", help="also time the backward kernels")
    parser.add_argument("--arch", default="native", help="-march of every build (x86-64-v3: the AVX2 build)")
    parser.add_argument("--model", help="also time this model's whole forward with each build, e.g. esm2_t12_35M_UR50D")
    parser.add_argument("--model-rounds", type=int, default=10, help="alternating rounds of --model (default: 10)")
    args = parser.parse_args()
    batch, length, heads, head_dim = (int(part) for part in args.shape.split(","))
    root = Path(__file__).resolve().parent.parent
    rng = np.random.default_rng(0)
    query, key, value, d_context = (jnp.asarray(rng.standard_normal((batch, length, heads * head_dim)), jnp.float32)
                                    for _ in range(4))  # fmt: skip
    row_keys = jnp.zeros((batch, length), jnp.int32)
    cos, sin = (table[0] for table in rotation_tables(default_inverse_frequencies(head_dim), None, length))
    rows = jax.ShapeDtypeStruct(query.shape, jnp.float32)
    forward_shapes = (rows, jax.ShapeDtypeStruct((batch, heads, length), jnp.float32))
    forwards, backwards, targets = {}, {}, {}
    with tempfile.TemporaryDirectory() as folder:
        sources = {"checkout": cpu_attention.SOURCE}
        for revision in args.revisions:
            text = subprocess.run(["git", "-C", str(root), "show", f"{revision}:{SOURCE_IN_REPOSITORY}"],
                                  check=True, capture_output=True, text=True).stdout  # fmt: skip
            sources[revision] = Path(folder) / f"{revision}.cc"
            sources[revision].write_text(text)
        for index, (name, source) in enumerate(sources.items()):
            target = targets[name] = _register(f"build{index}", source, Path(folder), args.arch)
            call = jax.ffi.ffi_call(target + "_forward", forward_shapes)
            forwards[name] = jax.jit(lambda q, k, v, call=call: call(q, k, v, row_keys, cos, sin, packed=False,
                                                                     heads=heads))  # fmt: skip
            if args.backward:
                call = jax.ffi.ffi_call(target + "_backward", (rows,) * 3)
                backwards[name] = jax.jit(
                    lambda q, k, v, c, lse, d_c, call=call: call(q, k, v, row_keys, cos, sin, c, lse, d_c,
                                                                  packed=False, heads=heads))  # fmt: skip
    print(f"shape {args.shape}, {args.rounds} rounds, load {os.getloadavg()[0]:.2f}")
    arguments = (query, key, value)
    reference = forwards["checkout"](*arguments)
    for name, call in forwards.items():
        print(f"{name}: max |Δcontext|, |Δlog-sum-exp| {_largest_differences(call(*arguments), reference)}")
    backward_arguments = (*arguments, *reference, d_context)
    if args.backward:
        gradients = backwards["checkout"](*backward_arguments)
        for name, call in backwards.items():
            print(f"{name}: max |Δ∂queries|, |Δ∂keys|, |Δ∂values| "
                  f"{_largest_differences(call(*backward_arguments), gradients)}")  # fmt: skip
    flops = 4 * batch * heads * length * length * head_dim
    _print_table("forward", _timed(forwards, arguments, args.rounds), flops)
    if args.backward:
        _print_table("backward", _timed(backwards, backward_arguments, args.rounds), 2.5 * flops)
    if args.model:
        models, model_arguments = model_forwards(args.model, batch, length, targets)
        model_flops = named_config(args.model).forward_flops_per_token(length) * batch * length
        _print_table(f"{args.model} forward, {batch} × {length}", _timed(models, model_arguments, args.model_rounds),
                     model_flops)  # fmt: skip


if __name__ == "__main__":
    main()
