"""Device meshes with axes ``data``, ``fsdp`` and ``tensor``, for training and inference alike.

Sizes come from a config (training) or a ``data=2,fsdp=4`` string (``--mesh`` on the command
line). One size may be -1 and absorbs the remaining devices. On a multi-slice TPU job the
``data`` axis spans slices (data-center network) and the other axes stay inside a slice (ICI).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from esm_jax.sharding import BATCH_AXES, shard_model

AXES = ("data", "fsdp", "tensor")


def mesh_shape(sizes: Mapping[str, int], device_count: int) -> tuple[int, ...]:
    """Resolve one ``-1`` in ``sizes`` so the axes multiply to ``device_count``."""
    shape = [int(sizes[axis]) for axis in AXES]
    unknown = [i for i, size in enumerate(shape) if size == -1]
    if len(unknown) > 1 or any(size == 0 or size < -1 for size in shape):
        raise ValueError(f"mesh sizes {dict(zip(AXES, shape, strict=True))}: use positive sizes and at most one -1")
    known = math.prod(size for size in shape if size != -1)
    if unknown:
        if device_count % known:
            raise ValueError(f"{device_count} devices cannot be split into mesh axes of fixed size {known}")
        shape[unknown[0]] = device_count // known
    if math.prod(shape) != device_count:
        raise ValueError(
            f"mesh {dict(zip(AXES, shape, strict=True))} needs {math.prod(shape)} devices but {device_count} are "
            "available; change mesh sizes (one of them may be -1)"
        )
    return tuple(shape)


def parse_mesh_sizes(text: str) -> dict[str, int]:
    """``"data=2,fsdp=4"`` as ``{"data": 2, "fsdp": 4, "tensor": 1}`` (unnamed axes have size 1)."""
    sizes = dict.fromkeys(AXES, 1)
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in AXES or not value.strip().lstrip("-").isdigit():
            raise ValueError(
                f"mesh {text!r}: {part!r} is not AXIS=SIZE with AXIS one of {', '.join(AXES)}; "
                "write e.g. data=2,fsdp=4,tensor=1 (one size may be -1 for the remaining devices)"
            )
        sizes[name] = int(value)
    return sizes


def build_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over ``devices`` (default: all) with automatic (GSPMD) sharding propagation."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(sizes, len(devices))
    slices = len({getattr(device, "slice_index", 0) for device in devices})
    if slices > 1:
        if shape[0] % slices:
            raise ValueError(f"the data axis ({shape[0]}) must be a multiple of the number of slices ({slices})")
        ici = (shape[0] // slices, shape[1], shape[2])
        grid = mesh_utils.create_hybrid_device_mesh(ici, (slices, 1, 1), devices)
    else:
        try:
            grid = mesh_utils.create_device_mesh(shape, devices)
        except (ValueError, NotImplementedError, AssertionError):
            grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def inference_mesh(spec: Mesh | str | None = "auto") -> Mesh | None:
    """The mesh a loaded model runs on: ``"auto"`` spreads batches over every local device.

    ``spec`` is a :class:`Mesh`, ``"auto"`` (all of this process's devices on ``data``; None, plain
    single-device execution, when there is only one), sizes such as ``"data=2,fsdp=4"`` laid over
    this process's devices, or None for no mesh.
    """
    if spec is None or isinstance(spec, Mesh):
        return spec
    devices = jax.local_devices()
    if spec == "auto":
        return build_mesh({"data": -1, "fsdp": 1, "tensor": 1}, devices) if len(devices) > 1 else None
    return build_mesh(parse_mesh_sizes(spec), devices)


def on_inference_mesh(model, spec: Mesh | str | None = "auto"):
    """``model`` with its parameters on :func:`inference_mesh` ``(spec)``, splitting its batches over it.

    Only models that run their own batches (ESM) are placed; others (the LSTM baseline) stay on one device.
    """
    mesh = inference_mesh(spec)
    return shard_model(model, mesh) if mesh is not None and hasattr(model, "mesh") else model


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Examples split over ``data`` × ``fsdp`` (those of them the mesh has); the sequence axis kept whole."""
    return NamedSharding(mesh, PartitionSpec(tuple(axis for axis in BATCH_AXES if axis in mesh.axis_names)))


def batch_shard_count(mesh: Mesh) -> int:
    """How many parts a batch's rows are split into: the product of the mesh's batch axes."""
    return math.prod(mesh.shape[axis] for axis in BATCH_AXES if axis in mesh.shape)


def check_batch_divisible(rows: int, accumulation_steps: int, mesh: Mesh, where: str) -> None:
    """Refuse, before compiling, a batch the mesh cannot split evenly."""
    shards = batch_shard_count(mesh)
    if rows % accumulation_steps or (rows // accumulation_steps) % shards:
        raise ValueError(
            f"{where}: a batch of {rows} sequences cannot be cut into {accumulation_steps} micro-batches "
            f"each split over data×fsdp = {shards} devices; choose a token budget and accumulation steps "
            f"so that rows per micro-batch is a multiple of {shards}"
        )
