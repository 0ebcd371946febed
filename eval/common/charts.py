"""PNG charts of evaluation results (matplotlib, Agg backend), each written atomically.

Small and generic on purpose: line curves, grouped bars, labelled scatter plots coloured by group,
overlaid distributions and side-by-side panels of several values against one shared value.
The tasks decide what goes in them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from esm_jax.plots import save_png


def curves_png(
    x: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    levels: Mapping[str, float] | None = None,
) -> Path:
    """One line per curve over ``x``, plus dashed horizontal reference ``levels``."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        axis.plot(x, values, marker="o", label=name)
    for (name, value), style in zip((levels or {}).items(), ("--", ":", "-.", (0, (1, 3))), strict=False):
        axis.axhline(value, linestyle=style, color="black", linewidth=1, label=f"{name} ({value:.3g})")
    axis.set_xticks(list(x))
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    return save_png(figure, path)


def grouped_bars_png(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    title: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
    rotate: bool = False,
    errors: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Bars for each category, one bar per series side by side (optional ± error bars per series)."""
    figure, axis = plt.subplots(figsize=(max(6, 0.35 * len(categories) * max(1, len(series))), 4))
    width = 0.8 / max(1, len(series))
    positions = np.arange(len(categories))
    for offset, (name, values) in enumerate(series.items()):
        centres = positions + (offset - (len(series) - 1) / 2) * width
        axis.bar(centres, values, width, yerr=(errors or {}).get(name), capsize=3, label=name)
    axis.axhline(0.0, color="black", linewidth=0.6)
    axis.set_xticks(positions)
    axis.set_xticklabels(categories, rotation=90 if rotate else 0, fontsize=7 if rotate else 9)
    if ylim is not None:
        axis.set_ylim(*ylim)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=9)
    if len(series) > 1:
        axis.legend(fontsize=7)
    return save_png(figure, path)


def labelled_scatter_png(
    points: np.ndarray,
    labels: Sequence[str],
    groups: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Path:
    """2-D points, each annotated with its label and coloured by its group (legend by group)."""
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    names = list(dict.fromkeys(groups))
    colours = plt.get_cmap("tab10")
    for number, name in enumerate(names):
        chosen = np.array([group == name for group in groups])
        axis.scatter(points[chosen, 0], points[chosen, 1], s=60, color=colours(number), label=name)
    for (x, y), label in zip(points, labels, strict=True):
        axis.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, loc="best")
    return save_png(figure, path)


def distributions_png(
    panels: Mapping[str, Mapping[str, np.ndarray]],
    path: str | os.PathLike,
    *,
    title: str,
    xlabel: str,
    bins: int = 60,
) -> Path:
    """One panel per entry, each overlaying normalised histograms of its named samples."""
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for axis, (panel, samples) in zip(axes[0], panels.items(), strict=True):
        present = [np.asarray(v) for v in samples.values() if len(v)]
        low = min((float(v.min()) for v in present), default=-1.0)
        high = max((float(v.max()) for v in present), default=1.0)
        edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
        for name, values in samples.items():
            if len(values):
                axis.hist(values, bins=edges, density=True, alpha=0.5, label=f"{name} (n={len(values):,})")
        axis.set_title(panel, fontsize=9)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("density")
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    return save_png(figure, path)


def paired_panels_png(
    x: Sequence[float],
    panels: Mapping[str, Sequence[float]],
    labels: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str,
    xlabel: str,
) -> Path:
    """One panel per entry: its values against the shared ``x``, joined in order and each point labelled."""
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False, layout="constrained")
    for axis, (name, values) in zip(axes[0], panels.items(), strict=True):
        axis.plot(x, values, marker="o")
        for x_value, y_value, label in zip(x, values, labels, strict=True):
            axis.annotate(label, (x_value, y_value), textcoords="offset points", xytext=(4, 4), fontsize=7)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(name)
    figure.suptitle(title, fontsize=10)
    return save_png(figure, path)
