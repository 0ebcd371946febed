"""Inference at scale: every device and mesh gives the same outputs, processes split the work, killed runs resume."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from esm_jax import pretrained
from esm_jax.cli.main import main
from esm_jax.errors import EsmJaxError
from esm_jax.fasta import bundled_proteome, read_fasta
from esm_jax.inference.extract import extract, load_extracted, output_names, process_share, shard_chunks
from esm_jax.inference.sharded_outputs import ExtractedShards
from tests.eval_tiny_model import save_tiny_checkpoint
from tests.train_helpers import REPO, run_python

INCLUDE = ["--include", "mean", "per_tok", "bos", "contacts"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path, list[tuple[str, str]]]:
    """A tiny ESM-2 checkpoint and the first 24 proteins of the bundled proteome (up to 600 residues)."""
    folder = tmp_path_factory.mktemp("scale")
    proteome = islice(read_fasta(bundled_proteome(), strip_stop=True), 24)
    records = [(label, sequence[:600]) for label, sequence in proteome]
    fasta = folder / "proteins.fasta"
    fasta.write_text("".join(f">{label}\n{sequence}\n" for label, sequence in records))
    return save_tiny_checkpoint(folder), fasta, records


def _extract_with_meshes(devices: int, checkpoint: Path, fasta: Path, out: Path, meshes: list[str]) -> None:
    script = f"""
import jax
from esm_jax import pretrained
from esm_jax.cli.main import main
assert jax.local_device_count() == {devices}
for mesh in {meshes!r}:
    folder = {str(out)!r} + "/" + mesh.replace(",", "_").replace("=", "")
    command = ["extract", {str(checkpoint)!r}, {str(fasta)!r}, folder, *{INCLUDE!r}, "--repr-layers", "0", "-1"]
    assert main([*command, "--toks-per-batch", "1024", "--mesh", mesh]) == 0
if {devices} == 8:
    model, _ = pretrained.load_model_and_alphabet({str(checkpoint)!r}, mesh="fsdp=8")
    kernel = model.layers.fc1.kernel[...]
    assert len(kernel.sharding.device_set) == 8 and kernel.addressable_shards[0].data.shape == (2, 4, 128), kernel
print("ok")
"""
    assert run_python(script, devices=devices).stdout.strip().endswith("ok")


def _outputs(folder: Path, labels: list[str]) -> dict[str, dict]:
    names = output_names(labels)
    return {label: load_extracted(folder / f"{name}.npz") for label, name in zip(labels, names, strict=True)}


def _max_difference(got: dict[str, dict], expected: dict[str, dict]) -> float:
    """Largest difference over every array of every record, relative to the largest value of its array."""
    worst = 0.0
    for label, reference in expected.items():
        for key, value in reference.items():
            if key == "label":
                continue
            pairs = (
                [(got[label][key][layer], value[layer]) for layer in value]
                if isinstance(value, dict)
                else [(got[label][key], value)]
            )
            for a, b in pairs:
                worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))
    return worst


def test_extract_gives_the_same_outputs_on_1_4_and_8_devices_and_every_mesh(inputs, tmp_path, capsys):
    """Prints each run's largest relative difference from one device (``pytest -s`` shows them)."""
    checkpoint, fasta, records = inputs
    _extract_with_meshes(1, checkpoint, fasta, tmp_path / "one", ["auto"])
    _extract_with_meshes(4, checkpoint, fasta, tmp_path / "four", ["auto"])
    meshes = ["auto", "data=2,fsdp=4", "data=2,fsdp=2,tensor=2", "fsdp=8"]
    _extract_with_meshes(8, checkpoint, fasta, tmp_path / "eight", meshes)
    labels = [label for label, _ in records]
    expected = _outputs(tmp_path / "one" / "auto", labels)
    assert len(expected) == 24 and set(expected[labels[0]]) == {
        "label", "representations", "mean_representations", "bos_representations", "contacts"
    }  # fmt: skip
    folders = [tmp_path / "four" / "auto", *(tmp_path / "eight" / m.replace(",", "_").replace("=", "") for m in meshes)]
    for folder in folders:
        difference = _max_difference(_outputs(folder, labels), expected)
        with capsys.disabled():
            print(f"\n{folder.parent.name} devices, mesh {folder.name}: largest difference {difference:.1e}")
        assert difference < 1e-5, folder


def test_process_shares_are_disjoint_balanced_and_cover_every_record():
    lengths = [5, 300, 12, 250, 40, 40, 7, 90, 600, 3]
    shares = [process_share(lengths, process, 3) for process in range(3)]
    assert sorted(i for share in shares for i in share) == list(range(10))
    residues = [sum(lengths[i] for i in share) for share in shares]
    assert max(residues) - min(residues) <= max(lengths)
    assert all(share == sorted(share) for share in shares)
    assert shard_chunks([0, 1, 2, 3], [50, 60, 30, 200], 100) == [[0], [1, 2], [3]]
    with pytest.raises(ValueError, match="process id 3 is not in 0..2"):
        process_share(lengths, 3, 3)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "esm_jax.cli.main", *args]


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def _slurm_task(task: int, job: int) -> dict[str, str]:
    """The variables SLURM gives task ``task`` of a 2-task job on this host (jax.distributed reads them)."""
    return {"SLURM_JOB_ID": str(job), "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
            "SLURM_PROCID": str(task), "SLURM_LOCALID": str(task)}  # fmt: skip


