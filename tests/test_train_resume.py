"""A run killed at any moment and restarted from its workdir ends bit-for-bit where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.train_helpers import REPO, tiny_cli_overrides

OVERRIDES = tiny_cli_overrides(total_steps=8)


def _command(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "esm_jax.cli.main", "train", "--config", "configs/pretrain.py:tiny",
            "--workdir", str(workdir), *OVERRIDES]  # fmt: skip


def _environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def _train(workdir: Path) -> None:
    result = subprocess.run(
        _command(workdir), cwd=REPO, env=_environment(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _steps_logged(workdir: Path) -> int:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum('"train"' in line for line in path.read_text().splitlines())


def _interrupt(workdir: Path, signum: int, after_steps: int) -> subprocess.Popen:
    process = subprocess.Popen(_command(workdir), cwd=REPO, env=_environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while _steps_logged(workdir) < after_steps and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signum)
    process.communicate(timeout=300)
    return process


def _final_parameters(workdir: Path) -> dict[str, np.ndarray]:
    step_dir = max((workdir / "checkpoints").glob("[0-9]*"), key=lambda p: int(p.name))
    assert step_dir.name == "8"
    restored = ocp.StandardCheckpointer().restore(step_dir / "state")
    flat = {}

    def walk(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}/")
            else:
                flat[prefix + key] = np.asarray(value)

    walk(restored)
    return flat


def _losses_by_step(workdir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {record["step"]: record["loss"] for record in records if record["split"] == "train"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("uninterrupted")
    _train(workdir)
    return workdir


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_killed_and_restarted_run_equals_an_uninterrupted_one(uninterrupted, tmp_path, signum):
    process = _interrupt(tmp_path, signum, after_steps=3)
    if signum == signal.SIGTERM:
        assert process.returncode == 0, "SIGTERM must save a checkpoint and exit cleanly"
        assert _steps_logged(tmp_path) < 8
    else:
        assert process.returncode == -signal.SIGKILL
    _train(tmp_path)
    expected, got = _final_parameters(uninterrupted), _final_parameters(tmp_path)
    assert expected.keys() == got.keys()
    for key in expected:
        assert np.array_equal(expected[key], got[key]), key
    assert _losses_by_step(tmp_path) == _losses_by_step(uninterrupted)


def test_a_diverging_run_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    from esm_jax.train.trainer import TrainingDiverged, train
    from tests.train_helpers import tiny_config

    config = tiny_config(total_steps=6, checkpoint_every=1)
    config.optimizer.update(peak_learning_rate=1e37, end_learning_rate=1e37)
    with pytest.raises(TrainingDiverged, match="NaN/Inf .* newest checkpoint holds the last good state"):
        train(config, tmp_path)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").glob("[0-9]*"))
    assert steps and steps[-1] < 6
    restored = ocp.StandardCheckpointer().restore(tmp_path / "checkpoints" / str(steps[-1]) / "state")
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(restored))
