"""Checks shared by the downstream readers: residue letters and per-residue label strings."""

from __future__ import annotations

import re
from pathlib import Path

from data_pipeline.errors import MalformedFileError


def check_letters(text: str, allowed: str, path: str | Path, where: str, what: str) -> str:
    """Return ``text`` if every character is in ``allowed``; otherwise raise naming the first bad one."""
    bad = re.search(f"[^{re.escape(allowed)}]", text)
    if bad:
        raise MalformedFileError(
            path,
            where,
            f"{what} has {bad.group()!r} at position {bad.start() + 1}; allowed are {allowed}",
            f"Correct the {what} or drop the record.",
        )
    return text


def check_same_length(path: str | Path, where: str, **fields: str) -> None:
    """Raise unless every per-residue field has the same length as the first."""
    lengths = {name: len(value) for name, value in fields.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name} {n}" for name, n in lengths.items())
        problem = f"per-residue fields differ in length ({detail})"
        raise MalformedFileError(path, where, problem, "Each field needs one entry per residue.")
