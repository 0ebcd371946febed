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


_MAX_DIMS = 32
_MAX_DEPTH = 64
_MAX_SIZE = 1 << 48
_MAX_RATIO = 1100  # deflate never expands more than ~1032:1, so a record claiming more is lying
_MAX_PICKLE_BYTES = 1 << 28  # fair-esm's largest data.pkl is under 1 MB


@dataclasses.dataclass
class StorageRef:
    """A storage not yet read: ``read()`` returns its bytes as a flat array of ``dtype``."""

    key: str
    dtype: np.dtype
    numel: int
    reader: Callable[[StorageRef], bytes]
    problem: str | None = None  # why its data cannot be read (missing, wrong size), found before any read

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def read(self) -> np.ndarray:
        data = self.reader(self)
        if len(data) != self.nbytes:
            raise CheckpointError(
                f"storage {self.key!r} holds {len(data)} bytes but its tensors need {self.nbytes}; "
                "the file is truncated or corrupted, download it again"
            )
        return np.frombuffer(data, dtype=self.dtype)


@dataclasses.dataclass
class TensorRef:
    """A tensor inside a checkpoint, read on demand with :meth:`numpy`.

    Its layout was checked when it was unpickled (:func:`_tensor_layout_problem`): every element it
    views lies inside its storage, so the strided view below never reaches outside the buffer.
    """

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
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.shape, strides=[s * item for s in self.stride], writeable=False
        )
        return np.array(view)


@dataclasses.dataclass(frozen=True)
class BadStorage:
    """A storage record whose declaration is malformed; tensors on it become :class:`BadTensor`."""

    key: str
    problem: str


@dataclasses.dataclass(frozen=True)
class BadTensor:
    """A tensor record that failed its checks; :func:`load` names it (by its place in the pickle) and refuses."""

    problem: str


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor_layout_problem(storage: StorageRef, offset: Any, size: Any, stride: Any) -> str | None:
    """Why this (offset, size, stride) view of ``storage`` cannot be read, or None; exact integer arithmetic."""
    if not (isinstance(size, tuple | list) and isinstance(stride, tuple | list)):
        return f"has size {size!r:.60} and stride {stride!r:.60}, which are not lists of integers"
    if not (_is_int(offset) and all(_is_int(n) for n in size) and all(_is_int(s) for s in stride)):
        return f"has offset {offset!r:.40}, size {tuple(size)!r:.60} or stride {tuple(stride)!r:.60}: not all integers"
    if len(size) != len(stride) or len(size) > _MAX_DIMS:
        return f"has {len(size)} sizes but {len(stride)} strides (at most {_MAX_DIMS} dimensions)"
    if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
        return f"has a negative offset, size or stride (offset {offset}, size {tuple(size)}, stride {tuple(stride)})"
    if any(n > _MAX_SIZE for n in size):
        return f"has size {tuple(size)}, beyond any real tensor"
    if any(n == 0 for n in size):
        return None
    elements = 1
    for n in size:
        elements *= n
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.numel:
        return (
            f"(offset {offset}, size {tuple(size)}, stride {tuple(stride)}) reaches element {last} but its storage "
            f"{storage.key!r} holds {storage.numel}"
        )
    if elements > storage.numel:
        return (
            f"has {elements} elements but its storage {storage.key!r} holds only {storage.numel} (overlapping strides)"
        )
    return None


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused) -> TensorRef | BadTensor:
    if isinstance(storage, BadStorage):
        return BadTensor(f"is on storage {storage.key!r}, which {storage.problem}")
    if not isinstance(storage, StorageRef):
        return BadTensor("does not point at a storage")
    problem = _tensor_layout_problem(storage, storage_offset, size, stride)
    if problem is not None:
        return BadTensor(problem)
    stride = tuple(0 if n == 1 else s for n, s in zip(size, stride, strict=True))  # a size-1 dimension never steps
    return TensorRef(storage, storage_offset, tuple(size), stride)


def _rebuild_tensor_v3(
    storage, storage_offset, size, stride, requires_grad, hooks, dtype, *_unused
) -> TensorRef | BadTensor:
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


