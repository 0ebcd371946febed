"""Mean ± standard deviation over seeds, as the ESM-1b paper reports its deep-head results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def mean_sd(runs: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "sd", "runs"}}`` over runs (sample SD, ddof=1; NaN for a single run, which has none)."""
    if not runs:
        raise ValueError("no runs to summarise")
    summary = {}
    for key in runs[0]:
        values = np.array([run[key] for run in runs], dtype=np.float64)
        sd = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        summary[key] = {"mean": float(values.mean()), "sd": sd, "runs": values.tolist()}
    return summary


def formatted(summary: Mapping[str, Mapping[str, float]], key: str) -> str:
    """``"0.712 ± 0.004"`` for a table cell; ``"0.712 (1 seed)"`` where one run gives no spread."""
    entry = summary[key]
    if not np.isfinite(entry["sd"]):
        return f"{entry['mean']:.4f} (1 seed)"
    return f"{entry['mean']:.4f} ± {entry['sd']:.4f}"
