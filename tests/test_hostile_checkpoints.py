"""Crafted ``.pt`` files, ``convert`` over existing outputs and out-of-alphabet token ids: clear errors, no crash.

Every ``.pt`` here is written by hand (zip + pickle, or the legacy layout) without PyTorch, so each
tensor record can carry a hostile offset, size, stride or storage declaration.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esm_jax import build_model, pretrained
from esm_jax.checkpoints import fair_esm, safetensors_reader, torch_reader
from esm_jax.checkpoints.tensor_map import export_from
from esm_jax.cli.main import main
from esm_jax.errors import CheckpointError, UnsafeCheckpointError
from esm_jax.model import ModelConfig
from esm_jax.model.esm import InvalidTokenError

CONFIG = ModelConfig("esm2", 1, 32, 2, 128)
TARGET = "encoder.sentence_encoder.embed_tokens.weight"
SHORT_TARGET = "embed_tokens.weight"
_DTYPE_STORAGES = {"float32": "FloatStorage", "int32": "IntStorage", "int64": "LongStorage", "bool": "BoolStorage"}


class _Global:
    """A pickle GLOBAL reference (``module.name``), written without importing it."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise TypeError(f"{self.module}.{self.name} is only a reference")


class _Storage:
    def __init__(self, key, numel, kind: str = "FloatStorage", view=None, type_ref=None):
        storage_type = _Global("torch", kind) if type_ref is None else type_ref
        self.pid = ("storage", storage_type, key, "cpu", numel, view)


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        args = (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())
        return _Global("torch._utils", "_rebuild_tensor_v2"), args


class _Call:
    """Pickles as ``module.name(*args)``: how a malicious checkpoint asks to run code."""

    def __init__(self, module: str, name: str, *args):
        self.target, self.args = _Global(module, name), args

    def __reduce__(self):
        return self.target, self.args


