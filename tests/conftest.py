"""Shared test fixtures: an isolated cache, the real data folder and the UniRef sample datasets built once."""

from __future__ import annotations

import os

# The suite runs on CPU devices; libtpu (installed for `esm-jax plan`) must not be initialised here.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from itertools import islice  # noqa: E402
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The tests' offline data mirror (data_pipeline.layout reads it when no --data is given); children inherit it.
os.environ.setdefault("ESM_JAX_SHARED_DATA", str(REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Fetched checkpoints and compiled programs go to a temporary folder, not ~/.cache."""
    previous = os.environ.get("ESM_JAX_CACHE")
    os.environ["ESM_JAX_CACHE"] = str(tmp_path_factory.mktemp("esm_jax_cache"))
    yield
    if previous is None:
        os.environ.pop("ESM_JAX_CACHE", None)
    else:
        os.environ["ESM_JAX_CACHE"] = previous


def shared_data_dir() -> Path:
    """``$ESM_JAX_SHARED_DATA``, or ``<repo root>/../shared/data``: the real files tests read (never copied here)."""
    return Path(os.environ.get("ESM_JAX_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; tests that need it are skipped with the reason when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent (set ESM_JAX_SHARED_DATA to the shared/data folder)")
    return path


@pytest.fixture(scope="session")
def uniref_sample_files(shared_data: Path):
    """The UniRef50/UniRef90 cluster sample as builder inputs."""
    from data_pipeline.layout import CorpusFiles

    folder = shared_data / "uniref50_ur90_cluster_sample"
    return CorpusFiles(
        uniref50_fastas=(str(folder / "uniref50_train_filt.fasta"),),
        member_fastas=(str(folder / "ur90_ur50_sampler.fasta.gz"),),
        mapping_tsv=str(folder / "mapping.tsv"),
    )


@pytest.fixture(scope="session")
def uniref_sample_datasets(uniref_sample_files, tmp_path_factory) -> dict[str, Path]:
    """UR50/S, UR50/D and UR100 built locally from the sample, 4 shards per split; config name -> dataset folder."""
    from data_pipeline.build.dataset import build_dataset
    from data_pipeline.layout import CONFIG_NAMES

    out = tmp_path_factory.mktemp("uniref_sample")
    return {
        config: build_dataset(config, uniref_sample_files, out, num_shards=4, host_count=2).data_dir
        for config in CONFIG_NAMES
    }


def _write_fasta(path: Path, records: list[tuple[str, str]]) -> str:
    path.write_text("".join(f">{rid} test record\n{seq}\n" for rid, seq in records))
    return str(path)


@pytest.fixture
def write_fasta():
    """A function writing ``(id, sequence)`` pairs as a FASTA file at a path and returning the path."""
    return _write_fasta


@pytest.fixture
def flawed_corpus(uniref_sample_files, tmp_path):
    """Real sample records with one of every flaw: empty, bad character, duplicate id, orphan member/mapping entry."""
    from data_pipeline.layout import CorpusFiles
    from esm_jax.fasta import iter_fasta

    real = [(r.record_id, r.sequence) for r in islice(iter_fasta(uniref_sample_files.member_fastas[0]), 30)]
    members = real[:26] + [
        ("EMPTY_1", ""),
        ("BADCHAR_1", real[26][1][:10] + "J" + real[26][1][10:]),
        (real[3][0], real[27][1]),
        ("ORPHAN_1", real[28][1]),
    ]
    clusters = [f"UniRef50_C{i}" for i in range(8)]
    rows = ["UR50_cluster_name\tmapped_id"]
    for i, cluster in enumerate(clusters):
        ids = [rid for j, (rid, _) in enumerate(real[:26]) if j % 8 == i]
        if i == 0:
            ids += ["EMPTY_1", "BADCHAR_1", "MISSING_1"]
        if i == 1:
            ids.append(real[0][0])
        rows.append(f"{cluster}\t{','.join(ids)}")
    (tmp_path / "mapping.tsv").write_text("\n".join(rows) + "\n")
    reps = [(c, seq) for c, (_, seq) in zip(clusters, real, strict=False)] + [("UniRef50_C0", real[9][1])]
    return CorpusFiles(
        uniref50_fastas=(_write_fasta(tmp_path / "ur50.fasta", reps),),
        member_fastas=(_write_fasta(tmp_path / "members.fasta", members),),
        mapping_tsv=str(tmp_path / "mapping.tsv"),
    )
