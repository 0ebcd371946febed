"""Pod readiness without a pod: compile the real training step ahead of time for a TPU topology.

The configured mesh is laid over the chips of a TPU slice (:func:`esm_jax.tpu_costs.tpu_slice`),
the training step of the configured model and global batch (its longest bucket, where attention
costs most; packed rows with their ``segment_ids`` when ``data.shapes`` is ``packed``) is lowered
and compiled with attention traced for the TPU (``auto`` is the splash kernel), and XLA's memory
and cost analyses give per-chip memory against the chip's HBM, FLOPs per step, and the roofline
step time and MFU bound they imply. XLA's cost analysis counts a loop body once, so FLOPs and
bytes come from a twin of the step with the layers unrolled.

XLA cannot see inside a Pallas (Mosaic) kernel: the splash calls' FLOPs and HBM bytes are added
analytically (:mod:`esm_jax.tpu_costs`) to XLA's counts. The roofline step time is the larger of
FLOPs over the chip's peak and bytes over its HBM bandwidth, and the MFU bound compares the
model's FLOPs (every token real, each sequence a whole row) with that time.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from esm_jax.mesh import batch_sharding, build_mesh, check_batch_divisible
from esm_jax.model import ModelConfig, attention_kernels
from esm_jax.sharding import axis_rules, state_shardings, with_shardings
from esm_jax.tpu_costs import CompiledCosts, roofline_fields, splash_call_counts, tpu_slice
from esm_jax.train.metrics import train_flops_per_token
from esm_jax.train.optimizer import learning_rate_schedule, make_optimizer
from esm_jax.train.state import abstract_state
from esm_jax.train.step import PACKED_KEY, make_train_step


@dataclasses.dataclass(frozen=True)
class PlanReport(CompiledCosts):
    packed: bool  # rows carry segment_ids (several sequences per row)
    remat_policy: str
    attention_impl: str  # the kernel the config's attention_impl resolves to on a TPU
    compiled_attention: str  # what the compiled program runs: "splash" (Mosaic custom calls) or "xla"
    splash_calls: dict[str, int]  # compiled splash kernels per phase (fwd, dq, dkv), layers unrolled
    model_flops_per_step: float
    roofline_step_seconds: float
    mfu_bound: float

    def lines(self) -> list[str]:
        rows, length = self.batch_shape
        calls = ", ".join(f"{count} {phase}" for phase, count in self.splash_calls.items()) or "none"
        return [
            f"topology {self.topology}: {self.chips} chips ({self.devices} JAX devices) of {self.device_kind}, "
            f"mesh {self.mesh}",
            f"global batch {rows} × {length} tokens ({rows * length:,} per step, "
            f"{'packed rows' if self.packed else 'one sequence per row'}); remat {self.remat_policy}",
            f"per-device memory: arguments {self.argument_gib:.2f} GiB, temporaries {self.temporary_gib:.2f} GiB, "
            f"outputs not aliased {self.output_gib:.2f} GiB, total {self.total_gib:.2f} of {self.hbm_gib:.0f} GiB HBM "
            f"({'fits' if self.fits else 'DOES NOT FIT'})",
            f"attention {self.attention_impl}, compiled as {self.compiled_attention} (splash calls: {calls}); "
            f"analytic attention-kernel FLOPs per device {self.attention_kernel_flops_per_device:.3e}, "
            f"HBM bytes {self.attention_kernel_bytes_per_device:.3e}",
            f"model FLOPs per step {self.model_flops_per_step:.3e}; compiled FLOPs per device "
            f"{self.compiled_flops_per_device:.3e} = XLA {self.xla_flops_per_device:.3e} + attention kernels "
            f"(rematerialisation included)",
            f"HBM bytes per device {self.bytes_per_device:.3e} = XLA {self.xla_bytes_per_device:.3e} "
            f"+ attention kernels",
            f"roofline step time {self.roofline_step_seconds * 1e3:.1f} ms (FLOPs {self.flop_seconds * 1e3:.1f} ms, "
            f"HBM {self.byte_seconds * 1e3:.1f} ms) → MFU bound {self.mfu_bound:.1%}",
        ]


def _compile_step(config, model_config: ModelConfig, mesh, rows: int, length: int, packed: bool):
    total_steps = config.train.total_steps
    tx = make_optimizer(config.optimizer, total_steps)
    graphdef, abstract = abstract_state(model_config, tx)
    shardings = state_shardings(abstract, mesh, dict(config.sharding_rules))
    sharding = batch_sharding(mesh)
    keys = {"tokens": jnp.int32, "targets": jnp.int32, "loss_mask": jnp.float32} | (
        {PACKED_KEY: jnp.int32} if packed else {}
    )
    batch = {key: jax.ShapeDtypeStruct((rows, length), dtype, sharding=sharding) for key, dtype in keys.items()}
    step = make_train_step(
        graphdef, shardings, sharding, config.train.accumulation_steps,
        learning_rate_schedule(config.optimizer, total_steps),
    )  # fmt: skip
    with attention_kernels.compiling_for("tpu"), jax.set_mesh(mesh), axis_rules(dict(config.sharding_rules)):
        return step.lower(with_shardings(abstract, shardings), batch).compile()


def plan(config: ml_collections.ConfigDict, topology_name: str) -> PlanReport:
    """Compile the configured training step for ``topology_name`` (e.g. ``v5e:16x16``) and analyse it."""
    tpu = tpu_slice(topology_name)
    devices = tpu.devices
    mesh = build_mesh(dict(config.mesh), devices)
    model_config = ModelConfig.from_dict(config.model.to_dict())
    packed = config.data.get("shapes") == "packed"
    length = max(config.data.buckets)
    rows = config.data.global_token_budget // length
    check_batch_divisible(rows, config.train.accumulation_steps, mesh, f"plan for {topology_name}")
    scanned = _compile_step(config, model_config, mesh, rows, length, packed)
    unrolled = _compile_step(config, model_config.replace(scan_layers=False), mesh, rows, length, packed)
    model_flops = train_flops_per_token(model_config, length) * rows * length
    costs, calls = roofline_fields(scanned, unrolled, tpu, flops_floor=model_flops / len(devices))
    roofline = max(costs["flop_seconds"], costs["byte_seconds"])
    return PlanReport(
        topology=topology_name,
        chips=tpu.chips,
        devices=len(devices),
        device_kind=tpu.device_kind,
        mesh=dict(mesh.shape),
        batch_shape=(rows, length),
        packed=packed,
        remat_policy=model_config.remat_policy,
        attention_impl=attention_kernels.resolve(model_config.attention_impl, "tpu"),
        compiled_attention="splash" if calls else "xla",
        splash_calls=splash_call_counts(calls),
        model_flops_per_step=model_flops,
        roofline_step_seconds=roofline,
        **costs,
        mfu_bound=model_flops / (roofline * len(devices) * tpu.peak_flops),
    )
