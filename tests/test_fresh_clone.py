"""The README's install step works on a fresh clone in a new virtual environment, and every test module imports.

Slow (it installs every dependency), so excluded from the default run; `.ci/run` runs it on every
CI run, which covers every change to setup.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.train_helpers import REPO


@pytest.mark.slow
def test_install_step_of_the_readme_works_in_a_fresh_clone(tmp_path):
    clone = tmp_path / "esm-jax"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "venv", ".venv"], cwd=clone, check=True, timeout=300)
    install = subprocess.run(
        [".venv/bin/pip", "install", "-q", "-e", ".[dev]"], cwd=clone, capture_output=True, text=True, timeout=2400
    )
    assert install.returncode == 0, install.stderr[-3000:]
    imports = "import esm_jax, data_pipeline, eval, configs, torch, esm; print(esm_jax.__version__)"
    check = subprocess.run([".venv/bin/python", "-c", imports], cwd=clone, capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stderr[-3000:]
    assert subprocess.run([".venv/bin/esm-jax", "--help"], cwd=clone, capture_output=True, timeout=600).returncode == 0
    collect = subprocess.run(
        [".venv/bin/python", "-m", "pytest", "--collect-only", "-q"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert collect.returncode == 0, "every test module imports with the dev extras:\n" + collect.stdout[-3000:]
