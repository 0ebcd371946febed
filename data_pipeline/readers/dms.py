"""Deep mutational scanning CSVs: mutant strings (``A42G``, multi-mutants ``A42G:C50T``) checked against the wild type.

Positions are 1-based on the given wild-type sequence, shifted by ``first_position`` when the sequence starts at
another residue number (e.g. ESM's BLAT_ECOLX example uses ``--offset-idx 24`` with a sequence starting at H24).
Every substitution must name the wild-type residue actually at that position and a standard amino acid; a
multi-mutant must not change one position twice. The fitness column must hold a number on every row.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from data_pipeline.errors import MalformedFileError
from esm_jax.inference import mutations
from esm_jax.inference.dms_table import read_dms_table
from esm_jax.inference.mutations import Substitution


@dataclasses.dataclass(frozen=True)
class Variant:
    mutant: str
    substitutions: tuple[Substitution, ...]
    score: float

    def apply(self, wild_type: str, first_position: int = 1) -> str:
        """The variant's full sequence."""
        return mutations.Mutant(self.mutant, self.substitutions, first_position).apply(wild_type)


def parse_mutant(text: str, wild_type: str, first_position: int = 1, where: str = "mutant") -> tuple[Substitution, ...]:
    """Substitutions of ``text`` (``:``-separated) checked against ``wild_type``; the parser of
    :mod:`esm_jax.inference.mutations`, raising its ``MutantError`` (a ValueError) saying why.
    """
    return mutations.parse_mutant(text, wild_type, offset=first_position, where=where)


def read_dms_csv(
    path: str | Path,
    wild_type: str,
    score_column: str,
    *,
    mutant_column: str = "mutant",
    first_position: int = 1,
) -> list[Variant]:
    """Variants of a DMS CSV with their scores, every mutant checked against ``wild_type``.

    The CSV is read by :func:`esm_jax.inference.dms_table.read_dms_table`, the reader ``esm-jax score-variants`` uses.
    """
    table = read_dms_table(path)
    for column in (mutant_column, score_column):
        if column not in table.header:
            raise MalformedFileError(
                path, "header", f"no column {column!r} (columns: {table.header})", "Name an existing column."
            )
    cells = zip(table.lines, table.column(mutant_column), table.column(score_column), strict=True)
    return [
        _variant(path, line, mutant, score, wild_type, score_column, first_position) for line, mutant, score in cells
    ]


def _variant(path, line: int, mutant: str, score: str, wild_type: str, score_column: str, first: int) -> Variant:
    where = f"line {line}"
    mutant = mutant.strip()
    try:
        substitutions = parse_mutant(mutant, wild_type, first, where="mutant")
    except ValueError as error:
        raise MalformedFileError(
            path, where, str(error), "Check the wild-type sequence and its numbering (first_position)."
        ) from None
    try:
        value = float(score)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise MalformedFileError(
            path, f"{where} ({mutant})", f"{score_column!r} is {score!r}, not a number", "Fill or drop the row."
        )
    return Variant(mutant, substitutions, value)
