"""PNG figures of the mutational-effect results: ρ per protein and ρ against the training fraction."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(figure, path: Path) -> Path:
    """Write through a temporary file in the same folder, so a reader never sees a partial PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=".png")
    os.close(descriptor)
    try:
        figure.savefig(temporary, dpi=120, bbox_inches="tight")
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        Path(temporary).unlink(missing_ok=True)
    return path


def grouped_bars_png(
    path: str | os.PathLike,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    title: str,
    errors: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Bars of Spearman ρ: one group per protein, one bar per series (optional ± error bars)."""
    errors = errors or {}
    figure, axis = plt.subplots(figsize=(1.8 + 1.6 * len(groups), 3.8))
    width = 0.8 / max(len(series), 1)
    centres = np.arange(len(groups))
    for number, (name, values) in enumerate(series.items()):
        offsets = centres - 0.4 + width * (number + 0.5)
        axis.bar(offsets, np.asarray(values, dtype=float), width, yerr=errors.get(name), capsize=3, label=name)
    axis.axhline(0.0, color="black", linewidth=0.6)
    axis.set_xticks(centres, groups)
    axis.set_ylabel("Spearman ρ")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(figure, Path(path))


def fraction_curve_png(
    path: str | os.PathLike, curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]], title: str
) -> Path:
    """ρ (mean ± SD over folds) against the fraction of the assay used for training, one line per protein."""
    figure, axis = plt.subplots(figsize=(5.0, 3.8))
    for name, (fractions, means, spreads) in curves.items():
        axis.errorbar(fractions, means, yerr=spreads, marker="o", capsize=3, label=name)
    axis.set_xscale("log")
    axis.set_xlabel("fraction of the assay used for training")
    axis.set_ylabel("Spearman ρ on held-out 20%")
    axis.axhline(0.0, color="black", linewidth=0.6)
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    return _save(figure, Path(path))
