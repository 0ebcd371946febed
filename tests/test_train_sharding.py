"""Sharded training gives the same result on any mesh, across processes, and after a change of mesh.

Each run is a subprocess of :mod:`tests.train_worker`, which trains the tiny config and dumps its final state.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np

from tests.train_helpers import REPO, cpu_environment, run_module

WORKER = "tests.train_worker"


def _load(path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path) as data:
        params = {key: data[key] for key in data.files}
    return params, json.loads(open(f"{path}.json").read())


def _assert_same(reference, other, rtol=2e-5, atol=1e-6):
    (params_a, facts_a), (params_b, facts_b) = reference, other
    np.testing.assert_allclose(facts_b["losses"], facts_a["losses"], rtol=rtol)
    assert params_a.keys() == params_b.keys()
    for key in params_a:
        np.testing.assert_allclose(params_b[key], params_a[key], rtol=rtol, atol=atol, err_msg=key)


def test_three_steps_agree_on_every_mesh_and_one_device(tmp_path):
    run_module(WORKER, [str(tmp_path / "one"), str(tmp_path / "one.npz")])
    reference = _load(tmp_path / "one.npz")
    assert len(reference[1]["losses"]) == 3
    for mesh in ("8x1x1", "2x4x1", "2x2x2"):
        run_module(WORKER, [str(tmp_path / mesh), str(tmp_path / f"{mesh}.npz"), "--mesh", mesh], devices=8)
        result = _load(tmp_path / f"{mesh}.npz")
        assert list(result[1]["mesh"].values()) == [int(size) for size in mesh.split("x")]
        _assert_same(reference, result)


def test_a_checkpoint_saved_on_one_mesh_restores_onto_another(tmp_path):
    workdir = str(tmp_path / "run")
    run_module(WORKER, [workdir, str(tmp_path / "saved.npz"), "--mesh", "2x4x1", "--steps", "2"], devices=8)
    run_module(WORKER, [workdir, str(tmp_path / "restored.npz"), "--mesh", "8x1x1", "--steps", "2"], devices=8)
    (saved, _), (restored, facts) = _load(tmp_path / "saved.npz"), _load(tmp_path / "restored.npz")
    assert facts["step"] == 2 and facts["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}
    assert saved.keys() == restored.keys()
    for key in saved:
        np.testing.assert_array_equal(restored[key], saved[key], err_msg=key)


def test_two_processes_equal_one_process_with_the_same_devices(tmp_path):
    processes = 2
    run_module(WORKER, [str(tmp_path / "single"), str(tmp_path / "single.npz")], devices=4)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workers = []
    for rank in range(processes):
        command = [sys.executable, "-m", WORKER, str(tmp_path / "multi"), str(tmp_path / "multi.npz")]
        command += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes), "--process-id", str(rank)]
        workers.append(
            subprocess.Popen(
                command, cwd=REPO, env=cpu_environment(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    for worker in workers:
        _, error = worker.communicate(timeout=600)
        assert worker.returncode == 0, error[-4000:]
    multi = _load(tmp_path / "multi.npz")
    assert (multi[1]["devices"], multi[1]["local_devices"]) == (4, 2)
    _assert_same(_load(tmp_path / "single.npz"), multi)
