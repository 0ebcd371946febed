"""The pretraining data's names and places, shared by the build side, the input side and the evaluations.

The build side (:mod:`data_pipeline.build`) writes ``<out>/uniref_mlm/<config>/<version>/``; the input side
(:mod:`data_pipeline.input`), the trainer's data factory, the held-out evaluation and the benchmarks read it. All of
them take the dataset name, version, configs, corpus kinds, split names, build inputs and the UniRef sample's file
names from here, so a version bump moves every reader together with the writer. :func:`ensure_dataset` returns the
current version of a dataset, building it on first use, and refuses a folder written by another version.
Importing this module never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

from data_pipeline.errors import DataPipelineError

LOGGER = logging.getLogger("data_pipeline")

DATASET_NAME = "uniref_mlm"
VERSION = "1.0.0"
INFO_NAME = "dataset_info.json"
REPORT_NAME = "bad_records.json"

# What a config's examples are made of (Rives et al., PNAS 2021, "pre-training datasets").
REPRESENTATIVES = "representatives"
CLUSTER_DRAWS = "cluster_draws"
MEMBERS = "members"
CONFIG_CORPORA = {"ur50_s": REPRESENTATIVES, "ur50_d": CLUSTER_DRAWS, "ur100": MEMBERS}
CONFIG_NAMES = tuple(CONFIG_CORPORA)

TRAIN = "train"
VALIDATION = "validation"
HELDOUT_SALT = "esm-jax/heldout/v1"

# The UniRef50/UniRef90 cluster sample in the shared data folder.
SAMPLE_FOLDER = "uniref50_ur90_cluster_sample"
SAMPLE_FILES = {
    "uniref50": "uniref50_train_filt.fasta",
    "members": "ur90_ur50_sampler.fasta.gz",
    "mapping": "mapping.tsv",
}
# The data root when no folder is named; then the default cache. $ESM_JAX_SHARED_DATA and a local
# $ESM_JAX_DATA_MIRROR are offline mirrors: datasets missing from the data root are read from them in place.
DATA_ROOT_VARIABLE = "ESM_JAX_DATA"
MIRROR_VARIABLES = ("ESM_JAX_SHARED_DATA", "ESM_JAX_DATA_MIRROR")


class StaleDatasetError(DataPipelineError):
    """A dataset folder was written by another version of the builder than the one this code reads."""


class DatasetMissingError(DataPipelineError, FileNotFoundError):
    """A dataset a task reads is not in the data root (nor in an offline mirror)."""


@dataclasses.dataclass(frozen=True)
class CorpusFiles:
    """Input files: UniRef50 representatives, and for UR50/D and UR100 the member FASTA files plus the mapping."""

    uniref50_fastas: tuple[str, ...] = ()
    member_fastas: tuple[str, ...] = ()
    mapping_tsv: str | None = None


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """Choices that change the data written; stored in the dataset's ``metadata.json``."""

    heldout_fraction: float = 0.1
    heldout_salt: str = HELDOUT_SALT
    on_bad_record: str = "skip"
    upper_case: bool = False
    draws_per_cluster: float = 1.0
    sampling_seed: int = 0
    use_beam: bool = False
    report_dir: str | None = None


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where fetched datasets live: ``explicit`` (a --data flag), else ``$ESM_JAX_DATA``, else the cache
    ``$ESM_JAX_CACHE/data`` (default ``~/.cache/esm_jax/data``), which ``esm-jax data fetch`` fills."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(DATA_ROOT_VARIABLE):
        return Path(os.environ[DATA_ROOT_VARIABLE])
    return Path(os.environ.get("ESM_JAX_CACHE") or Path.home() / ".cache" / "esm_jax") / "data"


def offline_mirrors() -> list[Path]:
    """Local folders laid out like the data root (``$ESM_JAX_SHARED_DATA``, a local ``$ESM_JAX_DATA_MIRROR``)."""
    mirrors = []
    for variable in MIRROR_VARIABLES:
        value = os.environ.get(variable, "")
        value = value.removeprefix("file://")
        if value and "://" not in value:
            mirrors.append(Path(value))
    return mirrors


