"""Small training configs and a subprocess runner shared by the trainer tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ml_collections

REPO = Path(__file__).resolve().parents[1]


def tiny_config(eval_every: int = 1000, **train) -> ml_collections.ConfigDict:
    """configs/pretrain.py:tiny shrunk to a 2-layer model on synthetic batches; held-out ECE every ``eval_every``."""
    sys.path.insert(0, str(REPO))
    from configs.pretrain import get_config

    config = get_config("tiny")
    config.model.update(num_layers=2, embed_dim=32, attention_heads=2, ffn_embed_dim=64)
    config.data.factory = "tests.synthetic_batches:batches"
    config.train.update(total_steps=3, log_every=1, checkpoint_every=1000, peak_flops_per_device=1e11)
    config.evals.heldout.every = eval_every
    config.train.update(**train)
    config.optimizer.warmup_steps = 1
    return config


def tiny_cli_overrides(total_steps: int, checkpoint_every: int = 2) -> list[str]:
    """``--config.*`` overrides that make ``configs/pretrain.py:tiny`` the 2-layer model on synthetic batches."""
    return [
        "--config.model.num_layers=2",
        "--config.model.embed_dim=32",
        "--config.model.attention_heads=2",
        "--config.model.ffn_embed_dim=64",
        "--config.data.factory=tests.synthetic_batches:batches",
        "--config.optimizer.warmup_steps=1",
        f"--config.train.total_steps={total_steps}",
        "--config.train.log_every=1",
        "--config.evals.heldout.every=1000",
        f"--config.train.checkpoint_every={checkpoint_every}",
        "--config.train.peak_flops_per_device=1e11",
    ]


def cpu_environment(devices: int, **env) -> dict[str, str]:
    """This process's environment for a child with ``devices`` CPU devices that imports from the repository."""
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO),
        **env,
    }


def run_python(
    script: str, devices: int = 1, timeout: int = 600, args: list[str] | None = None, **env
) -> subprocess.CompletedProcess:
    """Run ``script`` (with command-line ``args``) in a fresh interpreter with ``devices`` CPU devices, from the
    repository root."""
    return _run([sys.executable, "-c", script, *(args or [])], devices, timeout, env)


def run_module(module: str, args: list[str], devices: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m module args`` with ``devices`` CPU devices, from the repository root."""
    return _run([sys.executable, "-m", module, *args], devices, timeout, {})


def _run(command: list[str], devices: int, timeout: int, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, cwd=REPO, env=cpu_environment(devices, **env), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result
