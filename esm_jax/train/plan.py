"""Pod readiness without a pod: compile the real training step ahead of time for a TPU topology.

With ``libtpu`` installed, ``jax.experimental.topologies`` describes the chips of a TPU slice on
a CPU-only machine. The configured mesh is laid over those chips, the training step of the
configured model and global batch (its longest bucket, where attention costs most; packed rows
with their ``segment_ids`` when ``data.shapes`` is ``packed``) is lowered and compiled with
attention traced for the TPU (``auto`` is the splash kernel), and XLA's memory and cost analyses
give per-chip memory against the chip's HBM, FLOPs per step, and the roofline step time and MFU
bound they imply. XLA's cost analysis counts a loop body once, so FLOPs and bytes come from a
twin of the step with the layers unrolled.

XLA cannot see inside a Pallas (Mosaic) kernel: it counts each splash-attention custom call as
-1 FLOP and no bytes. The plan finds the splash calls in the compiled program and adds their
work analytically, per call, from its shapes and block sizes (:class:`SplashCall`):

* FLOPs: the kernels' matrix products over every T×T block (with dynamic segment ids splash
  computes all blocks): the forward QKᵀ and PV (4·T²·d per row and head), the dq kernel QKᵀ,
  dO·Vᵀ and dS·K (6·T²·d), the dkv kernel QKᵀ, Pᵀ·dO, dO·Vᵀ and dSᵀ·Q (8·T²·d; 10 when fused
  with dq). A forward rerun by rematerialisation is a call of its own and is counted.
* HBM bytes: Pallas fetches a block when its index changes between grid steps, so a kernel reads
  its resident operand once and the streamed one once per block of the other (K and V once per
  query block in the forward and dq kernels, Q and dO once per key block in the dkv kernel),
  writes its outputs once, and reads the segment ids laid out as the kernel wants them (128 lanes
  wide per query block, 8 sublanes per key block). Arrays are counted at their TPU tiled size in
  splash's default head-dimension-minor layout: the head dimension padded to 128 lanes, the
  (H, 1, T) softmax statistics to 8 sublanes.

Both are then added to XLA's counts; the roofline step time is the larger of FLOPs over the chip's
peak and bytes over its HBM bandwidth, and the MFU bound compares the model's FLOPs (every token
real, each sequence a whole row) with that time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import jax
import jax.numpy as jnp
import ml_collections

from esm_jax.mesh import batch_sharding, build_mesh, check_batch_divisible
from esm_jax.model import ModelConfig, attention_kernels
from esm_jax.sharding import state_shardings
from esm_jax.train.metrics import PEAK_FLOPS_BY_DEVICE_KIND, train_flops_per_token
from esm_jax.train.optimizer import learning_rate_schedule, make_optimizer
from esm_jax.train.state import abstract_state, with_shardings
from esm_jax.train.step import PACKED_KEY, make_train_step

GIB = 1024**3
# Per-chip HBM capacity (GiB) and bandwidth (bytes/s), from Google Cloud's TPU data sheets.
HBM_BY_DEVICE_KIND = {
    "TPU v4": (32, 1.2e12),
    "TPU v5 lite": (16, 8.2e11),
    "TPU v5p": (95, 2.76e12),
    "TPU v5": (95, 2.76e12),
    "TPU v6 lite": (32, 1.64e12),
}
LANES, SUBLANES = 128, 8
# Matrix products per (row, head) of each splash kernel, each 2·T²·d FLOPs (see the module docstring).
_SPLASH_PRODUCTS = {"fwd": 2, "dq": 3, "dkv": 4}
_SPLASH_CALL = re.compile(
    r"(?:ROOT )?%(splash_\w+?_(fwd|dq|dkv)(_segmented)?_(?:no_)?residuals)\S* = (.*?) custom-call\("
)
_ARRAY = re.compile(r"\b([a-z]+)(\d+)\[([\d,]*)\]")
_BLOCK = re.compile(r'\\"(\w+)\\": (\d+|true|false)')


@dataclasses.dataclass(frozen=True)
class SplashCall:
    """One compiled splash kernel: its phase, the shape of its (B, H, T, d) output, its block sizes."""

    phase: str  # fwd, dq or dkv
    batch: int  # rows the call covers (vmapped), 1 when not batched
    heads: int
    length: int
    head_dim: int
    itemsize: int
    blocks: dict[str, int]
    segmented: bool
    residuals: bool

    @property
    def fused(self) -> bool:
        return bool(self.blocks.get("use_fused_bwd_kernel"))

    def flops(self) -> float:
        products = _SPLASH_PRODUCTS[self.phase] + (self.phase == "dkv" and self.fused)
        return 2.0 * products * self.batch * self.heads * self.length**2 * self.head_dim

    def hbm_bytes(self) -> float:
        b, h, t = self.batch, self.heads, self.length
        one_pass = b * h * t * _padded(self.head_dim, LANES) * self.itemsize  # Q, K, V, O or a gradient
        statistics = b * h * t * SUBLANES * 4  # logsumexp or di, (H, 1, T) float32
        if self.phase == "dkv":
            passes = t // self.blocks["block_kv_dkv"]
            total = (4 + 2 * passes + (passes if self.fused else 0)) * one_pass + 2 * passes * statistics
            resident_segments = b * t * LANES * 4  # key ids (bkv, 128), fetched once per key block
        else:
            passes = t // self.blocks["block_q" if self.phase == "fwd" else "block_q_dq"]
            total = (2 if self.phase == "fwd" else 3) * one_pass + 2 * passes * one_pass
            total += b * h * t * LANES * 4 if self.residuals else 0  # logsumexp written 128 lanes wide
            total += 2 * statistics if self.phase == "dq" else 0
            resident_segments = b * h * t * LANES * 4  # query ids (bq, 128), fetched once per query block
        if self.segmented:
            total += resident_segments + passes * b * h * t * SUBLANES * 4  # the other ids, (8, block) per step
        return float(total)


def _padded(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def splash_calls(hlo_text: str) -> list[SplashCall]:
    """The splash-attention custom calls in a compiled TPU program, with the shapes they run on."""
    calls = []
    for instruction in re.split(r"\n(?=\s+(?:ROOT )?%)", hlo_text):  # an instruction's text may span lines
        match = _SPLASH_CALL.match(instruction.strip())
        if match is None or 'custom_call_target="tpu_custom_call"' not in instruction:
            continue
        name, phase, segmented, outputs = match.groups()
        arrays = [(int(bits), [int(d) for d in dims.split(",") if d]) for _, bits, dims in _ARRAY.findall(outputs)]
        rank = max(len(dims) for _, dims in arrays)
        bits, dims = next(array for array in arrays if len(array[1]) == rank)  # the (…, H, T, d) result
        calls.append(
            SplashCall(
                phase=phase, batch=math.prod(dims[:-3]), heads=dims[-3], length=dims[-2], head_dim=dims[-1],
                itemsize=bits // 8, blocks={key: json.loads(value) for key, value in _BLOCK.findall(instruction)},
                segmented=bool(segmented), residuals=not name.endswith("_no_residuals"),
            )
        )  # fmt: skip
    return calls


@dataclasses.dataclass(frozen=True)
class PlanReport:
    topology: str
    chips: int
    devices: int
    device_kind: str
    mesh: dict[str, int]
    batch_shape: tuple[int, int]
    packed: bool  # rows carry segment_ids (several sequences per row)
    remat_policy: str
    attention_impl: str  # the kernel the config's attention_impl resolves to on a TPU
    compiled_attention: str  # what the compiled program runs: "splash" (Mosaic custom calls) or "xla"
    splash_calls: dict[str, int]  # compiled splash kernels per phase (fwd, dq, dkv), layers unrolled
    argument_gib: float  # per device, as are the memory figures below
    temporary_gib: float
    output_gib: float
    total_gib: float
    hbm_gib: float
    model_flops_per_step: float
    xla_flops_per_device: float  # XLA's cost analysis (splash kernels count as nothing)
    attention_kernel_flops_per_device: float  # the splash kernels' matrix products, analytic
    compiled_flops_per_device: float  # the sum of the two
    xla_bytes_per_device: float
    attention_kernel_bytes_per_device: float  # the splash kernels' HBM traffic, analytic
    bytes_per_device: float
    flop_seconds: float
    byte_seconds: float
    roofline_step_seconds: float
    mfu_bound: float

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.hbm_gib

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


def _chip_table(kind: str, table: dict) -> object:
    for name, value in table.items():
        if kind.startswith(name):
            return value
    raise ValueError(f"no data-sheet values for device kind {kind!r}; known: {sorted(table)}")


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
    with attention_kernels.compiling_for("tpu"), jax.set_mesh(mesh):
        return step.lower(with_shardings(abstract, shardings), batch).compile()


def plan(config: ml_collections.ConfigDict, topology_name: str) -> PlanReport:
    """Compile the configured training step for ``topology_name`` (e.g. ``v5e:16x16``) and analyse it."""
    from jax.experimental import topologies

    devices = topologies.get_topology_desc(platform="tpu", topology_name=topology_name).devices
    mesh = build_mesh(dict(config.mesh), devices)
    model_config = ModelConfig.from_dict(config.model.to_dict())
    packed = config.data.get("shapes") == "packed"
    length = max(config.data.buckets)
    rows = config.data.global_token_budget // length
    check_batch_divisible(rows, config.train.accumulation_steps, mesh, f"plan for {topology_name}")
    memory = _compile_step(config, model_config, mesh, rows, length, packed).memory_analysis()
    unrolled = _compile_step(config, model_config.replace(scan_layers=False), mesh, rows, length, packed)
    cost = unrolled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    calls = splash_calls(unrolled.as_text())
    kind = devices[0].device_kind
    hbm_gib, bandwidth = _chip_table(kind, HBM_BY_DEVICE_KIND)
    peak = _chip_table(kind, PEAK_FLOPS_BY_DEVICE_KIND)
    chips = math.prod(int(size) for size in topology_name.split(":")[1].split("x"))
    per_chip = len(devices) // chips  # TensorCores shown as separate devices (e.g. v4 without megacore)
    hbm_gib, bandwidth, peak = hbm_gib / per_chip, bandwidth / per_chip, peak / per_chip
    model_flops = train_flops_per_token(model_config, length) * rows * length
    xla_flops, xla_bytes = max(float(cost.get("flops", 0.0)), 0.0), float(cost.get("bytes accessed", 0.0))
    kernel_flops, kernel_bytes = sum(c.flops() for c in calls), sum(c.hbm_bytes() for c in calls)
    flop_seconds = max(xla_flops + kernel_flops, model_flops / len(devices)) / peak
    byte_seconds = (xla_bytes + kernel_bytes) / bandwidth
    roofline = max(flop_seconds, byte_seconds)
    outputs = memory.output_size_in_bytes - memory.alias_size_in_bytes
    total = memory.argument_size_in_bytes + memory.temp_size_in_bytes + outputs
    return PlanReport(
        topology=topology_name,
        chips=chips,
        devices=len(devices),
        device_kind=kind,
        mesh=dict(mesh.shape),
        batch_shape=(rows, length),
        packed=packed,
        remat_policy=model_config.remat_policy,
        attention_impl=attention_kernels.resolve(model_config.attention_impl, "tpu"),
        compiled_attention="splash" if calls else "xla",
        splash_calls={phase: sum(c.phase == phase for c in calls) for phase in _SPLASH_PRODUCTS if calls},
        argument_gib=memory.argument_size_in_bytes / GIB,
        temporary_gib=memory.temp_size_in_bytes / GIB,
        output_gib=outputs / GIB,
        total_gib=total / GIB,
        hbm_gib=float(hbm_gib),
        model_flops_per_step=model_flops,
        xla_flops_per_device=xla_flops,
        attention_kernel_flops_per_device=kernel_flops,
        compiled_flops_per_device=xla_flops + kernel_flops,
        xla_bytes_per_device=xla_bytes,
        attention_kernel_bytes_per_device=kernel_bytes,
        bytes_per_device=xla_bytes + kernel_bytes,
        flop_seconds=flop_seconds,
        byte_seconds=byte_seconds,
        roofline_step_seconds=roofline,
        mfu_bound=model_flops / (roofline * len(devices) * peak),
    )
