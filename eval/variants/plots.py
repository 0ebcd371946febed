"""PNG figure of the training-fraction sweep: Spearman ρ against the share of the assay used for training."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from esm_jax.plots import save_png


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
    return save_png(figure, path)
