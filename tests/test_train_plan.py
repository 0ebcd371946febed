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
# The tiny model, 2 layers, on a v5e 2x2: 8 packed rows of 1024 tokens, 2 per chip; heads of 32 dimensions.
TINY = ("configs/pretrain.py:tiny", "v5e:2x2", "--config.model.num_layers=2", "--config.data.shapes=packed")
TINY_LAYERS, TINY_ROWS, TINY_HEADS, TINY_LENGTH, TINY_HEAD_DIM = 2, 2, 4, 1024, 32  # rows per chip
TINY_PAIRS = TINY_ROWS * TINY_HEADS * TINY_LENGTH**2 * TINY_HEAD_DIM  # (row, head, query, key, dim) per layer


def _plan(tmp_path, config: str, topology: str, *overrides: str) -> dict:
    out = tmp_path / "plan.json"
    command = [sys.executable, "-m", "esm_jax.cli.main", "plan", "--config", config, "--topology", topology,
               "--json", str(out), *overrides]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "per-device memory" in result.stdout and "MFU bound" in result.stdout
    assert "analytic attention-kernel FLOPs" in result.stdout
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def tiny_splash(tmp_path_factory) -> dict:
    return _plan(tmp_path_factory.mktemp("splash"), *TINY, "--config.model.attention_impl=splash")


def test_tiny_config_compiles_for_a_v5e_2x2(tiny_splash):
    report = tiny_splash
    assert report["chips"] == report["devices"] == 4 and report["device_kind"].startswith("TPU v5")
    assert 0 < report["total_gib"] < report["hbm_gib"] == 16
    per_device_model_flops = report["model_flops_per_step"] / report["devices"]
    assert 0.9 * per_device_model_flops < report["compiled_flops_per_device"] < 2.0 * per_device_model_flops
    assert 0 < report["mfu_bound"] <= 1


def test_the_splash_kernel_is_compiled_and_its_work_counted(tiny_splash):
    report = tiny_splash
    assert report["packed"] and report["attention_impl"] == "splash"
    # One forward, dq and dkv Mosaic call per layer (no rematerialisation in the tiny config).
    assert report["compiled_attention"] == "splash" and report["splash_calls"] == {"fwd": 2, "dq": 2, "dkv": 2}
    # Per layer: forward QKᵀ and PV; dq recomputes QKᵀ, then dO·Vᵀ and dS·K; dkv QKᵀ, Pᵀ·dO, dO·Vᵀ and dSᵀ·Q.
    assert report["attention_kernel_flops_per_device"] == TINY_LAYERS * 2 * (2 + 3 + 4) * TINY_PAIRS
    # At least: each kernel reads its four (T, d) float32 inputs and writes its outputs once.
    one_pass = TINY_ROWS * TINY_HEADS * TINY_LENGTH * TINY_HEAD_DIM * 4
    assert report["attention_kernel_bytes_per_device"] > TINY_LAYERS * (4 + 5 + 6) * one_pass
    assert (
        report["compiled_flops_per_device"]
        == report["xla_flops_per_device"] + report["attention_kernel_flops_per_device"]
    )


def test_analytic_attention_flops_agree_with_xla_counting_dense_attention(tiny_splash, tmp_path):
    dense = _plan(tmp_path, *TINY, "--config.model.attention_impl=dense")
    assert dense["compiled_attention"] == "xla" and dense["attention_kernel_flops_per_device"] == 0
    counted_by_xla = dense["xla_flops_per_device"] - tiny_splash["xla_flops_per_device"]
    # The same products without splash's recomputation: forward QKᵀ and PV, backward dP, dV, dQ and dK.
    analytic_dense = TINY_LAYERS * 2 * (2 + 4) * TINY_PAIRS
    # XLA also counts the softmax's elementwise work: about 20 FLOPs per score against 12·32 for the products.
    assert analytic_dense < counted_by_xla < 1.08 * analytic_dense


@pytest.mark.slow
def test_an_esm1b_shaped_config_compiles_fully_sharded_on_a_larger_slice(tmp_path):
    report = _plan(
        tmp_path, "configs/pretrain.py:model=esm1b,data=ur50s,pod=v5e-256", "v5e:4x4",
        "--config.model.num_layers=2", "--config.model.embed_dim=256", "--config.model.attention_heads=4",
        "--config.model.ffn_embed_dim=1024", "--config.data.global_token_budget=131072",
    )  # fmt: skip
    assert report["chips"] == 16 and report["mesh"] == {"data": 1, "fsdp": 16, "tensor": 1}
    assert report["batch_shape"] == [128, 1024]
    assert report["total_gib"] < report["hbm_gib"]
    assert report["packed"] and report["compiled_attention"] == "splash"
