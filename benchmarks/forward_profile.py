"""Where the time of one esm-jax forward goes on this machine: XLA's ops, summed from a JAX profiler trace.

Builds a released model shape with random weights, runs ``model(tokens, repr_layers=[last])`` until
compiled, times a few calls, then traces ``--calls`` more and prints, per XLA op (fusion), the milliseconds
per forward, how often it runs per forward, its output shape and the JAX operation it came from (from the
compiled HLO), the largest first. Ops on the two cores overlap and the runtime's own spans (thread-pool
waits, the executor) are listed too, so the column does not sum to the wall time; Python frames are left
out. Matrix products appear as ``ynn_fusion.N`` (YNNPACK). ``--hlo FILE`` also writes the compiled HLO.
Run it on an idle machine.

    python benchmarks/forward_profile.py                                  # ESM-2 t12, 4 × 512, float32
    python benchmarks/forward_profile.py --model esm2_t33_650M_UR50D --batch 2 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from esm_jax import build_model
from esm_jax.model import named_config
from esm_jax.model.esm import _compiled_forward


def op_milliseconds(trace_dir: Path, calls: int) -> list[tuple[str, float, int]]:
    """(op name, ms per call, occurrences per call) from the Perfetto trace in ``trace_dir``, largest first."""
    path = sorted(trace_dir.glob("**/*.json.gz"))[-1]
    totals, counts = collections.Counter(), collections.Counter()
    for event in json.loads(gzip.decompress(path.read_bytes()))["traceEvents"]:
        if event.get("ph") == "X" and "dur" in event:
            totals[event["name"]] += event["dur"]
            counts[event["name"]] += 1
    return [(name, micros / calls / 1e3, counts[name] // calls) for name, micros in totals.most_common()]


def op_origins(hlo_text: str) -> dict[str, str]:
    """Each HLO instruction's output shape and the last part of the JAX operation name it carries, if any, and
    a custom call's target (which of esm-jax's FFI kernels it runs)."""
    origins = {}
    for match in re.finditer(r"^\s*%(\S+) = (\S+) (.*)$", hlo_text, re.M):
        name, shape, rest = match.groups()
        operation = re.search(r'op_name="([^"]*)"', rest)
        origins[name] = f"{shape} {operation.group(1).rsplit('/', 1)[-1]}" if operation else shape
        target = re.search(r'custom_call_target="([^"]*)"', rest)
        origins[name] += f" {target.group(1)}" if target else ""
    return origins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="esm2_t12_35M_UR50D", help="released model shape (random weights)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512, help="tokens per row, BOS and EOS included")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--calls", type=int, default=3, help="forwards traced")
    parser.add_argument("--top", type=int, default=30, help="ops listed")
    parser.add_argument("--hlo", type=Path, help="write the compiled HLO of the forward here")
    args = parser.parse_args()

    config = named_config(args.model).replace(compute_dtype=args.dtype)
    model = build_model(config, seed=0)
    tokens = np.random.default_rng(0).integers(4, 24, size=(args.batch, args.length)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = 0, 2
    last = config.num_layers

    def forward():
        return jax.block_until_ready(model(tokens, repr_layers=[last]))

    forward(), forward()
    seconds = []
    for _ in range(5):
        start = time.perf_counter()
        forward()
        seconds.append(time.perf_counter() - start)
    print(f"{args.model}, {args.batch} × {args.length}, {args.dtype}: forward best {min(seconds) * 1e3:.0f} ms, "
          f"median {statistics.median(seconds) * 1e3:.0f} ms")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(args.calls):
                forward()
        rows = [row for row in op_milliseconds(Path(folder), args.calls) if not row[0].startswith("$")]
    graphdef, state = nnx.split(model)
    hlo = _compiled_forward.lower(graphdef, state, tokens, None, (last,), False, False, False).compile().as_text()
    origins = op_origins(hlo)
    print("| op | ms per forward | per forward | output, from |\n|---|---|---|---|")
    for name, milliseconds, count in rows[: args.top]:
        print(f"| {name[:60]} | {milliseconds:.1f} | {count} | {origins.get(name, '')} |")
    if args.hlo:
        args.hlo.write_text(hlo)
        print(f"compiled HLO written to {args.hlo}")


if __name__ == "__main__":
    main()
