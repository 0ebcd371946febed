"""Small training configs and a subprocess runner shared by the trainer tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ml_collections

REPO = Path(__file__).resolve().parents[1]


def tiny_config(**train) -> ml_collections.ConfigDict:
    """configs/pretrain.py:tiny shrunk to a 2-layer model on synthetic batches."""
    sys.path.insert(0, str(REPO))
    from configs.pretrain import get_config

    config = get_config("tiny")
    config.model.update(num_layers=2, embed_dim=32, attention_heads=2, ffn_embed_dim=64)
    config.data.factory = "tests.synthetic_batches:batches"
    config.train.update(total_steps=3, log_every=1, eval_every=1000, checkpoint_every=1000, peak_flops_per_device=1e11)
    config.train.update(**train)
    config.optimizer.warmup_steps = 1
    return config


def run_python(
    script: str, devices: int = 1, timeout: int = 600, args: list[str] | None = None, **env
) -> subprocess.CompletedProcess:
    """Run ``script`` (with command-line ``args``) in a fresh interpreter with ``devices`` CPU devices, from the
    repository root."""
    environment = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO),
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", script, *(args or [])],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result
