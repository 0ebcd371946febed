"""The datasets a user can fetch: ``datasets.toml`` read into typed entries, plus content checksums.

Every dataset that a task, the trainer or a benchmark reads is listed in ``data_pipeline/datasets.toml`` with its
public source, licence, checksums and how to unpack it (see the file's header). ``esm-jax data`` acts on it
(:mod:`data_pipeline.fetch_cli`); :func:`data_pipeline.layout.require` names the fetch command when one is missing.
Importing this module never imports TensorFlow or JAX.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import tomllib
from pathlib import Path

from data_pipeline.errors import DataPipelineError

MANIFEST_PATH = Path(__file__).with_name("datasets.toml")
UNPACK_KINDS = ("file", "zip", "tar")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


class ManifestError(DataPipelineError, ValueError):
    """The manifest file is malformed."""


class UnknownDatasetError(DataPipelineError, KeyError):
    """A dataset name that the manifest does not list."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class Download:
    """One public file: where it is, what it should hash to (``""`` = unknown) and how it becomes dataset files."""

    url: str
    size: int
    sha256: str
    verified: bool
    same_bytes: bool
    unpack: str
    to: str = ""
    members: dict[str, str] = dataclasses.field(default_factory=dict)
    note: str = ""

    @property
    def filename(self) -> str:
        """The file's name on a mirror: the last part of its URL."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclasses.dataclass(frozen=True)
class FileCheck:
    """A file a task reads: SHA-256 and size of its content (uncompressed, for ``.gz`` files)."""

    sha256: str
    size: int


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A manifest entry; ``name`` is also its folder under the data root."""

    name: str
    title: str
    kind: str
    licence: str
    source: str
    used_by: tuple[str, ...]
    downloads: tuple[Download, ...]
    files: dict[str, FileCheck]
    derived: dict[str, str]
    note: str = ""


def load(path: str | os.PathLike[str] | None = None) -> dict[str, Dataset]:
    """Every dataset of the manifest at ``path`` (default: the one beside this module), by name."""
    path = Path(path) if path is not None else Path(os.environ.get("ESM_JAX_DATA_MANIFEST") or MANIFEST_PATH)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("datasets", {})
        return {name: _dataset(name, entry) for name, entry in table.items()}
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as error:
        raise ManifestError(f"{path}: not a valid dataset manifest ({error})") from None


def get(name: str, datasets: dict[str, Dataset] | None = None) -> Dataset:
    """The dataset called ``name``; an unknown name is refused with the list of known ones."""
    datasets = load() if datasets is None else datasets
    if name not in datasets:
        raise UnknownDatasetError(f"unknown dataset {name!r}; known: {', '.join(datasets)} (esm-jax data list)")
    return datasets[name]


def fetch_command(name: str, root: str | os.PathLike[str] | None = None) -> str:
    """The exact command that fetches ``name`` (into ``root`` when one is named)."""
    return f"esm-jax data fetch {name}" + (f" --data {root}" if root is not None else "")


def content_sha256(path: str | os.PathLike[str]) -> tuple[str, int]:
    """SHA-256 and size of a file's content: of the uncompressed bytes for ``.gz`` files, the raw bytes otherwise."""
    digest, size = hashlib.sha256(), 0
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's raw bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _dataset(name: str, entry: dict) -> Dataset:
    downloads = tuple(_download(name, item) for item in entry.get("downloads", []))
    files = {path: FileCheck(check["sha256"], int(check["size"])) for path, check in entry.get("files", {}).items()}
    for path, check in files.items():
        if not SHA256_PATTERN.fullmatch(check.sha256):
            raise ValueError(f"dataset {name}: file {path}: sha256 must be 64 lower-case hex digits")
    return Dataset(
        name=name,
        title=entry["title"],
        kind=entry["kind"],
        licence=entry["licence"],
        source=entry["source"],
        used_by=tuple(entry.get("used_by", ())),
        downloads=downloads,
        files=files,
        derived=dict(entry.get("derived", {})),
        note=entry.get("note", ""),
    )


def _download(name: str, item: dict) -> Download:
    download = Download(
        url=item["url"],
        size=int(item.get("size", 0)),
        sha256=item.get("sha256", ""),
        verified=bool(item.get("verified", False)),
        same_bytes=bool(item.get("same_bytes", False)),
        unpack=item.get("unpack", "file"),
        to=item.get("to", ""),
        members=dict(item.get("members", {})),
        note=item.get("note", ""),
    )
    if download.unpack not in UNPACK_KINDS:
        raise ValueError(f"dataset {name}: {download.url}: unpack must be one of {', '.join(UNPACK_KINDS)}")
    if download.sha256 and not SHA256_PATTERN.fullmatch(download.sha256):
        raise ValueError(f"dataset {name}: {download.url}: sha256 must be 64 lower-case hex digits or empty")
    if download.verified != bool(download.sha256):
        raise ValueError(f"dataset {name}: {download.url}: verified must be true exactly when sha256 is given")
    if (download.unpack == "file") != bool(download.to):
        raise ValueError(f"dataset {name}: {download.url}: 'to' names the file of an unpack = \"file\" download")
    return download
