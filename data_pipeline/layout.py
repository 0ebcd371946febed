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
# Checked in this order when no data folder is named; the first that is set wins.
DATA_ROOT_VARIABLES = ("ESM_JAX_DATA", "ESM_JAX_SHARED_DATA")


class StaleDatasetError(DataPipelineError):
    """A dataset folder was written by another version of the builder than the one this code reads."""


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
    """The shared data folder: ``explicit``, else ``$ESM_JAX_DATA``, else ``$ESM_JAX_SHARED_DATA``, else
    ``../shared/data`` beside the repository the working directory is in."""
    if explicit is not None:
        return Path(explicit)
    for variable in DATA_ROOT_VARIABLES:
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path.cwd().parent / "shared" / "data"


def sample_corpus(root: str | os.PathLike[str] | None = None) -> CorpusFiles:
    """The UniRef sample under ``data_root(root)`` as builder inputs, after checking its files are there."""
    folder = data_root(root) / SAMPLE_FOLDER
    missing = [name for name in SAMPLE_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: missing {', '.join(missing)}; point --data (or $ESM_JAX_DATA) at the shared data folder or "
            "pass --dataset with an already built dataset (esm-jax build-data)"
        )
    return CorpusFiles(
        uniref50_fastas=(str(folder / SAMPLE_FILES["uniref50"]),),
        member_fastas=(str(folder / SAMPLE_FILES["members"]),),
        mapping_tsv=str(folder / SAMPLE_FILES["mapping"]),
    )


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