def _storage_from_pid(
    pid: Any, path: Path, reader: Callable[[StorageRef], bytes], cache: dict
) -> StorageRef | BadStorage:
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
        raise UnsafeCheckpointError(f"{path}: unexpected persistent object {pid!r:.80} in the pickle")
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(key, str | int) or isinstance(key, bool) or len(str(key)) > 64:
        return BadStorage(f"{key!r:.40}", "has a malformed key")
    key = str(key)
    if not isinstance(storage_type, StorageType):
        return BadStorage(key, f"has an unknown type {storage_type!r:.60}")
    if not _is_int(numel) or not 0 <= numel <= _MAX_SIZE:
        return BadStorage(key, f"declares {numel!r:.40} elements")
    if len(pid) == 6 and pid[5] is not None:
        return BadStorage(key, "is a view of another storage (not supported)")
    if key not in cache:
        cache[key] = StorageRef(key, storage_type.dtype, numel, reader)
    stored = cache[key]
    if (stored.dtype, stored.numel) != (storage_type.dtype, numel):
        return BadStorage(
            key, f"is declared twice, as {stored.numel} × {stored.dtype} and as {numel} × {storage_type.dtype}"
        )
    return stored


def _unpickle(data: io.BufferedIOBase, path: Path, persistent_load: Callable[[tuple], Any]) -> Any:
    try:
        return _RestrictedUnpickler(data, path, persistent_load).load()
    except CheckpointError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        OverflowError,
        RecursionError,
        UnicodeDecodeError,
    ) as exc:
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
    file_size = path.stat().st_size
    pickles = [name for name in names if name.endswith("/data.pkl") or name == "data.pkl"]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: expected one data.pkl record in the archive, found {len(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = _byteorder(archive, f"{prefix}byteorder", path)

    def record_problem(storage: StorageRef) -> str | None:
        name = f"{prefix}data/{storage.key}"
        if name not in names:
            return f"has no data: record {name!r} is missing from the archive"
        info = archive.getinfo(name)
        declared = info.file_size
        if info.header_offset + info.compress_size > file_size or declared > _MAX_RATIO * info.compress_size + 1024:
            return f"has a record {name!r} claiming {declared} bytes that the archive cannot hold"
        if declared != storage.nbytes:
            return (
                f"needs {storage.numel} × {storage.dtype} = {storage.nbytes} bytes but record {name!r} holds {declared}"
            )
        return None

    def read_record(storage: StorageRef) -> bytes:
        name = f"{prefix}data/{storage.key}"
        problem = record_problem(storage)
        if problem is not None:
            raise CheckpointError(f"{path}: storage {storage.key!r} {problem}; the file is truncated or corrupted")
        try:
            data = archive.read(name)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CheckpointError(f"{path}: record {name!r} is corrupted ({exc}); download the file again") from None
        if byteorder != "little":
            data = np.frombuffer(data, storage.dtype.newbyteorder(">")).astype(storage.dtype).tobytes()
        return data

    cache: dict[str, StorageRef] = {}
    if archive.getinfo(pickles[0]).file_size > _MAX_PICKLE_BYTES:
        raise CheckpointError(
            f"{path}: the pickle record declares {archive.getinfo(pickles[0]).file_size} bytes, far more than "
            "a checkpoint's; the file is corrupted or not a checkpoint"
        )
    try:
        pickled = archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: the pickle record is corrupted ({exc}); download the file again") from None
    result = _unpickle(io.BytesIO(pickled), path, lambda pid: _storage_from_pid(pid, path, read_record, cache))
    for storage in cache.values():
        storage.problem = record_problem(storage)
    return result


def _byteorder(archive: zipfile.ZipFile, name: str, path: Path) -> str:
    if name not in archive.namelist():
        return "little"
    if archive.getinfo(name).file_size > 16:
        raise CheckpointError(f"{path}: the byteorder record is {archive.getinfo(name).file_size} bytes; corrupted")
    try:
        byteorder = archive.read(name).decode("ascii", errors="replace").strip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: the byteorder record is corrupted ({exc}); download the file again") from None
    if byteorder not in ("little", "big"):
        raise CheckpointError(f"{path}: unknown byte order {byteorder!r:.40} in the archive; the file is corrupted")
    return byteorder


def _legacy_header_has_no_storages(pid: Any) -> Any:
    raise CheckpointError(f"malformed legacy checkpoint header (unexpected persistent id {pid!r:.80})")


def _load_legacy(path: Path) -> Any:
    """The pre-1.6 format: magic, protocol, sys_info, the object, storage keys, then raw storages."""
    offsets: dict[str, int] = {}
    cache: dict[str, StorageRef] = {}

    def read_storage(storage: StorageRef) -> bytes:
        if storage.problem is not None or storage.key not in offsets:
            raise CheckpointError(f"{path}: storage {storage.key!r} {storage.problem or 'is missing'}; corrupted")
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
        keys = _unpickle(handle, path, _legacy_header_has_no_storages)
        if not isinstance(keys, list):
            raise CheckpointError(f"{path}: malformed legacy checkpoint (no list of storage keys)")
        for key in keys:
            size_bytes = handle.read(8)
            if len(size_bytes) != 8:
                break
            storage = cache.get(str(key))
            if storage is None:
                raise CheckpointError(f"{path}: storage {key!r:.40} is stored but never used; the file is corrupted")
            (numel,) = struct.unpack("<q", size_bytes)
            offsets[storage.key] = handle.tell()
            if numel != storage.numel:
                storage.problem = f"holds {numel} elements but its record declares {storage.numel}"
                break
            handle.seek(storage.nbytes, os.SEEK_CUR)
    size = os.path.getsize(path)
    for storage in cache.values():
        if storage.problem is None and storage.key not in offsets:
            storage.problem = "has no data: it is missing from the file's storages"
        elif storage.problem is None and offsets[storage.key] + storage.nbytes > size:
            storage.problem = f"needs {storage.nbytes} bytes but the file ends first; it is truncated"
    return result


def _children(node: Any) -> list[tuple[str, Any]]:
    """The (name, value) pairs inside a container of the unpickled tree, or [] for a leaf."""
    if isinstance(node, dict):
        return [(str(key)[:200], value) for key, value in node.items()]
    if isinstance(node, argparse.Namespace):
        return list(vars(node).items())
    if isinstance(node, list | tuple | set | frozenset):
        return [(str(i), value) for i, value in enumerate(node)]
    return []


def _checked(tree: Any, path: Path) -> Any:
    """Refuse the tree if a tensor record failed its checks or it nests deeper than any checkpoint.

    The walk is iterative and visits each object once, so neither deep nesting nor heavily shared
    substructures (a "billion laughs" pickle) can exhaust the stack or the time.
    """
    stack: list[tuple[Any, str, int]] = [(tree, "", 0)]
    seen: set[int] = set()
    while stack:
        node, name, depth = stack.pop()
        if isinstance(node, BadTensor):
            raise CheckpointError(f"{path}: tensor {name or '(top level)'!r} {node.problem}; the file is corrupted")
        if isinstance(node, TensorRef) and node.storage.problem is not None:
            raise CheckpointError(
                f"{path}: tensor {name!r} {node.storage.problem}; the file is truncated or corrupted, download it again"
            )
        if id(node) in seen:
            continue
        seen.add(id(node))
        children = _children(node)
        if children and depth >= _MAX_DEPTH:
            raise CheckpointError(
                f"{path}: the pickle nests containers more than {_MAX_DEPTH} deep (at {name[:200]!r}); "
                "this is not a checkpoint"
            )
        stack.extend((value, f"{name}.{key}" if name else key, depth + 1) for key, value in children)
    return tree


def load(path: str | os.PathLike) -> Any:
    """Unpickle a ``.pt`` file safely; tensors are returned as :class:`TensorRef`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as stream:
        head = stream.read(4)
    if head[:2] == b"PK":
        return _checked(_load_zip(path), path)
    if head[:1] == b"\x80":
        return _checked(_load_legacy(path), path)
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither zip nor legacy pickle format)")