def locate(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The folder of dataset ``name``, which may be missing.

    A ``root`` other than the default data root is taken as given (a --data flag is never second-guessed);
    otherwise the data root is looked in first, then the offline mirrors.
    """
    default = data_root()
    if root is not None and Path(root) != default:
        return Path(root) / name
    for candidate in (default, *offline_mirrors()):
        if (candidate / name).is_dir():
            return candidate / name
    return default / name


def require(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The folder of dataset ``name`` (see :func:`locate`); when it is missing, the error names the fetch command."""
    folder = locate(name, root)
    if not folder.is_dir():
        from data_pipeline.manifest import fetch_command

        command = fetch_command(name, root if root is not None and Path(root) != data_root() else None)
        raise DatasetMissingError(f"dataset {name} is not in {folder.parent}: fetch it with `{command}`")
    return folder


def dataset_file(
    relative: str | os.PathLike[str], root: str | os.PathLike[str] | None = None, required: bool = True
) -> Path:
    """``DATASET/path/in/it`` resolved through the dataset's folder (:func:`require`, or :func:`locate` when the
    file is optional)."""
    name, *rest = Path(relative).parts
    return (require(name, root) if required else locate(name, root)).joinpath(*rest)


def sample_corpus(root: str | os.PathLike[str] | None = None) -> CorpusFiles:
    """The UniRef sample (under ``root``, or found by :func:`require`) as builder inputs, after checking its files."""
    folder = require(SAMPLE_FOLDER, root)
    missing = [name for name in SAMPLE_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise DatasetMissingError(
            f"{folder}: missing {', '.join(missing)}; fetch the sample again with "
            f"`esm-jax data fetch {SAMPLE_FOLDER} --force` or pass --dataset with an already built dataset"
        )
    return CorpusFiles(
        uniref50_fastas=(str(folder / SAMPLE_FILES["uniref50"]),),
        member_fastas=(str(folder / SAMPLE_FILES["members"]),),
        mapping_tsv=str(folder / SAMPLE_FILES["mapping"]),
    )


def source_key(files: CorpusFiles) -> str:
    """A short digest of build inputs (paths, sizes, modification times): datasets built from other inputs get
    another cache folder, so ``--data DIR`` never silently reuses a dataset built from somewhere else."""
    paths = [*files.uniref50_fastas, *files.member_fastas, *([files.mapping_tsv] if files.mapping_tsv else [])]
    digest = hashlib.sha256()
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"{Path(path).resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def dataset_folder(out_dir: str | os.PathLike[str], config: str) -> Path:
    """Where the current version of ``config`` lives under a build output folder."""
    return Path(out_dir) / DATASET_NAME / config / VERSION


def is_dataset(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a finished dataset (its ``dataset_info.json``), of any version."""
    return (Path(path) / INFO_NAME).is_file()


def check_dataset(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, after checking it is a finished dataset of the version this code reads."""
    path = Path(path)
    if not is_dataset(path):
        raise FileNotFoundError(
            f"{path}: not a built dataset (no {INFO_NAME}); pass the version folder, e.g. "
            f"data/{DATASET_NAME}/ur50_s/{VERSION}, as written by esm-jax build-data"
        )
    found = json.loads((path / INFO_NAME).read_text(encoding="utf-8")).get("version")
    if found != VERSION:
        raise StaleDatasetError(
            f"{path} holds version {found} of the {DATASET_NAME} dataset but this code reads version {VERSION}; "
            f"rebuild it with esm-jax build-data (it writes <out>/{DATASET_NAME}/<config>/{VERSION})"
        )
    return path


def ensure_dataset(
    config: str,
    root: str | os.PathLike[str] | None,
    cache: str | os.PathLike[str],
    *,
    files: CorpusFiles | None = None,
    options: BuildOptions | None = None,
) -> Path:
    """The current version of ``config`` under ``cache``, built there on first use.

    The build reads ``files``, or the UniRef sample under ``data_root(root)`` when none are given, and follows
    ``options``. An existing folder is used only if it holds a finished dataset of this version.
    """
    folder = dataset_folder(cache, config)
    if folder.exists():
        return check_dataset(folder)
    files = files if files is not None else sample_corpus(root)
    from data_pipeline.build.dataset import build_dataset

    LOGGER.info("building the %s dataset into %s", config, cache)
    return build_dataset(config, files, cache, options).data_dir
