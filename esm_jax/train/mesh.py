"""The training device mesh: axes ``data``, ``fsdp`` and ``tensor`` sized from the config.

One size may be -1 and absorbs the remaining devices. On a multi-slice TPU job the ``data``
axis spans slices (data-center network) and the other axes stay inside a slice (ICI).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


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


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Examples split over ``data`` × ``fsdp``; the sequence axis kept whole."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def check_batch_divisible(rows: int, accumulation_steps: int, mesh: Mesh, where: str) -> None:
    """Refuse, before compiling, a batch the mesh cannot split evenly."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if rows % accumulation_steps or (rows // accumulation_steps) % shards:
        raise ValueError(
            f"{where}: a batch of {rows} sequences cannot be cut into {accumulation_steps} micro-batches "
            f"each split over data×fsdp = {shards} devices; choose a token budget and accumulation steps "
            f"so that rows per micro-batch is a multiple of {shards}"
        )
