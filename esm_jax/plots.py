"""PNG figures for results people would rather see than read: contact maps and embedding projections."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from esm_jax.files import atomic_output  # noqa: E402


def save_png(figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` to ``path`` as a PNG, atomically (a reader never sees half a PNG), and close it."""
    try:
        with atomic_output(path, "wb") as handle:
            figure.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(figure)
    return Path(path)


def contact_map_png(
    contacts: np.ndarray, path: str | os.PathLike, title: str, colour_label: str = "contact probability"
) -> Path:
    """A residue-pair map (L, L) as a heat map: contact probabilities, or another score named by ``colour_label``."""
    figure, axis = plt.subplots(figsize=(5, 5))
    image = axis.imshow(contacts, cmap="Blues", vmin=float(np.min(contacts)), vmax=float(np.max(contacts)))
    axis.set_title(title, fontsize=9)
    axis.set_xlabel("residue")
    axis.set_ylabel("residue")
    figure.colorbar(image, ax=axis, fraction=0.046, label=colour_label)
    return save_png(figure, path)


def projection_png(
    embeddings: np.ndarray,
    path: str | os.PathLike,
    title: str,
    colour: np.ndarray | None = None,
    colour_label: str = "",
    log_colour: bool = False,
) -> Path:
    """The first two principal components of ``embeddings`` (N, D), each axis labelled with the share of variance
    it explains, optionally coloured by a value (on a log scale with ``log_colour``, e.g. protein lengths)."""
    centred = embeddings - embeddings.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    explained = singular**2 / max(float(np.sum(singular**2)), np.finfo(np.float64).tiny)
    points = centred @ components[:2].T
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    norm = matplotlib.colors.LogNorm() if log_colour and colour is not None else None
    scatter = axis.scatter(points[:, 0], points[:, 1], c=colour, s=12, cmap="viridis", norm=norm)
    if colour is not None:
        figure.colorbar(scatter, ax=axis, label=colour_label + (" (log scale)" if log_colour else ""))
    axis.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)")
    axis.set_ylabel(f"PC 2 ({explained[1]:.0%} of variance)" if explained.size > 1 else "PC 2")
    axis.set_title(title, fontsize=9)
    return save_png(figure, path)


def learning_curve_png(history: list[dict], path: str | os.PathLike) -> Path:
    """Training and held-out ECE against step (with the unigram baseline when evaluated)."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for split, style in (("train", "-"), ("heldout", "o-")):
        points = [(record["step"], record["ece"]) for record in history if record["split"] == split]
        if points:
            steps, values = zip(*points, strict=True)
            axis.plot(steps, values, style, label=f"{split} ECE", markersize=3)
    baseline = [record["target_unigram_ece"] for record in history if record["split"] == "heldout"]
    if baseline:
        axis.axhline(baseline[-1], color="grey", linestyle="--", label="unigram fitted to the held-out targets")
    axis.set_xlabel("step")
    axis.set_ylabel("ECE (exp cross-entropy per masked token)")
    if axis.lines:
        axis.legend()
    return save_png(figure, path)
