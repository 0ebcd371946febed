"""`esm-jax plan` compiles real training steps for TPU topologies on this CPU-only machine.

Each plan runs in its own interpreter, so libtpu is never loaded into the test process itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.train_helpers import REPO

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed (pip install 'esm-jax[tpu]')"
)


def _plan(tmp_path, config: str, topology: str, *overrides: str) -> dict:
    out = tmp_path / "plan.json"
    command = [sys.executable, "-m", "esm_jax.cli.main", "plan", "--config", config, "--topology", topology,
               "--json", str(out), *overrides]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "per-device memory" in result.stdout and "MFU bound" in result.stdout
    return json.loads(out.read_text())


def test_tiny_config_compiles_for_a_v5e_2x2(tmp_path):
    report = _plan(tmp_path, "configs/pretrain.py:tiny", "v5e:2x2")
    assert report["chips"] == report["devices"] == 4 and report["device_kind"].startswith("TPU v5")
    assert 0 < report["total_gib"] < report["hbm_gib"] == 16
    per_device_model_flops = report["model_flops_per_step"] / report["devices"]
    assert 0.9 * per_device_model_flops < report["compiled_flops_per_device"] < 2.0 * per_device_model_flops
    assert 0 < report["mfu_bound"] <= 1


def test_an_esm1b_shaped_config_compiles_fully_sharded_on_a_larger_slice(tmp_path):
    report = _plan(
        tmp_path, "configs/pretrain.py:model=esm1b,data=ur50s,pod=v5e-256", "v5e:4x4",
        "--config.model.num_layers=2", "--config.model.embed_dim=256", "--config.model.attention_heads=4",
        "--config.model.ffn_embed_dim=1024", "--config.data.global_token_budget=131072",
    )  # fmt: skip
    assert report["chips"] == 16 and report["mesh"] == {"data": 1, "fsdp": 16, "tensor": 1}
    assert report["batch_shape"] == [128, 1024]
    assert report["total_gib"] < report["hbm_gib"]
