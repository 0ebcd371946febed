"""Write PyTorch ``.pt`` files (the zip format of ``torch.save``) without PyTorch.

Only what checkpoints need is supported: nested dicts, lists, tuples, scalars, strings,
``argparse.Namespace`` and numpy arrays, which are written as contiguous CPU tensors.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from esm_jax.checkpoints.torch_reader import STORAGE_DTYPES
from esm_jax.files import atomic_output

_STORAGE_NAMES = {dtype: name for name, dtype in STORAGE_DTYPES.items() if name != "UntypedStorage"}
_ALIGNMENT = 64  # torch.save aligns every storage record to 64 bytes


class _TorchGlobal:
    """A reference to ``module.name`` inside torch, written as a pickle GLOBAL."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:
        raise TypeError(f"{self.module}.{self.name} only exists inside PyTorch")


class _Storage:
    """The raw data behind one tensor, pickled by reference to a ``data/<key>`` record."""

    def __init__(self, array: np.ndarray, key: str):
        self.array, self.key = array, key


class _Tensor:
    def __init__(self, storage: _Storage):
        self.storage = storage

    def __reduce__(self):
        array = self.storage.array
        stride = tuple(s // array.itemsize for s in array.strides)
        return (
            _TorchGlobal("torch._utils", "_rebuild_tensor_v2"),
            (self.storage, 0, tuple(array.shape), stride, False, collections.OrderedDict()),
        )


class _Pickler(pickle._Pickler):
    """Pure-Python pickler that writes torch globals and storages by reference."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_torch_global(self, obj: _TorchGlobal) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_TorchGlobal] = save_torch_global

    def __init__(self, stream):
        super().__init__(stream, protocol=2)
        self._storage_types = {name: _TorchGlobal("torch", name) for name in _STORAGE_NAMES.values()}

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Storage):
            storage_type = self._storage_types[_STORAGE_NAMES[obj.array.dtype]]
            return ("storage", storage_type, obj.key, "cpu", obj.array.size)
        return None


def _wrap_tensors(obj: Any, storages: list[_Storage]) -> Any:
    if isinstance(obj, np.ndarray):
        array = np.ascontiguousarray(obj)
        if array.dtype not in _STORAGE_NAMES:
            raise TypeError(f"cannot write arrays of dtype {array.dtype} to a .pt file")
        storages.append(_Storage(array, str(len(storages))))
        return _Tensor(storages[-1])
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((key, _wrap_tensors(value, storages)) for key, value in obj.items())
    if isinstance(obj, dict):
        return {key: _wrap_tensors(value, storages) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_wrap_tensors(value, storages) for value in obj)
    return obj


def _aligned_extra(zip_file: zipfile.ZipFile, name: str) -> bytes:
    """A zip 'extra' field padding the record so its data starts on a 64-byte boundary."""
    header_end = zip_file.fp.tell() + zipfile.sizeFileHeader + len(name.encode()) + 4
    padding = (-header_end) % _ALIGNMENT
    return b"FB" + struct.pack("<H", padding) + b"Z" * padding


def _write_record(zip_file: zipfile.ZipFile, name: str, data: bytes | np.ndarray) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.extra = _aligned_extra(zip_file, name)
    payload = memoryview(data.reshape(-1).view(np.uint8)) if isinstance(data, np.ndarray) else data
    with zip_file.open(info, mode="w", force_zip64=len(payload) > 2**31) as record:
        record.write(payload)


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as ``torch.save`` would, atomically (a temporary file renamed into place)."""
    path = Path(path)
    storages: list[_Storage] = []
    wrapped = _wrap_tensors(obj, storages)
    buffer = io.BytesIO()
    _Pickler(buffer).dump(wrapped)
    archive = path.stem or "archive"
    with atomic_output(path, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as zip_file:
        _write_record(zip_file, f"{archive}/data.pkl", buffer.getvalue())
        _write_record(zip_file, f"{archive}/byteorder", b"little")
        for storage in storages:
            _write_record(zip_file, f"{archive}/data/{storage.key}", storage.array)
        _write_record(zip_file, f"{archive}/version", b"3\n")
