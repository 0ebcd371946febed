"""Result rows of the contact tasks' precision tables."""

from __future__ import annotations

from collections.abc import Mapping

from eval.structure.contacts.metrics import BANDS, DIVISORS

PRECISION_COLUMNS = [f"{band} P@{name}" for band in reversed(list(BANDS)) for name in DIVISORS]


def precision_row(contact_set: str, features: str, proteins: int, precisions: Mapping[str, float]) -> dict:
    """One Markdown row: set, features, number of proteins and the nine precisions."""
    return {"set": contact_set, "features": features, "proteins": proteins} | {
        column: float(precisions[column]) for column in PRECISION_COLUMNS
    }
