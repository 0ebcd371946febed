"""Read PyTorch ``.pt`` files without PyTorch and without running pickled code.

A ``.pt`` file is a pickle whose tensors point at raw storages, kept either in a zip archive
(``torch.save`` since 1.6) or appended after the pickle (the legacy format). The unpickler
here resolves only an allow-list of globals (tensor rebuild functions, storage types,
``OrderedDict``, ``argparse.Namespace``); anything else, such as ``os.system``, is refused
before it is imported. Tensors come back as lazy :class:`TensorRef` objects so a multi-GB
checkpoint is read one tensor at a time.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from esm_jax.errors import CheckpointError, UnsafeCheckpointError

STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "UntypedStorage": np.dtype(np.uint8),
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


@dataclasses.dataclass(frozen=True)
class StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: just a dtype."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclasses.dataclass
class StorageRef:
    """A storage not yet read: ``read()`` returns its bytes as a flat array of ``dtype``."""

    key: str
    dtype: np.dtype
    numel: int
    reader: Callable[[StorageRef], bytes]

    def read(self) -> np.ndarray:
        data = self.reader(self)
        expected = self.numel * self.dtype.itemsize
        if len(data) != expected:
            raise CheckpointError(
                f"storage {self.key!r} holds {len(data)} bytes but its tensors need {expected}; "
                "the file is truncated or corrupted, download it again"
            )
        return np.frombuffer(data, dtype=self.dtype)


@dataclasses.dataclass
class TensorRef:
    """A tensor inside a checkpoint, read on demand with :meth:`numpy`."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return self.storage.dtype

    def numpy(self) -> np.ndarray:
        flat = self.storage.read()
        if any(n == 0 for n in self.shape):
            return np.zeros(self.shape, self.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        if self.offset < 0 or last >= flat.size:
            raise CheckpointError(
                f"tensor of shape {self.shape} at offset {self.offset} reaches past the end of "
                f"storage {self.storage.key!r} ({flat.size} elements); the file is corrupted"
            )
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.shape, strides=[s * item for s in self.stride], writeable=False
        )
        return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise CheckpointError("a tensor in the checkpoint does not point at a storage")
    return TensorRef(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype, *_unused) -> TensorRef:
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_unused):
    return data


def _encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("argparse", "Namespace"): argparse.Namespace,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): _encode_latin1,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
    **{("torch.storage", name): StorageType(name) for name in ("UntypedStorage",)},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, stream, path: Path, persistent_load: Callable[[tuple], Any]):
        super().__init__(stream)
        self._path = path
        self._persistent_load = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._path}: refused to load '{module}.{name}'. The file's pickle asks for an "
                "object that is not a tensor, a plain container or argparse.Namespace, so it may run "
                "code. Official fair-esm and Hugging Face checkpoints never do; if you trust this file, "
                "re-save only its weights with PyTorch (torch.save of a plain state dict)."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        return self._persistent_load(pid)


def _storage_from_pid(pid: Any, path: Path, reader: Callable[[StorageRef], bytes], cache: dict) -> StorageRef:
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        raise UnsafeCheckpointError(f"{path}: unexpected persistent object {pid!r:.80} in the pickle")
    storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
    if not isinstance(storage_type, StorageType):
        raise CheckpointError(f"{path}: storage {key!r} has an unknown type {storage_type!r}")
    if key not in cache:
        cache[key] = StorageRef(key, storage_type.dtype, numel, reader)
    return cache[key]


def _unpickle(data: io.BufferedIOBase, path: Path, persistent_load: Callable[[tuple], Any]) -> Any:
    try:
        return _RestrictedUnpickler(data, path, persistent_load).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: the checkpoint's pickle is truncated or corrupted ({type(exc).__name__}: {exc}); "
            "download or export the file again"
        ) from None


def _load_zip(path: Path) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"{path}: not a readable zip archive ({exc}); the file is truncated or corrupted, download it again"
        ) from None
    names = archive.namelist()
    pickles = [name for name in names if name.endswith("/data.pkl") or name == "data.pkl"]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: expected one data.pkl record in the archive, found {len(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if f"{prefix}byteorder" in names:
        byteorder = archive.read(f"{prefix}byteorder").decode()

    def read_record(storage: StorageRef) -> bytes:
        name = f"{prefix}data/{storage.key}"
        try:
            data = archive.read(name)
        except KeyError:
            raise CheckpointError(f"{path}: record {name!r} is missing; the file is truncated or corrupted") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CheckpointError(f"{path}: record {name!r} is corrupted ({exc}); download the file again") from None
        if byteorder != "little":
            data = np.frombuffer(data, storage.dtype.newbyteorder(">")).astype(storage.dtype).tobytes()
        return data

    cache: dict[str, StorageRef] = {}
    try:
        pickled = archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: the pickle record is corrupted ({exc}); download the file again") from None
    return _unpickle(io.BytesIO(pickled), path, lambda pid: _storage_from_pid(pid, path, read_record, cache))


def _legacy_header_has_no_storages(pid: Any) -> Any:
    raise CheckpointError(f"malformed legacy checkpoint header (unexpected persistent id {pid!r:.80})")


def _load_legacy(path: Path) -> Any:
    """The pre-1.6 format: magic, protocol, sys_info, the object, storage keys, then raw storages."""
    offsets: dict[str, int] = {}
    cache: dict[str, StorageRef] = {}

    def read_storage(storage: StorageRef) -> bytes:
        with open(path, "rb") as stream:
            stream.seek(offsets[storage.key])
            return stream.read(storage.numel * storage.dtype.itemsize)

    with open(path, "rb") as handle:
        magic = _unpickle(handle, path, _legacy_header_has_no_storages)
        protocol = _unpickle(handle, path, _legacy_header_has_no_storages)
        if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (unknown header)")
        sys_info = _unpickle(handle, path, _legacy_header_has_no_storages)
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise CheckpointError(f"{path}: big-endian legacy checkpoints are not supported")
        result = _unpickle(handle, path, lambda pid: _storage_from_pid(pid, path, read_storage, cache))
        for key in _unpickle(handle, path, _legacy_header_has_no_storages):
            size_bytes = handle.read(8)
            if len(size_bytes) != 8 or str(key) not in cache:
                raise CheckpointError(f"{path}: storage {key!r} is missing; the file is truncated or corrupted")
            storage = cache[str(key)]
            (numel,) = struct.unpack("<q", size_bytes)
            offsets[storage.key] = handle.tell()
            handle.seek(numel * storage.dtype.itemsize, os.SEEK_CUR)
        if handle.tell() > os.path.getsize(path):
            raise CheckpointError(f"{path}: the file ends inside its tensor data; it is truncated, download it again")
    return result


def load(path: str | os.PathLike) -> Any:
    """Unpickle a ``.pt`` file safely; tensors are returned as :class:`TensorRef`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as stream:
        head = stream.read(4)
    if head[:2] == b"PK":
        return _load_zip(path)
    if head[:1] == b"\x80":
        return _load_legacy(path)
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither zip nor legacy pickle format)")
