"""One training step under different model settings, beside fair-esm's, alternating in one process.

Each ``--variant KEY=VALUE`` replaces one field of the model config (``scan_layers=False``,
``remat_policy=dots_no_batch``, ...) or switches one part of the step away from its default:

- ``bytes=N`` sets the per-head attention loop's ``PER_HEAD_STEP_BYTES``;
- ``cpu_attention=0`` or ``=1`` compiles the step with the fused C++ attention kernels off or on
  (``ESM_JAX_CPU_ATTENTION``);
- ``gelu=autodiff`` differentiates the feed-forward GELU with JAX's autodiff (``gelu=custom``: its hand-written
  gradient, inside the fused GELU → second-product gradient);
- ``feed_forward=separate`` gives GELU and the second product their own gradients, each keeping its input
  (``feed_forward=fused``: one gradient keeping GELU's input alone);
- ``dense_gradient=autodiff`` differentiates the dense layers' products with autodiff (``=custom``);
- ``layer_norm=autodiff`` differentiates LayerNorm with autodiff (``=custom``);
- ``norm_products=separate`` gives each LayerNorm and the products after it their own gradients, LayerNorm's
  output kept for the products' (``norm_products=fused``: one gradient that rebuilds it from the normalised input);
- ``views=kept`` keeps each layer's weight slices and the attention context's reshape for the backward pass
  (``views=taken_again``: sliced and reshaped again from arrays the backward has anyway);
- ``last_layer_gradient=padded`` adds the last layer's weight gradient to the other layers' as a zero-padded
  stack (``=in_place``: into the stack's last slice);
- ``gradient_mean=divided`` divides the gradients by the number of targets after the backward pass
  (``=seeded``: the backward pass starts from one over it);
- ``clip=optax`` clips the gradients with ``optax.clip_by_global_norm`` (``=scalar``: esm-jax's, one product);
- ``kernel_gradient=by_width`` takes a dense kernel's gradient as (d_outputᵀ · inputs)ᵀ whenever its input is
  wider than its output (``=by_size``: whichever form transposes fewer floats, see ``layers.kernel_gradient``).

A variant may join several settings with commas (``layer_norm=autodiff,views=kept``). The variants' steps share
one training state, each step taking the state the last one left. Every round times fair-esm's step once
(``--without-fair-esm``: not at all, for shapes where its training state does not fit beside esm-jax's) and
each variant's once, each round starting with the next step in turn (at the ESM-2 150M shape the step timed right
after fair-esm's ran slower); the table gives best and median milliseconds and the median tokens/s.

    python benchmarks/train_variants.py --variant scan_layers=True scan_layers=False
    python benchmarks/train_variants.py --variant remat_policy=none remat_policy=dots_no_batch --rounds 4
    python benchmarks/train_variants.py --variant cpu_attention=1 cpu_attention=0 --rounds 7
    python benchmarks/train_variants.py --variant gelu=custom gelu=autodiff --rounds 7
    python benchmarks/train_variants.py --variant layer_norm=custom layer_norm=autodiff --rounds 7
    python benchmarks/train_variants.py --variant feed_forward=fused feed_forward=separate,layer_norm=autodiff
    python benchmarks/train_variants.py --model esm1b_t33_650M_UR50S --rows 1 --length 512 --without-fair-esm \
        --variant clip=scalar clip=optax
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from pathlib import Path

import jax
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import train_throughput  # noqa: E402
from benchmarks.forward_throughput import reference_model  # noqa: E402
from benchmarks.settled import settled_run  # noqa: E402
from esm_jax.host_allocator import allocator_setting  # noqa: E402
from esm_jax.model import attention_kernels, block, esm, layers  # noqa: E402
from esm_jax.train import optimizer, step  # noqa: E402


def _config_with(key: str, value: str, base):
    parsed = {"True": True, "False": False}.get(value, value)
    return lambda name: base(name).replace(**{key: parsed})


def _separate_norm_products(norm, linears, x):
    normed = norm(x)
    return tuple(linear(normed) for linear in linears)


def _separate_feed_forward(gelu):
    return lambda linear, pre_activation: linear(gelu(pre_activation))


def _padded_last_layer(stacked):
    return stacked, jax.tree.map(lambda values: values[-1], stacked)


def _divided_gradients(loss_sums, params, scale):
    loss_sum, pullback, aux = jax.vjp(loss_sums, params, has_aux=True)
    (grads,) = pullback(jax.numpy.ones_like(loss_sum))
    count = 1.0 / scale
    return (loss_sum, aux), jax.tree.map(lambda g: g / count, grads)


def _transposes_result_by_width(input_shape, width_out):
    """The rule before ``7b86cfb``: the result transposed for every input wider than its output, whatever the tokens."""
    return input_shape[-1] > width_out


# For each switch KEY, the (module, attribute) it replaces and the replacement for each VALUE.
_SWITCHES = {
    "gelu": (block, "gelu_then_dense", {"custom": None, "autodiff": _separate_feed_forward(layers.gelu.fun)}),
    "feed_forward": (block, "gelu_then_dense", {"fused": None, "separate": _separate_feed_forward(layers.gelu)}),
    "dense_gradient": (layers, "dense_product", {"custom": None, "autodiff": jax.lax.dot_general}),
    "norm_products": (block, "layer_norm_then_dense", {"fused": None, "separate": _separate_norm_products}),
    "layer_norm": (layers, "layer_norm", {"custom": None, "autodiff": layers.layer_norm.fun}),  # .fun: no VJP
    "views": (esm, "_save_all_but_views", {"taken_again": None, "kept": jax.checkpoint_policies.everything_saveable}),
    "last_layer_gradient": (esm, "_stack_and_last_layer", {"in_place": None, "padded": _padded_last_layer}),
    "gradient_mean": (step, "_scaled_gradients", {"seeded": None, "divided": _divided_gradients}),
    "clip": (optimizer, "clip_by_global_norm", {"scalar": None, "optax": optax.clip_by_global_norm}),
    "kernel_gradient": (layers, "transposes_result", {"by_size": None, "by_width": _transposes_result_by_width}),
}


@contextlib.contextmanager
def _switched(key: str, value: str):
    """The step's code with switch ``key`` set to ``value`` (a model-config field otherwise), restored afterwards."""
    default_bytes, default_config = attention_kernels.PER_HEAD_STEP_BYTES, train_throughput.named_config
    replaced = None
    if key == "bytes":
        attention_kernels.PER_HEAD_STEP_BYTES = int(value)
    elif key == "cpu_attention":
        os.environ["ESM_JAX_CPU_ATTENTION"] = value
    elif key in _SWITCHES:
        module, attribute, choices = _SWITCHES[key]
        replaced = (module, attribute, getattr(module, attribute))
        if choices[value] is not None:
            setattr(module, attribute, choices[value])
    else:
        train_throughput.named_config = _config_with(key, value, default_config)
    try:
        yield
    finally:
        attention_kernels.PER_HEAD_STEP_BYTES, train_throughput.named_config = default_bytes, default_config
        os.environ.pop("ESM_JAX_CPU_ATTENTION", None)
        if replaced is not None:
            setattr(*replaced)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="esm2_t12_35M_UR50D")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument(
        "--variant",
        nargs="+",
        required=True,
        help="KEY=VALUE[,KEY=VALUE...]: model-config fields or switches above",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--without-fair-esm", action="store_true", help="time the variants alone")
    args = parser.parse_args()
    reference = reference_model(args.model)
    batch = train_throughput._batch(args.rows, args.length)
    steps, shared = {}, {}
    for variant in args.variant:
        with contextlib.ExitStack() as switches:
            for setting in variant.split(","):
                switches.enter_context(_switched(*setting.split("=", 1)))
            steps[variant] = train_throughput._jax_step(reference, args.model, batch, shared)
            steps[variant](), steps[variant]()  # compiled, and again once the donated state comes back
    if not args.without_fair_esm:
        steps["fair-esm"] = train_throughput._torch_step(reference, batch)
        steps["fair-esm"]()
    times, names = {name: [] for name in steps}, list(steps)
    for round_index in range(args.rounds):
        first = round_index % len(names)  # rounds start in turn with each step: the one after fair-esm's may be slower
        for name in names[first:] + names[:first]:
            times[name].append(settled_run(steps[name])[0])
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
