"""Every Colab notebook runs top to bottom on CPU with a tiny configuration.

The notebooks find the shared data folder through ``$ESM_JAX_SHARED_DATA``; where it is absent they run the
parts that need no data (quickstart scores mutants of its own sequence, probes runs the language-model task only).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import shared_data_dir

COLAB = Path(__file__).resolve().parents[1] / "colab"
# The pretraining notebook builds a dataset and trains for ~3 minutes on 2 cores: it runs with the slow tests.
LONG = {"pretraining.ipynb"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(path.name, marks=[pytest.mark.slow] if path.name in LONG else [])
        for path in sorted(COLAB.glob("*.ipynb"))
    ],
)
def test_notebook_runs_without_error(name, tmp_path, monkeypatch):
    monkeypatch.setenv("ESM_JAX_NOTEBOOK_STEPS", "20")
    monkeypatch.setenv("ESM_JAX_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if shared_data_dir().is_dir():
        monkeypatch.setenv("ESM_JAX_SHARED_DATA", str(shared_data_dir().resolve()))
    notebook = nbformat.read(COLAB / name, as_version=4)
    NotebookClient(
        notebook, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(COLAB)}}
    ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.get("output_type") == "error"]
