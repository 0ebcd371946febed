"""One training step under different model settings, beside fair-esm's, alternating in one process.

Each ``--variant KEY=VALUE`` replaces one field of the model config (``scan_layers=False``,
``remat_policy=dots_no_batch``, ...); ``bytes=N`` instead sets the per-head attention loop's
``PER_HEAD_STEP_BYTES``, ``cpu_attention=0`` or ``=1`` compiles the step with the fused C++ attention
kernels off or on (``ESM_JAX_CPU_ATTENTION``), and ``gelu=autodiff`` and ``dense_gradient=autodiff``
differentiate the feed-forward GELU and the dense layers' products with JAX's autodiff instead of their
hand-written gradients (``gelu=custom``, ``dense_gradient=custom``). Every round times fair-esm's step once
and each variant's once; the table gives best and median milliseconds and the median tokens/s.

    python benchmarks/train_variants.py --variant scan_layers=True scan_layers=False
    python benchmarks/train_variants.py --variant remat_policy=none remat_policy=dots_no_batch --rounds 4
    python benchmarks/train_variants.py --variant cpu_attention=1 cpu_attention=0 --rounds 7
    python benchmarks/train_variants.py --variant gelu=custom gelu=autodiff --rounds 7
    python benchmarks/train_variants.py --variant dense_gradient=custom dense_gradient=autodiff --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import train_throughput  # noqa: E402
from benchmarks.forward_throughput import reference_model  # noqa: E402
from benchmarks.settled import settled_run  # noqa: E402
from esm_jax.host_allocator import allocator_setting  # noqa: E402
from esm_jax.model import attention_kernels, block, layers, named_config  # noqa: E402


def _config_with(key: str, value: str):
    parsed = {"True": True, "False": False}.get(value, value)
    return lambda name: named_config(name).replace(**{key: parsed})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="esm2_t12_35M_UR50D")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument(
        "--variant",
        nargs="+",
        required=True,
        help="KEY=VALUE model-config fields, bytes=N, cpu_attention=0|1, gelu= or dense_gradient=custom|autodiff",
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    reference = reference_model(args.model)
    batch = train_throughput._batch(args.rows, args.length)
    default_bytes, default_gelu = attention_kernels.PER_HEAD_STEP_BYTES, block.gelu
    default_product = layers.dense_product
    steps = {}
    for variant in args.variant:
        key, value = variant.split("=", 1)
        if key == "bytes":
            attention_kernels.PER_HEAD_STEP_BYTES = int(value)
        elif key == "cpu_attention":
            os.environ["ESM_JAX_CPU_ATTENTION"] = value
        elif key == "gelu":
            block.gelu = {"custom": default_gelu, "autodiff": default_gelu.fun}[value]  # .fun: without its VJP
        elif key == "dense_gradient":
            layers.dense_product = {"custom": default_product, "autodiff": jax.lax.dot_general}[value]
        else:
            train_throughput.named_config = _config_with(key, value)
        steps[variant] = train_throughput._jax_step(reference, args.model, batch)
        steps[variant](), steps[variant]()  # compiled, and again once the donated state comes back
        attention_kernels.PER_HEAD_STEP_BYTES, block.gelu = default_bytes, default_gelu
        layers.dense_product = default_product
        os.environ.pop("ESM_JAX_CPU_ATTENTION", None)
        train_throughput.named_config = named_config
    steps["fair-esm"] = train_throughput._torch_step(reference, batch)
    steps["fair-esm"]()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(settled_run(step)[0])
    tokens = args.rows * args.length
    print(
        f"{args.model}, {args.rows} × {args.length}, load {os.getloadavg()[0]:.2f}, {args.rounds} rounds; "
        f"malloc: {allocator_setting()}"
    )
    print("| variant | best ms | median ms | tok/s |\n|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {1e3 * min(values):.0f} | {1e3 * median:.0f} | {tokens / median:.0f} |")


if __name__ == "__main__":
    main()
