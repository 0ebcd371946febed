"""`esm-jax plan --inference` compiles released models' forward passes for TPU topologies on this CPU-only machine.

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
GIB = 1024**3
# ESM-2 8M on a v5e 2x2, default batch: one 1024-token row per chip; 6 layers of 20 heads of 16 dimensions.
SMALL_LAYERS, SMALL_HEADS, SMALL_HEAD_DIM, LENGTH = 6, 20, 16, 1024


def _run(tmp_path, model: str, topology: str, *options: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    out = tmp_path / "plan.json"
    command = [sys.executable, "-m", "esm_jax.cli.main", "plan", "--inference", model, "--topology", topology,
               "--json", str(out), *options]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    return result, (json.loads(out.read_text()) if out.exists() else None)


def _plan(tmp_path, model: str, topology: str, *options: str) -> dict:
    result, report = _run(tmp_path, model, topology, *options)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "per-device memory: parameters" in result.stdout and "tokens/s" in result.stdout
    return report


def _check_fits_with_parameters_split(report: dict, devices: int, hbm_gib: int) -> None:
    assert report["devices"] == devices
    assert report["mesh"] == {"data": 1, "fsdp": devices, "tensor": 1}
    assert report["batch_shape"] == [devices, LENGTH]  # the default: one row per device
    assert report["hbm_gib"] == hbm_gib and report["total_gib"] < hbm_gib
    # float32 parameters split over every device; they are the program's arguments, with the tokens
    expected = report["parameters"] * 4 / devices
    assert abs(report["parameter_gib"] * GIB - expected) < 0.01 * expected
    assert report["parameter_gib"] <= report["argument_gib"] < 1.01 * report["parameter_gib"]
    assert report["compiled_attention"] == "splash"
    assert report["tokens_per_second_bound"] > 0 and 0 < report["mfu_bound"] <= 1


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    return _plan(tmp_path_factory.mktemp("small"), "esm2_t6_8M_UR50D", "v5e:2x2")


def test_compiled_flops_per_device_are_the_models_share(small):
    per_device = small["model_flops_per_forward"] / small["devices"]
    # XLA adds the elementwise work; the model's count has the LM head, which the lean forward skips.
    assert 0.95 * per_device < small["compiled_flops_per_device"] < 1.2 * per_device
    assert small["roofline_seconds"] == max(small["flop_seconds"], small["byte_seconds"]) > 0
    assert small["tokens_per_second_bound"] == pytest.approx(4 * LENGTH / small["roofline_seconds"])


def test_one_splash_forward_call_per_layer_is_counted(small):
    assert small["attention_impl"] == "splash" and small["compiled_attention"] == "splash"
    assert small["splash_forward_calls"] == SMALL_LAYERS
    # QKᵀ and PV over one row per device, 2·T²·d FLOPs each, per head and layer.
    assert small["attention_kernel_flops_per_device"] == SMALL_LAYERS * 2 * 2 * SMALL_HEADS * LENGTH**2 * SMALL_HEAD_DIM
    # At least: Q, K and V read and the context written once, bfloat16.
    one_pass = SMALL_HEADS * LENGTH * SMALL_HEAD_DIM * 2
    assert small["attention_kernel_bytes_per_device"] > SMALL_LAYERS * 4 * one_pass


@pytest.mark.slow  # about 2.5 minutes of compilation on 2 cores
def test_a_3b_model_fits_on_a_v5e_2x4_with_its_parameters_split_8_ways(tmp_path):
    report = _plan(tmp_path, "esm2_t36_3B_UR50D", "v5e:2x4")
    assert report["chips"] == 8
    _check_fits_with_parameters_split(report, devices=8, hbm_gib=16)


def test_a_batch_the_mesh_cannot_split_is_refused_in_one_line(tmp_path):
    result, report = _run(tmp_path, "esm2_t6_8M_UR50D", "v5e:2x2", "--batch", "6x1024")
    assert result.returncode == 2 and report is None and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("esm-jax plan: error:")]
    assert len(errors) == 1 and "6 × 1024" in errors[0] and "multiple of 4 rows" in errors[0]


def test_inference_options_are_refused_with_a_training_config():
    command = [
        sys.executable,
        "-m",
        "esm_jax.cli.main",
        "plan",
        "--config",
        "configs/pretrain.py:tiny",
        "--mesh",
        "fsdp=2",
    ]
    result = subprocess.run(
        command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True
    )
    assert result.returncode == 2 and "--mesh: for --inference only" in result.stderr


@pytest.mark.slow
def test_esm2_15b_fits_on_a_v5e_2x4_with_its_parameters_split_8_ways(tmp_path):
    report = _plan(tmp_path, "esm2_t48_15B_UR50D", "v5e:2x4")
    assert report["chips"] == 8
    _check_fits_with_parameters_split(report, devices=8, hbm_gib=16)
    assert abs(report["parameter_gib"] * GIB - 15e9 * 4 / 8) < 0.05 * 15e9 * 4 / 8
    assert report["splash_forward_calls"] == 48


@pytest.mark.slow
def test_esm2_15b_compiles_for_a_v4_2x2x1(tmp_path):
    report = _plan(tmp_path, "esm2_t48_15B_UR50D", "v4:2x2x1")
    # libtpu describes each v4 chip as two devices (TensorCores), each with half the chip's 32 GiB
    assert report["device_kind"].startswith("TPU v4") and report["chips"] == 4
    _check_fits_with_parameters_split(report, devices=8, hbm_gib=16)
