"""Every ```python block of README.md runs as written, on tiny random-weight models.

A block that names a released model gets a tiny checkpoint of that model's architecture and depth
(so layer indices such as ``repr_layers=[33]`` still exist) under the released name: in the working
folder for a local ``.pt`` path, and pre-seeded in ``$ESM_JAX_CACHE`` for ``load_model_and_alphabet``,
whose hub (``$ESM_JAX_HUB_URL``) points nowhere so nothing can be downloaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from esm_jax import build_model, pretrained
from esm_jax.model import named_config
from esm_jax.model.named import MODELS_WITHOUT_CONTACT_REGRESSION, NAMED_MODELS

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def _tiny_checkpoint(name: str, path: Path) -> None:
    """A random model shaped like ``name`` (same architecture and layer count, 16 wide) saved as fair-esm does."""
    config = named_config(name).replace(embed_dim=16, attention_heads=2, ffn_embed_dim=64)
    model = build_model(config, seed=0)
    model.has_contact_regression = name not in MODELS_WITHOUT_CONTACT_REGRESSION
    pretrained.save_fair_esm(model, path)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(tmp_path, index):
    code = BLOCKS[index]
    cache = tmp_path / "cache"
    for name in sorted(n for n in NAMED_MODELS if n in code):
        _tiny_checkpoint(name, tmp_path / f"{name}.pt")
        _tiny_checkpoint(name, cache / f"{name}.pt")
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "ESM_JAX_CACHE": str(cache),
        "ESM_JAX_HUB_URL": (tmp_path / "no-hub").as_uri(),
        "PYTHONPATH": str(README.parent),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"README python block {index + 1} failed:\n{code}\n{done.stderr[-3000:]}"
