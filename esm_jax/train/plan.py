"""Pod readiness without a pod: compile the real training step ahead of time for a TPU topology.

With ``libtpu`` installed, ``jax.experimental.topologies`` describes the chips of a TPU slice on
a CPU-only machine. The configured mesh is laid over those chips, the training step of the
configured model and global batch (its longest bucket, where attention costs most) is lowered
and compiled, and XLA's memory and cost analyses give per-chip memory against the chip's HBM,
FLOPs per step, and the roofline step time and MFU bound they imply. XLA's cost analysis counts
a loop body once, so FLOPs and bytes come from a twin of the step with the layers unrolled.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections

from esm_jax.model import ModelConfig
from esm_jax.sharding import state_shardings
from esm_jax.train.mesh import batch_sharding, build_mesh, check_batch_divisible
from esm_jax.train.metrics import PEAK_FLOPS_BY_DEVICE_KIND, train_flops_per_token
from esm_jax.train.optimizer import learning_rate_schedule, make_optimizer
from esm_jax.train.state import abstract_state, with_shardings
from esm_jax.train.step import make_train_step

GIB = 1024**3
# Per-chip HBM capacity (GiB) and bandwidth (bytes/s), from Google Cloud's TPU data sheets.
HBM_BY_DEVICE_KIND = {
    "TPU v4": (32, 1.2e12),
    "TPU v5 lite": (16, 8.2e11),
    "TPU v5p": (95, 2.76e12),
    "TPU v5": (95, 2.76e12),
    "TPU v6 lite": (32, 1.64e12),
}


@dataclasses.dataclass(frozen=True)
class PlanReport:
    topology: str
    chips: int
    devices: int
    device_kind: str
    mesh: dict[str, int]
    batch_shape: tuple[int, int]
    argument_gib: float  # per device, as are the memory figures below
    temporary_gib: float
    output_gib: float
    total_gib: float
    hbm_gib: float
    model_flops_per_step: float
    compiled_flops_per_device: float
    bytes_per_device: float
    roofline_step_seconds: float
    mfu_bound: float

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.hbm_gib

    def lines(self) -> list[str]:
        return [
            f"topology {self.topology}: {self.chips} chips ({self.devices} JAX devices) of {self.device_kind}, "
            f"mesh {self.mesh}",
            f"global batch {self.batch_shape[0]} × {self.batch_shape[1]} tokens "
            f"({self.batch_shape[0] * self.batch_shape[1]:,} per step)",
            f"per-device memory: arguments {self.argument_gib:.2f} GiB, temporaries {self.temporary_gib:.2f} GiB, "
            f"outputs not aliased {self.output_gib:.2f} GiB, total {self.total_gib:.2f} of {self.hbm_gib:.0f} GiB HBM "
            f"({'fits' if self.fits else 'DOES NOT FIT'})",
            f"model FLOPs per step {self.model_flops_per_step:.3e}; compiled FLOPs per device "
            f"{self.compiled_flops_per_device:.3e} (rematerialisation included)",
            f"roofline step time {self.roofline_step_seconds * 1e3:.1f} ms → MFU bound {self.mfu_bound:.1%}",
        ]


def _chip_table(kind: str, table: dict) -> object:
    for name, value in table.items():
        if kind.startswith(name):
            return value
    raise ValueError(f"no data-sheet values for device kind {kind!r}; known: {sorted(table)}")


def _compile_step(config, model_config: ModelConfig, mesh, rows: int, length: int):
    total_steps = config.train.total_steps
    tx = make_optimizer(config.optimizer, total_steps)
    graphdef, abstract = abstract_state(model_config, tx)
    shardings = state_shardings(abstract, mesh, dict(config.sharding_rules))
    sharding = batch_sharding(mesh)
    batch = {
        "tokens": jax.ShapeDtypeStruct((rows, length), jnp.int32, sharding=sharding),
        "targets": jax.ShapeDtypeStruct((rows, length), jnp.int32, sharding=sharding),
        "loss_mask": jax.ShapeDtypeStruct((rows, length), jnp.float32, sharding=sharding),
    }
    step = make_train_step(
        graphdef, shardings, sharding, config.train.accumulation_steps,
        learning_rate_schedule(config.optimizer, total_steps),
    )  # fmt: skip
    with jax.set_mesh(mesh):
        return step.lower(with_shardings(abstract, shardings), batch).compile()


def plan(config: ml_collections.ConfigDict, topology_name: str) -> PlanReport:
    """Compile the configured training step for ``topology_name`` (e.g. ``v5e:16x16``) and analyse it."""
    from jax.experimental import topologies

    devices = topologies.get_topology_desc(platform="tpu", topology_name=topology_name).devices
    mesh = build_mesh(dict(config.mesh), devices)
    model_config = ModelConfig.from_dict(config.model.to_dict())
    if model_config.attention_impl == "auto":
        model_config = model_config.replace(attention_impl="dense")
    length = max(config.data.buckets)
    rows = config.data.global_token_budget // length
    check_batch_divisible(rows, config.train.accumulation_steps, mesh, f"plan for {topology_name}")
    memory = _compile_step(config, model_config, mesh, rows, length).memory_analysis()
    unrolled = _compile_step(config, model_config.replace(scan_layers=False), mesh, rows, length)
    cost = unrolled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    kind = devices[0].device_kind
    hbm_gib, bandwidth = _chip_table(kind, HBM_BY_DEVICE_KIND)
    peak = _chip_table(kind, PEAK_FLOPS_BY_DEVICE_KIND)
    chips = math.prod(int(size) for size in topology_name.split(":")[1].split("x"))
    per_chip = len(devices) // chips  # TensorCores shown as separate devices (e.g. v4 without megacore)
    hbm_gib, bandwidth, peak = hbm_gib / per_chip, bandwidth / per_chip, peak / per_chip
    model_flops = train_flops_per_token(model_config, length) * rows * length
    device_flops, device_bytes = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    roofline = max(device_flops / peak, device_bytes / bandwidth, model_flops / len(devices) / peak)
    outputs = memory.output_size_in_bytes - memory.alias_size_in_bytes
    total = memory.argument_size_in_bytes + memory.temp_size_in_bytes + outputs
    return PlanReport(
        topology=topology_name,
        chips=chips,
        devices=len(devices),
        device_kind=kind,
        mesh=dict(mesh.shape),
        batch_shape=(rows, length),
        argument_gib=memory.argument_size_in_bytes / GIB,
        temporary_gib=memory.temp_size_in_bytes / GIB,
        output_gib=outputs / GIB,
        total_gib=total / GIB,
        hbm_gib=float(hbm_gib),
        model_flops_per_step=model_flops,
        compiled_flops_per_device=device_flops,
        bytes_per_device=device_bytes,
        roofline_step_seconds=roofline,
        mfu_bound=model_flops / (roofline * len(devices) * peak),
    )