class _Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def save_global_ref(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    dispatch[_Global] = save_global_ref

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return obj.pid[:5] if obj.pid[5] is None else obj.pid
        return None


def _pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _contiguous(array: np.ndarray, key: str) -> _Tensor:
    stride = tuple(s // array.itemsize for s in array.strides)
    return _Tensor(_Storage(key, array.size, _DTYPE_STORAGES[array.dtype.name]), 0, array.shape, stride)


class Crafted:
    """A fair-esm checkpoint as editable parts: header, tensor records and raw storage bytes."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.data = {**fair_esm.checkpoint_header(CONFIG), "model": {}}
        self.records: dict[str, bytes] = {}
        for i, (name, array) in enumerate(tensors.items()):
            self.data["model"][fair_esm.add_prefix(name)] = _contiguous(array, str(i))
            self.records[str(i)] = array.tobytes()

    @property
    def model(self) -> dict:
        return self.data["model"]

    def key_of(self, name: str = TARGET) -> str:
        return self.model[name].storage.pid[2]

    def write_zip(self, path: Path, pickled: bytes | None = None) -> Path:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", _pickle(self.data) if pickled is None else pickled)
            archive.writestr("archive/byteorder", b"little")
            for key, data in self.records.items():
                archive.writestr(f"archive/data/{key}", data)
            archive.writestr("archive/version", b"3\n")
        return path

    def write_legacy(self, path: Path, keys: list[str] | None = None) -> Path:
        numels = {t.storage.pid[2]: t.storage.pid[4] for t in self.model.values() if isinstance(t, _Tensor)}
        keys = list(self.records) if keys is None else keys
        parts = [pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})]
        parts += [_pickle(self.data), pickle.dumps(keys, protocol=2)]
        parts += [struct.pack("<q", numels[key]) + self.records[key] for key in keys]
        path.write_bytes(b"".join(parts))
        return path


@pytest.fixture(scope="module")
def weights() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A tiny ESM-2's tensors (fair-esm names) and its contact regression."""
    model = build_model(CONFIG, seed=1)
    return export_from(model, fair_esm.model_slots(CONFIG), 1), export_from(model, fair_esm.CONTACT_SLOTS, 1)


@pytest.fixture
def crafted(weights, tmp_path) -> Crafted:
    tensors, regression = weights
    checkpoint = Crafted(tensors)
    regression_file = Crafted(regression)
    regression_file.data = {"model": {name: regression_file.model[fair_esm.add_prefix(name)] for name in regression}}
    regression_file.write_zip(tmp_path / "esm2_crafted-contact-regression.pt")
    return checkpoint


def _retarget(c: Crafted, **changes) -> None:
    tensor = c.model[TARGET]
    for field, value in changes.items():
        setattr(tensor, field, value)


def _restore(c: Crafted, **pid_changes) -> None:
    """Replace the target tensor's storage declaration (key, numel, kind, view, type_ref)."""
    old = c.model[TARGET].storage.pid
    fields = {"key": old[2], "numel": old[4], "kind": old[1].name, "view": None, "type_ref": None, **pid_changes}
    c.model[TARGET].storage = _Storage(**fields)


def _record(c: Crafted, data: bytes) -> None:
    c.records[c.key_of()] = data


def _declared_twice(c: Crafted) -> None:
    tensor = c.model.pop(TARGET)
    other = next(iter(c.model.values())).storage.pid
    tensor.storage = _Storage(other[2], 33 * 32, "DoubleStorage")
    c.model[TARGET] = tensor


def _typed(c: Crafted, dtype) -> None:
    values = np.ones((33, 32), dtype)
    _restore(c, kind=_DTYPE_STORAGES[np.dtype(dtype).name])
    _record(c, values.tobytes())


def _deep_list(depth: int) -> bytes:
    """A pickle of ``depth`` nested lists, written opcode by opcode (pickle.dumps would recurse)."""
    return pickle.PROTO + b"\x02" + pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1) + pickle.STOP


# (case id, how to damage the checkpoint, the message expected); every message must also name the file and tensor.
LAYOUT_CASES: list[tuple[str, Callable[[Crafted], None], str]] = [
    ("large negative stride", lambda c: _retarget(c, stride=(-(2**40), 1)), "negative offset, size or stride"),
    ("small negative stride", lambda c: _retarget(c, stride=(32, -1), offset=31), "negative offset, size or stride"),
    ("negative row stride", lambda c: _retarget(c, stride=(-32, 1), offset=32 * 32), "negative"),
    ("negative offset", lambda c: _retarget(c, offset=-5), "negative"),
    ("offset one past the end", lambda c: _retarget(c, offset=1), "reaches element 1056 but its storage"),
    ("huge offset", lambda c: _retarget(c, offset=2**70), "reaches element"),
    ("size beyond the storage", lambda c: _retarget(c, size=(34, 32)), "reaches element"),
    ("huge size", lambda c: _retarget(c, size=(2**62, 2**62), stride=(1, 1)), "beyond any real tensor"),
    ("negative size", lambda c: _retarget(c, size=(-1, 32)), "negative"),
    ("stride past int64", lambda c: _retarget(c, stride=(2**63, 1)), "reaches element"),
    ("strides overflowing together", lambda c: _retarget(c, stride=(2**62, 2**62)), "reaches element"),
    ("fewer strides than sizes", lambda c: _retarget(c, stride=(32,)), "2 sizes but 1 strides"),
    ("forty dimensions", lambda c: _retarget(c, size=(1,) * 40, stride=(1,) * 40), "at most 32 dimensions"),
    ("size is not a list", lambda c: _retarget(c, size=7), "not lists of integers"),
    ("float size", lambda c: _retarget(c, size=(33.0, 32)), "not all integers"),
    ("float offset", lambda c: _retarget(c, offset=0.5), "not all integers"),
    ("string strides", lambda c: _retarget(c, stride=("32", "1")), "not all integers"),
    ("overlapping view of a small storage", lambda c: (_restore(c, numel=32), _retarget(c, stride=(0, 1))), "overlap"),
    ("tensor without a storage", lambda c: _retarget(c, storage=5), "does not point at a storage"),
    ("storage record missing", lambda c: c.records.pop(c.key_of()), "is missing from the archive"),
    ("storage record truncated", lambda c: _record(c, c.records[c.key_of()][:-4]), "but record"),
    ("storage record too long", lambda c: _record(c, c.records[c.key_of()] + bytes(4)), "but record"),
    ("storage declares 2**40 elements", lambda c: _restore(c, numel=2**40), "but record"),
    ("storage declares 2**70 elements", lambda c: _restore(c, numel=2**70), "declares 1180591620717411303424 el"),
    ("negative storage size", lambda c: _restore(c, numel=-1), "declares -1 elements"),
    ("float storage size", lambda c: _restore(c, numel=1056.0), "declares 1056.0 elements"),
    ("storage key is a list", lambda c: _restore(c, key=["x"]), "malformed key"),
    ("storage type is not a type", lambda c: _restore(c, type_ref=7), "unknown type 7"),
    ("storage view", lambda c: _restore(c, view=("0", 0, 10)), "view of another storage"),
    ("storage declared twice", _declared_twice, "declared twice"),
]
DTYPE_CASES: list[tuple[str, Callable[[Crafted], None], str]] = [
    ("int32 weights", lambda c: _typed(c, np.int32), "dtype int32, but model weights are floating point"),
    ("int64 weights", lambda c: _typed(c, np.int64), "dtype int64"),
    ("bool weights", lambda c: _typed(c, np.bool_), "dtype bool"),
    ("NaN weights", lambda c: _record(c, np.full((33, 32), np.nan, np.float32).tobytes()), "NaN or infinite"),
    ("a string instead of a tensor", lambda c: c.model.__setitem__(TARGET, "hello"), "is a str, not a tensor"),
    ("a dict instead of a tensor", lambda c: c.model.__setitem__(TARGET, {"w": 1}), "is a dict, not a tensor"),
    ("tensor missing", lambda c: c.model.pop(TARGET), "is missing from the checkpoint"),
]


def _cfg(c: Crafted, **changes) -> None:
    for name, value in changes.items():
        setattr(c.data["cfg"]["model"], name, value)


# Structures that are not a checkpoint: the message names the file and what is wrong.
STRUCTURE_CASES: list[tuple[str, Callable[[Crafted], None], str]] = [
    ("200,000-deep nested model", lambda c: c.data.__setitem__("model", _DeepList()), "nests containers more than"),
    ("deep nesting in the arguments", lambda c: c.data["cfg"].__setitem__("extra", _DeepList()), "nests containers"),
    ("top level is a list", lambda c: setattr(c, "data", [c.data]), "no 'model' entry"),
    ("no arguments", lambda c: c.data.pop("cfg"), "neither 'args'"),
    ("cfg is a list", lambda c: c.data.__setitem__("cfg", [1, 2]), "'cfg' has no 'model' section"),
    ("layers as a string", lambda c: _cfg(c, encoder_layers="1"), "'encoder_layers' is '1', not a positive"),
    ("10**12 layers", lambda c: _cfg(c, encoder_layers=10**12), "not a positive model size"),
    ("zero heads", lambda c: _cfg(c, encoder_attention_heads=0), "not a positive model size"),
    ("heads not dividing the width", lambda c: _cfg(c, encoder_attention_heads=3), "describe no valid model"),
    ("token_dropout as text", lambda c: _cfg(c, token_dropout="yes"), "not true or false"),
    ("missing layer count", lambda c: delattr(c.data["cfg"]["model"], "encoder_layers"), "lack 'encoder_layers'"),
    ("unexpected tensor", lambda c: c.model.__setitem__("encoder.extra.weight", c.model[TARGET]), "unexpected"),
]


class _DeepList:
    """Pickles as a 200,000-deep nested list (spliced in as raw opcodes)."""

    def __reduce__(self):
        return _Global("esm_jax_test", "deep"), ()


def _write(c: Crafted, path: Path) -> Path:
    pickled = _pickle(c.data)
    marker = pickle.GLOBAL + b"esm_jax_test\ndeep\n"
    if marker in pickled:  # replace `esm_jax_test.deep()` (GLOBAL, EMPTY_TUPLE, REDUCE) by the nested list
        pickled = pickled.replace(marker + pickle.EMPTY_TUPLE + pickle.REDUCE, _deep_list(200_000)[2:-1])
    return c.write_zip(path, pickled)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Storage declarations and records are crafted in the zip layout; tensor layouts in both.
LAYOUT_PARAMS = [
    pytest.param(layout, damage, message, id=f"{layout}-{name}")
    for layout in ("zip", "legacy")
    for name, damage, message in LAYOUT_CASES
    if layout == "zip" or not ("storage" in name or "record" in name)
]


@pytest.mark.parametrize(("layout", "damage", "message"), LAYOUT_PARAMS)
def test_a_crafted_tensor_record_is_refused_naming_file_and_tensor(crafted, tmp_path, layout, damage, message):
    damage(crafted)
    path = tmp_path / "esm2_crafted.pt"
    crafted.write_zip(path) if layout == "zip" else crafted.write_legacy(path)
    with pytest.raises(CheckpointError) as caught:
        pretrained.load_model_and_alphabet_local(path)
    assert str(path) in str(caught.value) and TARGET in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(("damage", "message"), [c[1:] for c in DTYPE_CASES], ids=[c[0] for c in DTYPE_CASES])
def test_tensors_that_are_not_float_weights_are_refused(crafted, tmp_path, damage, message):
    damage(crafted)
    path = crafted.write_zip(tmp_path / "esm2_crafted.pt")
    with pytest.raises(CheckpointError, match=message) as caught:
        pretrained.load_model_and_alphabet_local(path)
    assert str(path) in str(caught.value) and SHORT_TARGET in str(caught.value)


@pytest.mark.parametrize(("damage", "message"), [c[1:] for c in STRUCTURE_CASES], ids=[c[0] for c in STRUCTURE_CASES])
def test_structures_that_are_not_checkpoints_are_refused(crafted, tmp_path, damage, message):
    damage(crafted)
    path = _write(crafted, tmp_path / "esm2_crafted.pt")
    with pytest.raises(CheckpointError, match=message) as caught:
        pretrained.load_model_and_alphabet_local(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("model", "message"),
    [([1, 2], "'model' is a list, not a mapping"), ({7: "x"}, "has the key 7, not a tensor name")],
    ids=["model is a list", "integer tensor names"],
)
def test_a_model_entry_that_is_not_a_state_dict_is_refused(tmp_path, model, message):
    path = Crafted({}).write_zip(tmp_path / "esm2_odd.pt", _pickle({"model": model}))
    with pytest.raises(CheckpointError, match=message) as caught:
        pretrained.load_model_and_alphabet_local(path)
    assert str(path) in str(caught.value)


def test_shared_substructure_is_walked_once(tmp_path):
    """A "billion laughs" pickle (2**50 paths through 50 shared lists) is read in well under a second."""
    pickled = pickle.dumps({"model": {}, "extra": _shared_tree(50)}, protocol=2)
    path = Crafted({}).write_zip(tmp_path / "laughs.pt", pickled)
    start = time.monotonic()
    assert torch_reader.load(path)["model"] == {}
    assert time.monotonic() - start < 5


def _shared_tree(levels: int) -> list:
    node: list = []
    for _ in range(levels):
        node = [node, node]
    return node


def _patched_central_size(path: Path, member: str, size: int) -> None:
    """Make the zip's central directory claim ``size`` uncompressed bytes for ``member``."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    position = -1
    for _ in range(names.index(member) + 1):
        position = data.index(b"PK\x01\x02", position + 1)
    data[position + 24 : position + 28] = struct.pack("<I", size)
    path.write_bytes(bytes(data))


ARCHIVE_CASES = ["pickle claims 4 GB", "storage claims 4 GB", "two data.pkl", "byteorder garbage", "empty file"]


@pytest.mark.parametrize("case", ARCHIVE_CASES)
def test_a_damaged_archive_is_refused(crafted, tmp_path, case):
    path = crafted.write_zip(tmp_path / "esm2_crafted.pt")
    message = {
        "pickle claims 4 GB": "pickle record declares",
        "storage claims 4 GB": "the archive cannot hold",
        "two data.pkl": "expected one data.pkl",
        "byteorder garbage": "unknown byte order",
        "empty file": "not a PyTorch checkpoint",
    }[case]
    if case == "pickle claims 4 GB":
        _patched_central_size(path, "archive/data.pkl", 2**32 - 1)
    elif case == "storage claims 4 GB":
        _restore(crafted, numel=2**30 - 1)
        crafted.write_zip(path)
        _patched_central_size(path, f"archive/data/{crafted.key_of()}", 2**32 - 4)
    elif case == "two data.pkl":
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("other/data.pkl", b"")
    elif case == "byteorder garbage":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", _pickle(crafted.data))
            archive.writestr("archive/byteorder", b"\xff\xfe")
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=message) as caught:
        pretrained.load_model_and_alphabet_local(path)
    assert str(path) in str(caught.value)


MALICIOUS = [
    ("posix", "system"),
    ("builtins", "eval"),
    ("builtins", "getattr"),
    ("subprocess", "Popen"),
    ("torch", "load"),
]


@pytest.mark.parametrize(("module", "name"), MALICIOUS, ids=[f"{m}.{n}" for m, n in MALICIOUS])
def test_a_malicious_global_is_refused_without_running(crafted, tmp_path, module, name):
    marker = tmp_path / "pwned"
    crafted.data["args"] = _Call(module, name, f"touch {marker}")
    path = crafted.write_zip(tmp_path / "esm2_evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=f"refused to load '{module}.{name}'") as caught:
        pretrained.load_model_and_alphabet_local(path)
    assert str(path) in str(caught.value) and not marker.exists()


def test_codecs_encode_is_limited_to_latin1(crafted, tmp_path):
    crafted.data["args"] = _Call("_codecs", "encode", "abc", "rot13")
    path = crafted.write_zip(tmp_path / "esm2_codec.pt")
    with pytest.raises(UnsafeCheckpointError, match="refusing _codecs.encode with encoding 'rot13'"):
        pretrained.load_model_and_alphabet_local(path)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_an_intact_crafted_checkpoint_still_loads(crafted, weights, tmp_path, layout):
    path = tmp_path / "esm2_crafted.pt"
    crafted.write_zip(path) if layout == "zip" else crafted.write_legacy(path)
    model, _ = pretrained.load_model_and_alphabet_local(path, mesh=None)
    reference = build_model(CONFIG, seed=1)
    tokens = np.array([[0, 5, 6, 7, 2]])
    np.testing.assert_array_equal(model(tokens)["logits"], reference(tokens)["logits"])


@pytest.mark.parametrize(
    ("keys", "message"),
    [(lambda keys: keys[:-1], "missing from the file's storages"), (lambda keys: keys, "the file ends first")],
    ids=["storage not listed", "data cut short"],
)
def test_a_damaged_legacy_file_names_the_tensor(crafted, tmp_path, keys, message):
    key = crafted.key_of()
    order = [k for k in crafted.records if k != key] + [key]
    path = crafted.write_legacy(tmp_path / "esm2_legacy.pt", keys(order))
    if "ends" in message:
        path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match=message) as caught:
        pretrained.load_model_and_alphabet_local(path)
    assert str(path) in str(caught.value) and TARGET in str(caught.value)


def test_the_process_survives_strides_that_used_to_crash_it(crafted, tmp_path):
    """Negative and huge strides, through the API and ``esm-jax extract``, in a child process: no signal."""
    paths = []
    for i, changes in enumerate([{"stride": (-(2**40), 1)}, {"stride": (32, -1), "offset": 31}, {"offset": 2**62}]):
        original = dict(vars(crafted.model[TARGET]))
        _retarget(crafted, **changes)
        paths.append(str(crafted.write_zip(tmp_path / f"esm2_crash{i}.pt")))
        _retarget(crafted, **original)
    fasta = tmp_path / "one.fasta"
    fasta.write_text(">p\nMKTV\n")
    script = textwrap.dedent(
        f"""
        import sys
        from esm_jax import pretrained
        from esm_jax.cli.main import main
        from esm_jax.errors import CheckpointError
        for path in {paths!r}:
            try:
                pretrained.load_model_and_alphabet_local(path)
            except CheckpointError as error:
                print("refused", error)
            status = main(["extract", path, {str(fasta)!r}, {str(tmp_path / "out")!r}, "--include", "mean"])
            print("extract exit", status)
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("refused") == 3 and done.stdout.count("extract exit 2") == 3, done.stdout
    lines = [line for line in done.stderr.splitlines() if "esm-jax extract: error:" in line]
    assert len(lines) == 3 and all(TARGET in line for line in lines), done.stderr[-2000:]


# ---- esm-jax convert over existing outputs ----


@pytest.fixture
def source(crafted, tmp_path) -> Path:
    return crafted.write_zip(tmp_path / "esm2_crafted.pt")


def _convert(capsys, *args: str) -> tuple[int, list[str]]:
    """Run ``esm-jax convert``; its exit status and its error lines (progress lines left out)."""
    status = main(["convert", *map(str, args)])
    return status, [line for line in capsys.readouterr().err.splitlines() if "error" in line]


@pytest.mark.parametrize("existing", ["model file", "regression file", "folder"])
def test_convert_refuses_to_replace_an_existing_output(source, tmp_path, capsys, existing):
    destination = tmp_path / ("native" if existing == "folder" else "esm2_out.pt")
    victim = {"folder": destination / "notes.txt", "model file": destination}.get(
        existing, fair_esm.regression_path(destination)
    )
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("precious")
    listing = sorted(tmp_path.rglob("*"))
    status, err = _convert(capsys, source, destination)
    assert status == 2 and len(err) == 1 and "already exists; pass --overwrite" in err[0], err
    assert victim.read_text() == "precious" and sorted(tmp_path.rglob("*")) == listing


@pytest.mark.parametrize("kind", ["pt", "folder"])
def test_convert_overwrite_replaces_the_output_whole(source, tmp_path, capsys, kind):
    destination = tmp_path / ("esm2_out.pt" if kind == "pt" else "native")
    assert _convert(capsys, source, destination)[0] == 0
    before = _digest(destination) if kind == "pt" else None
    assert _convert(capsys, source, destination)[0] == 2
    assert _convert(capsys, source, destination, "--overwrite")[0] == 0
    if kind == "pt":
        assert _digest(destination) == before
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    model, _ = pretrained.load_model_and_alphabet_local(destination, mesh=None)
    assert model.config.num_layers == 1


def test_convert_refuses_a_folder_where_a_pt_file_belongs(source, tmp_path, capsys):
    (tmp_path / "esm2_dir.pt").mkdir()
    status, err = _convert(capsys, source, tmp_path / "esm2_dir.pt", "--overwrite")
    assert status == 2 and len(err) == 1 and "is a folder" in err[0]
    assert (tmp_path / "esm2_dir.pt").is_dir()


def test_a_failed_convert_leaves_the_old_output(source, tmp_path, capsys, crafted):
    destination = tmp_path / "esm2_out.pt"
    assert _convert(capsys, source, destination)[0] == 0
    before = _digest(destination)
    _retarget(crafted, stride=(-(2**40), 1))
    bad = crafted.write_zip(tmp_path / "esm2_bad.pt")
    status, err = _convert(capsys, bad, destination, "--overwrite")
    assert status == 2 and len(err) == 1 and TARGET in err[0]
    assert _digest(destination) == before


def test_a_convert_that_fails_while_writing_leaves_the_old_output(source, tmp_path, capsys, monkeypatch):
    destination = tmp_path / "esm2_out.pt"
    assert _convert(capsys, source, destination)[0] == 0
    before = _digest(destination)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("esm_jax.checkpoints.torch_writer._write_record", disk_full)
    status, err = _convert(capsys, source, destination, "--overwrite")
    assert status == 2 and len(err) == 1 and "No space left" in err[0]
    assert _digest(destination) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---- token ids outside the alphabet ----


@pytest.fixture(scope="module")
def tiny_model():
    return build_model(CONFIG, seed=0)


BAD_TOKENS = [
    ("id 100", [[0, 5, 100, 2]], "tokens\\[0, 2\\] is 100, not a token id of the alphabet \\(0 to 32\\)"),
    ("id -3", [[0, 5, -3, 2]], "tokens\\[0, 2\\] is -3"),
    ("id 33, one past the end", [[0, 5, 6, 2], [0, 33, 1, 1]], "tokens\\[1, 1\\] is 33"),
    ("int64 wrapping to a valid int32", np.array([[0, 2**32 + 5, 2]]), "is 4294967301"),
    ("float ids", np.array([[0.0, 5.5, 2.0]]), "integer token ids, got shape \\(1, 3\\) and dtype float64"),
    ("one-dimensional", np.array([0, 5, 2]), "got shape \\(3,\\)"),
    ("jax array", jnp.array([[0, 40, 2]]), "tokens\\[0, 1\\] is 40"),
]


@pytest.mark.parametrize(("tokens", "message"), [c[1:] for c in BAD_TOKENS], ids=[c[0] for c in BAD_TOKENS])
@pytest.mark.parametrize("entry", ["__call__", "embed"])
def test_token_ids_outside_the_alphabet_are_refused(tiny_model, tokens, message, entry):
    with pytest.raises(InvalidTokenError, match=message):
        getattr(tiny_model, entry)(tokens)


def test_valid_and_traced_tokens_still_run(tiny_model):
    tokens = np.array([[0, 5, 6, 32, 2]])
    logits = tiny_model(tokens)["logits"]
    traced = jax.jit(lambda t: tiny_model.forward(t)["logits"])(jnp.asarray(tokens))
    np.testing.assert_allclose(np.asarray(traced), np.asarray(logits), rtol=1e-5, atol=1e-5)


def _safetensors(path: Path, header: object, data: bytes = b"\0" * 16) -> Path:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ([1, 2], "header is a list, not a table of tensors"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, "must be non-negative whole numbers"),
        ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, "must be non-negative whole numbers"),
        ({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}}, "must be non-negative whole numbers"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, "ends \\(byte 0\\) before it begins"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, "two offsets"),
        ({"w": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 8]}}, "does not fit its byte range"),
        ({"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}, "does not fit its byte range"),
        ({"w": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}, "malformed header entry"),
        ({"w": "F32"}, "malformed header entry"),
    ],
    ids=[
        "list",
        "negative offset",
        "negative size",
        "float size",
        "reversed",
        "one offset",
        "overflow",
        "past end",
        "dtype",
        "entry not a dict",
    ],  # fmt: skip
)
def test_crafted_safetensors_headers_are_refused(tmp_path, header, message):
    path = _safetensors(tmp_path / "model.safetensors", header)
    with pytest.raises(CheckpointError, match=message) as caught:
        safetensors_reader.read_header(path)
    assert str(path) in str(caught.value)
