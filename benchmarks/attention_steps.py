"""CPU attention alone: the fused C++ kernels, XLA's per-head loop at several step sizes, and PyTorch.

``per_head`` attention runs in float32 through the fused C++ forward and backward kernels
(:mod:`esm_jax.model.cpu_attention`); without them (no compiler, ``ESM_JAX_CPU_ATTENTION=0``) it loops over
(sequence, head) pairs in XLA, where each loop step costs a fixed overhead and the scores of the pairs it
computes together should stay in cache: ``PER_HEAD_STEP_BYTES`` bounds the float32 scores of one step. This
times the forward and forward+backward of the fused kernels and of the XLA loop at several bounds, beside
fair-esm's attention core in PyTorch (``bmm``, ``softmax``, ``bmm``, float32), on the shapes of the CPU
benchmarks (ESM-2 t12 training and scoring rows, t12 and 650M forward rows). Each round times every variant
once, ten calls back to back; the table gives medians of the mean call.

    python benchmarks/attention_steps.py
    python benchmarks/attention_steps.py --step-bytes 1 1048576 2097152 4194304 --rounds 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from esm_jax.model import attention_kernels, cpu_attention

SHAPES = ((4, 256, 20, 24), (3, 288, 20, 24), (4, 512, 20, 24), (2, 512, 20, 64), (8, 128, 20, 24))


def _timed(call, repeats: int = 10) -> float:
    """Seconds per call over ``repeats`` calls back to back, as a model's layers make them.

    A single millisecond-scale call measures mostly what ran before it: after an idle pause the cores
    wake slowly, and right after a PyTorch call its OpenMP threads still spin.
    """
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def jax_calls(shape: tuple, step_bytes: int | None) -> tuple:
    """Compiled forward and gradient calls of ``per_head``: fused kernels (``step_bytes`` None) or XLA's loop."""
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(3))
    mask = jnp.zeros(shape[:2], bool)
    os.environ["ESM_JAX_CPU_ATTENTION"] = "1" if step_bytes is None else "0"
    if step_bytes is not None:
        attention_kernels.PER_HEAD_STEP_BYTES = step_bytes

    def forward(q, k, v):
        return attention_kernels.per_head_attention(q, k, v, None, mask, jnp.float32)

    gradient = jax.grad(lambda q, k, v: jnp.sum(forward(q, k, v) ** 2), argnums=(0, 1, 2))
    compiled = [jax.jit(f).lower(q, k, v).compile() for f in (forward, gradient)]
    os.environ.pop("ESM_JAX_CPU_ATTENTION")
    return tuple((lambda f=f: jax.block_until_ready(f(q, k, v))) for f in compiled)


def torch_calls(shape: tuple) -> tuple:
    """fair-esm's attention core on the same shape: (B·H, T, D) batched products and a float32 softmax."""
    batch, length, heads, dim = shape
    q, k, v = (torch.randn(batch * heads, length, dim, requires_grad=True) for _ in range(3))

    def forward():
        with torch.no_grad():
            return torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1), v)

    def both():
        out = torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1), v)
        (out**2).sum().backward()

    return forward, both


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step-bytes", type=int, nargs="+", default=[1, 1 << 20, 2 << 20, 4 << 20, 8 << 20])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"load {os.getloadavg()[0]:.2f}; ms forward / forward+backward, median of {args.rounds}")  # fmt: skip
    print(f"fused column: {cpu_attention.describe()}")
    loops = " | ".join(f"XLA loop, {b >> 10} KiB" for b in args.step_bytes)
    print(f"| B, T, H, D | PyTorch | fused | {loops} |")
    print("|---" * (3 + len(args.step_bytes)) + "|")
    default = attention_kernels.PER_HEAD_STEP_BYTES
    for shape in SHAPES:
        variants = {"torch": torch_calls(shape), "fused": jax_calls(shape, None)}
        variants |= {size: jax_calls(shape, size) for size in args.step_bytes}
        attention_kernels.PER_HEAD_STEP_BYTES = default
        times = {name: ([], []) for name in variants}
        for calls in variants.values():
            calls[0](), calls[1]()
        for _ in range(args.rounds):
            for name, calls in variants.items():
                for kind in (0, 1):
                    times[name][kind].append(_timed(calls[kind]))
        cells = [
            f"{1e3 * statistics.median(fwd):.1f} / {1e3 * statistics.median(both):.1f}" for fwd, both in times.values()
        ]
        print(f"| {', '.join(map(str, shape))} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
