"""Inference readiness without a pod: compile a model's forward pass ahead of time for a TPU topology.

The forward ``esm-jax extract`` runs (:meth:`ESM.forward` with ``lean=True``: the last layer's
representations, no logits) is lowered and compiled for the chips of a TPU slice
(:func:`esm_jax.tpu_costs.tpu_slice`): the float32 parameters placed on the mesh by their
sharding rules, the batch's rows split over its batch axes, attention traced for the TPU (``auto``
is the splash kernel). XLA's memory analysis of that program gives each device's memory, its
arguments being the parameters (and the tokens). FLOPs and HBM bytes come from a twin compiled with
the layers unrolled and without collective-matmul loops, since XLA's cost analysis counts a loop
body once, plus the splash kernels' work, which XLA cannot see (:mod:`esm_jax.tpu_costs`).

The roofline time of one forward is the larger of FLOPs over a device's peak and bytes over its
HBM bandwidth; the tokens/s bound is the batch's tokens over that time. Collectives over the
chips' interconnect (an FSDP mesh gathers every layer's parameters) are not part of it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from esm_jax.mesh import batch_shard_count, batch_sharding, build_mesh
from esm_jax.model import ModelConfig, abstract_model, attention_kernels, named_config
from esm_jax.sharding import state_shardings, with_shardings
from esm_jax.tpu_costs import GIB, WITHOUT_COLLECTIVE_MATMUL_LOOPS, CompiledCosts, roofline_fields, tpu_slice

DEFAULT_LENGTH = 1024  # tokens per row, <cls> and <eos> included: the longest sequence ESM models were trained on


@dataclasses.dataclass(frozen=True)
class InferencePlanReport(CompiledCosts):
    """What one compiled forward over the batch needs and costs on each device of a TPU slice."""

    model: str
    parameters: int
    compute_dtype: str
    attention_impl: str  # the kernel the model's attention_impl resolves to on a TPU
    compiled_attention: str  # what the compiled program runs: "splash" (Mosaic custom calls) or "xla"
    splash_forward_calls: int  # layers unrolled
    parameter_gib: float  # per device, as are the memory figures
    model_flops_per_forward: float
    roofline_seconds: float  # one forward over the batch
    tokens_per_second_bound: float  # the whole slice
    mfu_bound: float

    def lines(self) -> list[str]:
        rows, length = self.batch_shape
        shards = self.mesh["data"] * self.mesh["fsdp"]
        return [
            f"model {self.model}: {_count(self.parameters)} float32 parameters, products in {self.compute_dtype}; "
            "lean forward (the last layer's representations, as esm-jax extract runs it)",
            f"topology {self.topology}: {self.chips} chips ({self.devices} JAX devices) of {self.device_kind}, "
            f"mesh {self.mesh}",
            f"batch {rows} × {length} tokens ({rows * length:,} per forward, {rows // shards} "
            f"row{'s' if rows // shards > 1 else ''} per data×fsdp shard)",
            f"per-device memory: parameters {self.parameter_gib:.2f} GiB (of arguments {self.argument_gib:.2f} GiB), "
            f"temporaries {self.temporary_gib:.2f} GiB, outputs {self.output_gib:.2f} GiB, total "
            f"{self.total_gib:.2f} of {self.hbm_gib:.0f} GiB HBM ({'fits' if self.fits else 'DOES NOT FIT'})",
            f"attention {self.attention_impl}, compiled as {self.compiled_attention} ({self.splash_forward_calls} "
            f"splash forward calls); analytic attention-kernel FLOPs per device "
            f"{self.attention_kernel_flops_per_device:.3e}, HBM bytes {self.attention_kernel_bytes_per_device:.3e}",
            f"model FLOPs per forward {self.model_flops_per_forward:.3e}; compiled FLOPs per device "
            f"{self.compiled_flops_per_device:.3e} = XLA {self.xla_flops_per_device:.3e} + attention kernels",
            f"HBM bytes per device {self.bytes_per_device:.3e} = XLA {self.xla_bytes_per_device:.3e} "
            f"+ attention kernels",
            f"roofline forward time {self.roofline_seconds * 1e3:.1f} ms (FLOPs {self.flop_seconds * 1e3:.1f} ms, "
            f"HBM {self.byte_seconds * 1e3:.1f} ms; interconnect not counted) → bound "
            f"{self.tokens_per_second_bound:,.0f} tokens/s, MFU bound {self.mfu_bound:.1%}",
        ]


def plan_inference(
    model: str | ModelConfig,
    topology_name: str,
    mesh_sizes: Mapping[str, int],
    rows: int | None = None,
    length: int = DEFAULT_LENGTH,
    compute_dtype: str = "bfloat16",
) -> InferencePlanReport:
    """Compile the lean forward of ``model`` (a released name or a config) for ``topology_name`` and analyse it.

    ``rows`` defaults to one row per data×fsdp shard of the mesh; the batch is ``rows`` × ``length`` tokens.
    """
    name, config = (model, named_config(model)) if isinstance(model, str) else (_describe(model), model)
    config = config.replace(compute_dtype=compute_dtype)
    tpu = tpu_slice(topology_name)
    mesh = build_mesh(mesh_sizes, tpu.devices)
    rows = batch_shard_count(mesh) if rows is None else rows
    _check_batch(rows, length, mesh)
    state = _placed_state(config, mesh)[1]
    scanned = _compile_forward(config, mesh, rows, length)
    unrolled = _compile_forward(config.replace(scan_layers=False), mesh, rows, length, WITHOUT_COLLECTIVE_MATMUL_LOOPS)
    costs, calls = roofline_fields(scanned, unrolled, tpu)
    roofline = max(costs["flop_seconds"], costs["byte_seconds"])
    model_flops = config.forward_flops_per_token(length) * rows * length  # counts the LM head, which lean skips
    return InferencePlanReport(
        model=name,
        parameters=sum(leaf.size for leaf in jax.tree.leaves(state)),
        compute_dtype=compute_dtype,
        topology=topology_name,
        chips=tpu.chips,
        devices=len(tpu.devices),
        device_kind=tpu.device_kind,
        mesh=dict(mesh.shape),
        batch_shape=(rows, length),
        attention_impl=attention_kernels.resolve(config.attention_impl, "tpu"),
        compiled_attention="splash" if calls else "xla",
        splash_forward_calls=sum(call.phase == "fwd" for call in calls),
        parameter_gib=_bytes_per_device(state) / GIB,
        model_flops_per_forward=model_flops,
        roofline_seconds=roofline,
        tokens_per_second_bound=rows * length / roofline,
        **costs,
        mfu_bound=model_flops / (roofline * len(tpu.devices) * tpu.peak_flops),
    )


def _count(parameters: int) -> str:
    return f"{parameters / 1e9:.2f}B" if parameters >= 1e9 else f"{parameters / 1e6:.1f}M"


def _describe(config: ModelConfig) -> str:
    return f"{config.architecture} config ({config.num_layers} layers of width {config.embed_dim})"


def _check_batch(rows: int, length: int, mesh: Mesh) -> None:
    """Refuse, before compiling, a batch the mesh cannot split evenly over its batch axes."""
    shards = batch_shard_count(mesh)
    if rows < 1 or length < 1 or rows % shards:
        raise ValueError(
            f"a batch of {rows} × {length} tokens cannot be split over data×fsdp = {shards} devices of mesh "
            f"{dict(mesh.shape)}; give a positive length and a multiple of {shards} rows"
        )


def _placed_state(config: ModelConfig, mesh: Mesh) -> tuple[nnx.GraphDef, nnx.State]:
    """The model's graph and shape-only state, each variable carrying its sharding on ``mesh``."""
    graphdef, state = nnx.split(abstract_model(config))
    return graphdef, with_shardings(state, state_shardings(state, mesh))


def _bytes_per_device(state: nnx.State) -> int:
    """Bytes of ``state``'s variables each device holds: every variable's shard, replicated ones whole."""
    leaves = jax.tree.leaves(state)
    return sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize for leaf in leaves)


def _compile_forward(
    config: ModelConfig, mesh: Mesh, rows: int, length: int, compiler_options: dict | None = None
) -> jax.stages.Compiled:
    """The lean forward (last layer's representations) of ``config`` on ``mesh``, compiled for a TPU."""
    graphdef, state = _placed_state(config, mesh)
    tokens = jax.ShapeDtypeStruct((rows, length), jnp.int32, sharding=batch_sharding(mesh))
    last = (config.num_layers,)

    @functools.partial(jax.jit, keep_unused=True)  # every parameter stays in memory, the LM head's too
    def forward(state: nnx.State, tokens: jax.Array) -> dict:
        return nnx.merge(graphdef, state).forward(tokens, last, lean=True)

    with attention_kernels.compiling_for("tpu"), jax.set_mesh(mesh):
        return forward.lower(state, tokens).compile(compiler_options)
