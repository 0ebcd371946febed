"""Shared test settings: keep caches out of the home folder and locate the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("ESM_JAX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Fetched checkpoints and compiled programs go to a temporary folder, not ~/.cache."""
    previous = os.environ.get("ESM_JAX_CACHE")
    os.environ["ESM_JAX_CACHE"] = str(tmp_path_factory.mktemp("esm_jax_cache"))
    yield
    if previous is None:
        os.environ.pop("ESM_JAX_CACHE", None)
    else:
        os.environ["ESM_JAX_CACHE"] = previous
