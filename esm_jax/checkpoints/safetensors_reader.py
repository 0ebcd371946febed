"""Read ``.safetensors`` files lazily, with clear errors for truncated or malformed files.

Format: an 8-byte little-endian header length, a JSON header mapping each tensor name to
``dtype``, ``shape`` and ``data_offsets`` relative to the end of the header, then raw data.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from esm_jax.errors import CheckpointError

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}


class SafetensorsTensor:
    """One tensor of a safetensors file, read when :meth:`numpy` is called."""

    def __init__(self, path: Path, name: str, dtype: np.dtype, shape: tuple[int, ...], start: int, end: int):
        self.path, self.name, self.dtype, self.shape = path, name, dtype, shape
        self._start, self._end = start, end

    def numpy(self) -> np.ndarray:
        with open(self.path, "rb") as stream:
            stream.seek(self._start)
            data = stream.read(self._end - self._start)
        if len(data) != self._end - self._start:
            raise CheckpointError(f"{self.path}: tensor {self.name!r} is cut short; the file is truncated")
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape).copy()


def read_header(path: str | os.PathLike) -> dict[str, SafetensorsTensor]:
    """Index the tensors of a safetensors file without reading their data."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as stream:
        prefix = stream.read(8)
        if len(prefix) != 8:
            raise CheckpointError(f"{path}: too short to be a safetensors file")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > size - 8:
            raise CheckpointError(f"{path}: header claims {header_size} bytes but the file is smaller; truncated")
        try:
            header = json.loads(stream.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: unreadable safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is a {type(header).__name__}, not a table of tensors")
    data_start = 8 + header_size
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, begin, end = _entry(path, name, entry)
        if end - begin != math.prod(shape) * dtype.itemsize or data_start + end > size:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({entry['dtype']}{list(shape)}) does not fit its byte range; "
                "the file is truncated or corrupted"
            )
        tensors[name] = SafetensorsTensor(path, name, dtype, shape, data_start + begin, data_start + end)
    return tensors


def _entry(path: Path, name: str, entry: object) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """A header entry's dtype, shape and byte range, each checked: whole, non-negative numbers in order."""
    try:
        dtype = _DTYPES[entry["dtype"]]
        shape, offsets = list(entry["shape"]), list(entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: malformed header entry for tensor {name!r}") from None
    numbers = [*shape, *offsets]
    if len(offsets) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
        raise CheckpointError(
            f"{path}: tensor {name!r} has shape {shape} and offsets {offsets}; both must be non-negative whole "
            "numbers (two offsets); the file is corrupted"
        )
    begin, end = offsets
    if end < begin:
        raise CheckpointError(f"{path}: tensor {name!r} ends (byte {end}) before it begins ({begin}); corrupted")
    return dtype, tuple(shape), begin, end
