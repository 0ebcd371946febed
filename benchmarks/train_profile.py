"""Where the time of one esm-jax training step goes on this machine: XLA's ops, summed from a JAX profiler trace.

Runs the jitted float32 training step of ``train_throughput.py`` (forward, backward and AdamW, layers scanned;
ESM-2 t12 at 4 × 256 by default) until compiled, times a few steps, traces ``--steps`` more and prints the size of
XLA's temporary buffer for one step, the milliseconds per step of each kind of op (matrix products, the fused
attention kernels, buffers filled with a constant, writes into and reads from the layer scan's stacked buffers,
copies, other fusions), then the largest ops with their output shape and the JAX operation each came from, and
counts the page faults per step (see ``esm_jax/host_allocator.py``). Ops on the two cores may overlap, so the
kinds need not sum to the step's wall time; XLA's plain ``dot`` ops (not YNNPACK's) run asynchronously and their
events may cover only part of their run. Run it on an idle machine.

    python benchmarks/train_profile.py
    python benchmarks/train_profile.py --model esm2_t6_8M_UR50D --rows 16 --length 512
"""

from __future__ import annotations

import argparse
import collections
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.forward_profile import op_milliseconds, op_origins  # noqa: E402
from benchmarks.forward_throughput import reference_model  # noqa: E402
from benchmarks.settled import settled_run  # noqa: E402
from benchmarks.train_throughput import _batch, jax_step_and_hlo  # noqa: E402
from esm_jax.host_allocator import allocator_setting  # noqa: E402


def op_kind(name: str, origin: str) -> str:
    """The kind of an XLA op, from its name and the JAX operation it came from."""
    if name.startswith(("ynn_fusion", "dot")):
        return "matrix products"
    if name.startswith("ffi_call"):
        return "fused attention kernels"
    if name.startswith("wrapped_broadcast"):
        return "buffers filled with a constant"
    if "dynamic-update-slice" in name or "dynamic_update_slice" in origin:
        return "writes into stacked buffers"
    if "dynamic-slice" in name or "dynamic_slice" in origin:
        return "reads from stacked buffers"
    if name.startswith("copy"):
        return "copies and transposes"
    return "other fusions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="esm2_t12_35M_UR50D", help="released model shape")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--length", type=int, default=256, help="tokens per row")
    parser.add_argument("--steps", type=int, default=3, help="steps traced")
    parser.add_argument("--top", type=int, default=25, help="ops listed")
    args = parser.parse_args()
    step, compiled = jax_step_and_hlo(reference_model(args.model), args.model, _batch(args.rows, args.length))
    step(), step()  # compiled, and again once the donated state comes back
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = [settled_run(step, settle=0.0)[0] for _ in range(5)]  # back to back
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / len(seconds)
    print(f"{args.model}, {args.rows} × {args.length}, float32 training step: best {min(seconds) * 1e3:.0f} ms, "
          f"median {statistics.median(seconds) * 1e3:.0f} ms, {faults:,.0f} page faults per step; "
          f"malloc: {allocator_setting()}")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(args.steps):
                step()
        rows = op_milliseconds(Path(folder), args.steps)
    executable = compiled()
    origins = op_origins(executable.as_text())
    ops = [row for row in rows if not any(mark in row[0] for mark in ("::", " ", "(", "$"))]  # no runtime spans
    kinds = collections.Counter()
    for name, milliseconds, _ in ops:
        kinds[op_kind(name, origins.get(name, ""))] += milliseconds
    print(f"XLA temporary buffer per step: {executable.memory_analysis().temp_size_in_bytes / 1e6:,.0f} MB")
    print("| kind of op | ms per step |\n|---|---|")
    for kind, milliseconds in kinds.most_common():
        print(f"| {kind} | {milliseconds:.0f} |")
    print("| op | ms per step | per step | output, from |\n|---|---|---|---|")
    for name, milliseconds, count in ops[: args.top]:
        print(f"| {name[:60]} | {milliseconds:.1f} | {count} | {origins.get(name, '')} |")


if __name__ == "__main__":
    main()
