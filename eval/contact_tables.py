"""Shared pieces of the contact tasks: layer options and the result rows of precision tables."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from esm_jax.model import ESM
from eval.contact_metrics import BANDS, DIVISORS

PRECISION_COLUMNS = [f"{band} P@{name}" for band in reversed(list(BANDS)) for name in DIVISORS]


def parse_layers(text: str, model: ESM) -> list[int]:
    """``all`` → 0..num_layers, ``last`` → [num_layers], else a comma list (negative counts back)."""
    if text == "all":
        return list(range(model.config.num_layers + 1))
    if text == "last":
        return [model.config.num_layers]
    try:
        return list(model.normalize_layers(int(part) for part in text.split(",")))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--layers {text!r}: {error}") from None


def precision_row(contact_set: str, features: str, proteins: int, precisions: Mapping[str, float]) -> dict:
    """One Markdown row: set, features, number of proteins and the nine precisions."""
    return {"set": contact_set, "features": features, "proteins": proteins} | {
        column: float(precisions[column]) for column in PRECISION_COLUMNS
    }
