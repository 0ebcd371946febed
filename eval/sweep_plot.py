"""PNG line plots of a score against the representation layer, with baselines as horizontal lines."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from esm_jax.plots import save_png


def layer_sweep_png(
    layers: Sequence[int],
    series: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    title: str,
    ylabel: str,
    baselines: Mapping[str, float] | None = None,
) -> Path:
    """One line per entry of ``series`` (score per layer) and a dashed line per baseline."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, values in series.items():
        axis.plot(list(layers), list(values), marker="o", label=name)
    for (name, value), style in zip((baselines or {}).items(), ("--", ":", "-."), strict=False):
        axis.axhline(value, linestyle=style, color="grey", label=name)
    axis.set_xlabel("layer")
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=9)
    axis.set_xticks(list(layers))
    axis.legend(fontsize=7)
    return save_png(figure, path)
