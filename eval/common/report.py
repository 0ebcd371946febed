"""Write evaluation results: JSON for machines, a Markdown table for people, PNG plots beside them."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esm_jax.files import write_json_atomically, write_text_atomically

if TYPE_CHECKING:
    from eval.common.published import PublishedFigures


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` (floats to 4 significant digits)."""
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column, "")) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def interval_text(interval: Sequence[float] | None) -> str:
    """A 95% interval as a table cell, ``[low, high]`` to three decimals (empty when there is none)."""
    return "" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def per_item(ids: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    """``{item id: value}`` of one metric, finite values only: the table ``compare`` pairs between two runs."""
    if len(ids) != len(values):
        raise ValueError(f"{len(ids)} item ids for {len(values)} values")
    return {str(item): float(value) for item, value in zip(ids, values, strict=True) if math.isfinite(value)}


def _published_tables(published: PublishedFigures | Sequence[PublishedFigures]) -> list[PublishedFigures]:
    """``published`` as a list, so that a task may pass one table or several."""
    return list(published) if isinstance(published, Sequence) else [published]


def write_results(
    out_dir: str | os.PathLike,
    task: str,
    results: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str,
    notes: str = "",
    figures: Sequence[str] = (),
    published: PublishedFigures | Sequence[PublishedFigures] = (),
) -> Path:
    """``<task>.json`` (everything in ``results``) and ``<task>.md`` (``rows`` as a table, figures linked).

    ``published`` (one table or several) adds the authors' own figures for the task after ours: in the JSON as a
    list under ``"published"``, in the Markdown as one section per table. The JSON's ``"task"`` names the task
    (unless ``results`` gives one), so two results files can be checked to come from the same task.
    """
    out_dir = Path(out_dir)
    results = {"task": task, **results}
    tables = _published_tables(published)
    if tables:
        results = {**results, "published": [table.as_json() for table in tables]}
    write_json_atomically(out_dir / f"{task}.json", results)
    parts = [f"# {title}\n", markdown_table(rows)]
    if notes:
        parts.append(notes + "\n")
    parts += [f"![{name}]({name})\n" for name in figures]
    parts += [table.markdown() for table in tables]
    write_text_atomically(out_dir / f"{task}.md", "\n".join(parts))
    return out_dir / f"{task}.md"