@pytest.mark.parametrize("join", ["--process-id", "--distributed auto"])
def test_two_processes_split_a_fasta_and_together_write_every_record_once(inputs, tmp_path, join):
    checkpoint, fasta, records = inputs
    out = tmp_path / "split"
    command = ["extract", str(checkpoint), str(fasta), str(out), "--include", "mean"]
    job = random.randrange(1 << 20)
    workers = [
        subprocess.Popen(
            _cli(*command, "--num-processes", "2", "--process-id", str(i))
            if join == "--process-id"
            else _cli(*command, "--distributed", "auto"),
            env=_environment() if join == "--process-id" else {**_environment(), **_slurm_task(i, job)},
            cwd=REPO,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    for worker in workers:
        assert worker.wait(timeout=600) == 0, worker.stderr.read().decode()[-3000:]
    parts = [(out / f"index-{i:05d}-of-00002.tsv").read_text().splitlines()[1:] for i in range(2)]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    index = (out / "index.tsv").read_text().splitlines()
    assert index[0] == "file\tlabel"
    assert [line.split("\t", 1)[1] for line in index[1:]] == [label for label, _ in records]
    assert main(["extract", str(checkpoint), str(fasta), str(tmp_path / "single"), "--include", "mean"]) == 0
    labels = [label for label, _ in records]
    assert _max_difference(_outputs(out, labels), _outputs(tmp_path / "single", labels)) < 1e-5


def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_result(inputs, tmp_path):
    _, fasta, records = inputs
    model = ["esm2_t6_8M_UR50D", "--random-weights"]
    options = ["--include", "mean", "per_tok", "--format", "shards", "--residues-per-shard", "800"]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    worker = subprocess.Popen(
        _cli("extract", model[0], str(fasta), str(killed), model[1], *options), env=_environment(), cwd=REPO
    )
    deadline = time.monotonic() + 600
    while not list((killed / "shards").glob("p*")) and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    done = {path.name for path in (killed / "shards").glob("p*")}
    assert done and not (killed / "index.tsv").exists(), "the kill should land after the first shard, before the end"
    before = {name: (killed / "shards" / name / "records.tsv").stat().st_mtime_ns for name in done}
    assert main(["extract", model[0], str(fasta), str(killed), model[1], *options]) == 0
    assert main(["extract", model[0], str(fasta), str(whole), model[1], *options]) == 0
    assert {name: (killed / "shards" / name / "records.tsv").stat().st_mtime_ns for name in done} == before
    assert not list(killed.glob("**/.*.partial")), "temporary shards of the killed run are cleaned up"
    resumed, reference = ExtractedShards(killed), ExtractedShards(whole)
    assert resumed.labels == reference.labels == [label for label, _ in records]
    for label in reference.labels:
        for group in ("representations", "mean_representations"):
            np.testing.assert_allclose(resumed[label][group][6], reference[label][group][6], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(resumed.means(6), reference.means(6))


def test_shards_hold_what_the_per_protein_files_hold(inputs, tmp_path):
    checkpoint, fasta, records = inputs
    model, _ = pretrained.load_model_and_alphabet(str(checkpoint))
    options = {"repr_layers": [0, 2], "include": ["mean", "per_tok", "bos", "contacts"], "show_progress": False}
    extract(model, records, tmp_path / "files", **options)
    summary = extract(model, records, tmp_path / "shards", output_format="shards", residues_per_shard=1500, **options)
    assert summary.computed == len(records) and len(list((tmp_path / "shards" / "shards").iterdir())) > 2
    shards = ExtractedShards(tmp_path / "shards")
    labels = [label for label, _ in records]
    files = _outputs(tmp_path / "files", labels)
    assert _max_difference({label: shards[label] for label in labels}, files) < 1e-6
    assert shards[labels[3]]["contacts"].shape == files[labels[3]]["contacts"].shape
    rerun = extract(model, records, tmp_path / "shards", output_format="shards", residues_per_shard=1500, **options)
    assert rerun.computed == 0


def test_a_rerun_with_other_settings_is_refused_before_anything_is_written(inputs, tmp_path):
    checkpoint, fasta, _ = inputs
    out = tmp_path / "out"
    assert main(["extract", str(checkpoint), str(fasta), str(out), "--include", "mean"]) == 0
    written = sorted(path.name for path in out.iterdir())
    model, _ = pretrained.load_model_and_alphabet(str(checkpoint))
    with pytest.raises(EsmJaxError, match=r"include: \['mean'\] there, \['bos', 'mean'\] now"):
        extract(model, read_fasta(fasta), out, include=["mean", "bos"], model_name=str(checkpoint), show_progress=False)
    assert sorted(path.name for path in out.iterdir()) == written


def test_the_beam_pipeline_on_the_local_runner_equals_extract(inputs, tmp_path):
    checkpoint, fasta, records = inputs
    beam_options = ["--runner", "beam", "--format", "shards", "--beam-shards", "3"]
    command = ["extract", str(checkpoint), str(fasta), str(tmp_path / "beam"), "--include", "mean", "per_tok"]
    assert main([*command, *beam_options]) == 0
    assert main(["extract", str(checkpoint), str(fasta), str(tmp_path / "files"), "--include", "mean", "per_tok"]) == 0
    labels = [label for label, _ in records]
    beamed = ExtractedShards(tmp_path / "beam")
    assert sorted(beamed.labels) == sorted(labels) and len(list((tmp_path / "beam" / "shards").iterdir())) == 3
    assert _max_difference({label: beamed[label] for label in labels}, _outputs(tmp_path / "files", labels)) < 1e-5


LOAD_INTO_SHARDS = """
import sys, tracemalloc
import jax, numpy as np
from esm_jax import ModelConfig, build_model, pretrained
path = sys.argv[1]
reference = build_model(ModelConfig("esm2", 4, 256, 8, 1024), seed=5)
pretrained.save_fair_esm(reference, path)
tokens = np.array([[0, 20, 15, 11, 4, 9, 2, 1], [0, 5, 6, 7, 8, 9, 10, 2]])
expected = np.asarray(reference(tokens)["logits"])
del reference
tracemalloc.start()
model, _ = pretrained.load_model_and_alphabet(path, mesh="fsdp=8")
_, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
state = jax.tree.leaves(__import__("flax").nnx.state(model))
total = sum(leaf.size * 4 for leaf in state)
largest = max(leaf.size * 4 for leaf in state) // 4  # one layer's fc1 (256 x 1024 float32)
assert peak < 4 * largest and peak < total / 3, (peak, largest, total)  # without a mesh: 8.7 MB, 2 / 3 of total
for leaf in state:
    if leaf.ndim and leaf.shape[-1] % 8 == 0 and leaf.size > 4096:
        assert {shard.data.size for shard in leaf.addressable_shards} == {leaf.size // 8}, leaf.shape
error = np.abs(np.asarray(model(tokens)["logits"]) - expected).max() / np.abs(expected).max()
assert error < 1e-5, error
from esm_jax.checkpoints import native
native.save(model, path + ".orbax")
restored, _ = pretrained.load_model_and_alphabet(path + ".orbax", mesh="fsdp=8")
kernel = restored.layers.fc1.kernel[...]
assert {shard.data.shape for shard in kernel.addressable_shards} == {(4, 32, 1024)}, kernel.sharding
np.testing.assert_array_equal(np.asarray(restored(tokens)["logits"]), np.asarray(model(tokens)["logits"]))
print("ok", peak, largest, total)
"""


def test_a_checkpoint_loads_straight_into_its_shards_one_tensor_at_a_time(tmp_path):
    """FSDP over 8 devices: each device holds an eighth of every large variable, and the host never more
    than about one checkpoint tensor (tracemalloc counts the NumPy buffers the reader makes); an esm-jax
    (Orbax) folder restores into the same shards."""
    result = run_python(LOAD_INTO_SHARDS, devices=8, args=[str(tmp_path / "esm2_t4.pt")])
    assert result.stdout.startswith("ok")


SCORING_ON_A_MESH = """
import numpy as np
from esm_jax import pretrained
from esm_jax.inference.mutations import parse_mutants
from esm_jax.inference.variant_scoring import STRATEGIES, score_mutants, sequence_log_likelihoods
wild_type = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
mutants = parse_mutants(["K2A", "T3W", "A4G:Y5F", "Q33L", "M1V"], wild_type)
models = {spec: pretrained.random_model_and_alphabet("esm2_t6_8M_UR50D", seed=1, mesh=spec)[0]
          for spec in (None, "auto", "data=2,fsdp=4")}
assert models["auto"].batch_shards == 8 and models[None].mesh is None
for strategy in STRATEGIES:
    scores = {spec: score_mutants(model, wild_type, mutants, strategy, toks_per_batch=128)
              for spec, model in models.items()}
    for spec, values in scores.items():
        np.testing.assert_allclose(values, scores[None], rtol=1e-5, atol=1e-5, err_msg=f"{strategy} {spec}")
plls = [sequence_log_likelihoods(model, [wild_type, wild_type[:20]]) for model in models.values()]
np.testing.assert_allclose(plls[1], plls[0], rtol=1e-5)
np.testing.assert_allclose(plls[2], plls[0], rtol=1e-5)
print("ok")
"""


def test_variant_scores_are_the_same_on_every_mesh():
    assert run_python(SCORING_ON_A_MESH, devices=8).stdout.strip().endswith("ok")
