"""What a program compiled for a TPU slice costs per device, for the training and inference plans (``esm-jax plan``).

With ``libtpu`` installed, ``jax.experimental.topologies`` describes the chips of a TPU slice on a
CPU-only machine (:func:`tpu_slice`, with the data-sheet HBM, bandwidth and peak FLOP/s of each
device). Programs compiled for it are measured with XLA's memory and cost analyses (:func:`xla_cost`).

XLA cannot see inside a Pallas (Mosaic) kernel: it counts each splash-attention custom call as
-1 FLOP and no bytes. The plans find the splash calls in the compiled program and add their
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
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import jax

from esm_jax.train.metrics import PEAK_FLOPS_BY_DEVICE_KIND

GIB = 1024**3
# Per-chip HBM capacity (GiB) and bandwidth (bytes/s), from Google Cloud's TPU data sheets.
HBM_BY_DEVICE_KIND = {
    "TPU v4": (32, 1.2e12),
    "TPU v5 lite": (16, 8.2e11),
    "TPU v5p": (95, 2.76e12),
    "TPU v5": (95, 2.76e12),
    "TPU v6 lite": (32, 1.64e12),
}
# XLA's cost analysis counts a loop body once. Besides layer scans (which the plans unroll), XLA turns an
# all-gather feeding a matrix product (FSDP parameters) into a windowed-einsum loop, one window per iteration;
# compiled without those loops, a program's cost analysis counts every product's FLOPs.
WITHOUT_COLLECTIVE_MATMUL_LOOPS = {
    "xla_tpu_enable_windowed_einsum_for_all_gather": False,
    "xla_tpu_enable_windowed_einsum_for_reduce_scatter": False,
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
class TpuSlice:
    """The devices of a TPU topology and each device's share of its chip's data-sheet figures."""

    topology: str
    devices: list[jax.Device]
    chips: int
    device_kind: str
    hbm_gib: float  # per device, as are the figures below
    hbm_bandwidth: float  # bytes/s
    peak_flops: float  # dense bfloat16 FLOP/s


def tpu_slice(topology_name: str) -> TpuSlice:
    """The slice ``topology_name`` (e.g. ``v5e:2x4``) names, described by libtpu without a TPU."""
    from jax.experimental import topologies

    devices = topologies.get_topology_desc(platform="tpu", topology_name=topology_name).devices
    kind = devices[0].device_kind
    hbm_gib, bandwidth = data_sheet_value(kind, HBM_BY_DEVICE_KIND)
    peak = data_sheet_value(kind, PEAK_FLOPS_BY_DEVICE_KIND)
    chips = math.prod(int(size) for size in topology_name.split(":")[1].split("x"))
    per_chip = len(devices) // chips  # TensorCores shown as separate devices (e.g. v4 without megacore)
    return TpuSlice(
        topology=topology_name, devices=list(devices), chips=chips, device_kind=kind,
        hbm_gib=hbm_gib / per_chip, hbm_bandwidth=bandwidth / per_chip, peak_flops=peak / per_chip,
    )  # fmt: skip


def data_sheet_value(kind: str, table: dict) -> object:
    """``table``'s value for the device kind ``kind`` starts with (e.g. ``TPU v5 lite``)."""
    for name, value in table.items():
        if kind.startswith(name):
            return value
    raise ValueError(f"no data-sheet values for device kind {kind!r}; known: {sorted(table)}")


def xla_cost(compiled: jax.stages.Compiled) -> tuple[float, float]:
    """XLA's FLOPs and HBM bytes accessed per device (a splash call's -1 FLOP floored at nothing)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return max(float(cost.get("flops", 0.0)), 0.0), float(cost.get("bytes accessed", 0.0))


@dataclasses.dataclass(frozen=True)
class DeviceMemory:
    """Bytes a compiled program holds on each device."""

    arguments: int
    temporaries: int
    outputs: int  # those not aliased to (donated) arguments

    @property
    def total(self) -> int:
        return self.arguments + self.temporaries + self.outputs


def device_memory(compiled: jax.stages.Compiled) -> DeviceMemory:
    """XLA's memory analysis of ``compiled``, per device."""
    memory = compiled.memory_analysis()
    return DeviceMemory(
        arguments=memory.argument_size_in_bytes,
        temporaries=memory.temp_size_in_bytes,
        outputs=memory.output_size_in_bytes - memory.alias_size_in_bytes,
    )


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


def splash_call_counts(calls: list[SplashCall]) -> dict[str, int]:
    """Calls per phase (fwd, dq, dkv), every phase listed when there are any; empty when there are none."""
    return {phase: sum(call.phase == phase for call in calls) for phase in _SPLASH_PRODUCTS if calls}


@dataclasses.dataclass(frozen=True)
class CompiledCosts:
    """Where a program was compiled and what it needs and costs on each device: what every plan reports."""

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
    xla_flops_per_device: float  # XLA's cost analysis (splash kernels count as nothing)
    attention_kernel_flops_per_device: float  # the splash kernels' matrix products, analytic
    compiled_flops_per_device: float  # the sum of the two
    xla_bytes_per_device: float
    attention_kernel_bytes_per_device: float  # the splash kernels' HBM traffic, analytic
    bytes_per_device: float
    flop_seconds: float
    byte_seconds: float

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.hbm_gib


def roofline_fields(
    scanned: jax.stages.Compiled, unrolled: jax.stages.Compiled, tpu: TpuSlice, flops_floor: float = 0.0
) -> tuple[dict[str, float], list[SplashCall]]:
    """The :class:`CompiledCosts` fields (to build a report from), and the splash calls found.

    Memory comes from the ``scanned`` program that would run; FLOPs and HBM bytes from its ``unrolled``
    twin (XLA counts a loop body once) plus the splash kernels' analytic work. ``flops_floor`` (per
    device) keeps the compute time from falling below the model's own FLOPs.
    """
    memory = device_memory(scanned)
    calls = splash_calls(unrolled.as_text())
    xla_flops, xla_bytes = xla_cost(unrolled)
    kernel_flops, kernel_bytes = sum(c.flops() for c in calls), sum(c.hbm_bytes() for c in calls)
    fields = {
        "argument_gib": memory.arguments / GIB,
        "temporary_gib": memory.temporaries / GIB,
        "output_gib": memory.outputs / GIB,
        "total_gib": memory.total / GIB,
        "hbm_gib": float(tpu.hbm_gib),
        "xla_flops_per_device": xla_flops,
        "attention_kernel_flops_per_device": kernel_flops,
        "compiled_flops_per_device": xla_flops + kernel_flops,
        "xla_bytes_per_device": xla_bytes,
        "attention_kernel_bytes_per_device": kernel_bytes,
        "bytes_per_device": xla_bytes + kernel_bytes,
        "flop_seconds": max(xla_flops + kernel_flops, flops_floor) / tpu.peak_flops,
        "byte_seconds": (xla_bytes + kernel_bytes) / tpu.hbm_bandwidth,
    }
    return fields, calls
