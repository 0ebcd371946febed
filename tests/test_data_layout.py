"""The data layout: where the shared data folder is, and ensure_dataset finding, building or refusing a dataset."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from data_pipeline import layout
from esm_jax.alphabet import STANDARD_AMINO_ACIDS


def test_data_root_is_the_flag_then_esm_jax_data_then_the_cache_and_mirrors_are_read_in_place(tmp_path, monkeypatch):
    for variable in ("ESM_JAX_DATA", *layout.MIRROR_VARIABLES):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ESM_JAX_CACHE", str(tmp_path / "cache"))
    assert layout.data_root() == tmp_path / "cache" / "data"
    monkeypatch.setenv("ESM_JAX_DATA", str(tmp_path / "data_variable"))
    assert layout.data_root() == tmp_path / "data_variable"
    assert layout.data_root(tmp_path / "given") == tmp_path / "given"
    (tmp_path / "shared" / "ss8_netsurfp2").mkdir(parents=True)
    monkeypatch.setenv("ESM_JAX_SHARED_DATA", str(tmp_path / "shared"))
    assert layout.require("ss8_netsurfp2") == tmp_path / "shared" / "ss8_netsurfp2"
    with pytest.raises(layout.DatasetMissingError, match="esm-jax data fetch ss8_netsurfp2 --data"):
        layout.require("ss8_netsurfp2", tmp_path / "given")


def test_the_held_out_dataset_cache_is_keyed_by_its_source(sample_root, tmp_path):
    key = layout.source_key(layout.sample_corpus(sample_root))
    other = tmp_path / "other"
    (other / layout.SAMPLE_FOLDER).mkdir(parents=True)
    for path in (sample_root / layout.SAMPLE_FOLDER).iterdir():
        (other / layout.SAMPLE_FOLDER / path.name).write_bytes(path.read_bytes())
    assert layout.source_key(layout.sample_corpus(other)) != key


def test_importing_the_layout_does_not_import_tensorflow():
    code = (
        "import sys, data_pipeline.layout\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"


@pytest.fixture
def sample_root(tmp_path):
    """A data root holding a small synthetic UniRef sample: 200 clusters of one member each."""
    rng = np.random.default_rng(0)
    letters = np.array(list(STANDARD_AMINO_ACIDS))
    clusters = [(f"UniRef50_T{i}", "".join(rng.choice(letters, size=int(rng.integers(20, 80))))) for i in range(200)]
    folder = tmp_path / "root" / layout.SAMPLE_FOLDER
    folder.mkdir(parents=True)
    fasta = "".join(f">{cluster} n=1\n{sequence}\n" for cluster, sequence in clusters)
    (folder / layout.SAMPLE_FILES["uniref50"]).write_text(fasta)
    members = "".join(f">M{i}\n{sequence}\n" for i, (_, sequence) in enumerate(clusters))
    (folder / layout.SAMPLE_FILES["members"]).write_bytes(gzip.compress(members.encode()))
    mapping = "".join(f"{cluster}\tM{i}\n" for i, (cluster, _) in enumerate(clusters))
    (folder / layout.SAMPLE_FILES["mapping"]).write_text("cluster\tmembers\n" + mapping)
    return tmp_path / "root"


def test_ensure_dataset_builds_the_current_version_once_and_then_finds_it(sample_root, tmp_path):
    cache = tmp_path / "cache"
    built = layout.ensure_dataset("ur50_s", sample_root, cache)
    assert built == cache / layout.DATASET_NAME / "ur50_s" / layout.VERSION
    info = built / layout.INFO_NAME
    assert json.loads(info.read_text())["version"] == layout.VERSION
    written = info.stat().st_mtime_ns
    assert layout.ensure_dataset("ur50_s", tmp_path / "nowhere", cache) == built
    assert info.stat().st_mtime_ns == written
    assert layout.check_dataset(built) == built


def test_a_dataset_of_another_version_is_refused_and_never_used_instead(sample_root, tmp_path):
    cache = tmp_path / "cache"
    stale = cache / layout.DATASET_NAME / "ur50_s" / "0.9.0"
    stale.mkdir(parents=True)
    (stale / layout.INFO_NAME).write_text(json.dumps({"name": layout.DATASET_NAME, "version": "0.9.0"}))
    with pytest.raises(layout.StaleDatasetError, match=rf"version 0\.9\.0 .* reads version {layout.VERSION}.*rebuild"):
        layout.check_dataset(stale)
    assert layout.ensure_dataset("ur50_s", sample_root, cache) == layout.dataset_folder(cache, "ur50_s")
    relabelled = layout.dataset_folder(tmp_path / "copied", "ur50_s")
    relabelled.mkdir(parents=True)
    (relabelled / layout.INFO_NAME).write_text(json.dumps({"version": "0.9.0"}))
    with pytest.raises(layout.StaleDatasetError, match="esm-jax build-data"):
        layout.ensure_dataset("ur50_s", sample_root, tmp_path / "copied")


def test_missing_inputs_and_unfinished_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"esm-jax data fetch {layout.SAMPLE_FOLDER} --data"):
        layout.ensure_dataset("ur50_s", tmp_path / "empty_root", tmp_path / "cache")
    (tmp_path / "empty_root" / layout.SAMPLE_FOLDER).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"missing {layout.SAMPLE_FILES['uniref50']}"):
        layout.ensure_dataset("ur50_s", tmp_path / "empty_root", tmp_path / "cache")
    unfinished = layout.dataset_folder(tmp_path / "cache", "ur100")
    unfinished.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="not a built dataset"):
        layout.ensure_dataset("ur100", tmp_path / "empty_root", tmp_path / "cache")
