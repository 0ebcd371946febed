"""Deep mutational scanning CSVs: mutant strings (``A42G``, multi-mutants ``A42G:C50T``) checked against the wild type.

Positions are 1-based on the given wild-type sequence, shifted by ``first_position`` when the sequence starts at
another residue number (e.g. ESM's BLAT_ECOLX example uses ``--offset-idx 24`` with a sequence starting at H24).
Every substitution must name the wild-type residue actually at that position and a standard amino acid; a
multi-mutant must not change one position twice. The fitness column must hold a number on every row.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from pathlib import Path

from data_pipeline.corpus_files import open_text
from data_pipeline.errors import MalformedFileError
from esm_jax.alphabet import STANDARD_AMINO_ACIDS

_SUBSTITUTION = re.compile(r"^([A-Z])(\d+)([A-Z])$")


@dataclasses.dataclass(frozen=True)
class Substitution:
    wild_type: str
    position: int
    mutant: str


@dataclasses.dataclass(frozen=True)
class Variant:
    mutant: str
    substitutions: tuple[Substitution, ...]
    score: float

    def apply(self, wild_type: str, first_position: int = 1) -> str:
        """The variant's full sequence."""
        residues = list(wild_type)
        for sub in self.substitutions:
            residues[sub.position - first_position] = sub.mutant
        return "".join(residues)


def parse_mutant(text: str, wild_type: str, first_position: int = 1, where: str = "mutant") -> tuple[Substitution, ...]:
    """Substitutions of ``text`` (``:``-separated), validated against ``wild_type``; raises ValueError saying why."""
    substitutions: list[Substitution] = []
    for part in text.strip().split(":"):
        match = _SUBSTITUTION.match(part)
        if match is None:
            raise ValueError(f"{where}: {part!r} is not <wild-type letter><position><mutant letter>, e.g. A42G")
        wt, position, mt = match[1], int(match[2]), match[3]
        index = position - first_position
        if not 0 <= index < len(wild_type):
            raise ValueError(
                f"{where}: position {position} of {part!r} is outside the wild type "
                f"({first_position}..{first_position + len(wild_type) - 1})"
            )
        if wild_type[index] != wt:
            raise ValueError(f"{where}: {part!r} says {wt} at {position} but the wild type has {wild_type[index]}")
        if mt not in STANDARD_AMINO_ACIDS:
            raise ValueError(f"{where}: {part!r} mutates to {mt!r}, not one of the 20 standard amino acids")
        if any(s.position == position for s in substitutions):
            raise ValueError(f"{where}: position {position} is mutated twice in {text!r}")
        substitutions.append(Substitution(wt, position, mt))
    return tuple(substitutions)


def read_dms_csv(
    path: str | Path,
    wild_type: str,
    score_column: str,
    *,
    mutant_column: str = "mutant",
    first_position: int = 1,
) -> list[Variant]:
    """Variants of a DMS CSV with their scores, every mutant checked against ``wild_type``."""
    with open_text(path) as (text, _):
        rows = csv.DictReader(_without_bom(text))
        for column in (mutant_column, score_column):
            if column not in (rows.fieldnames or []):
                raise MalformedFileError(
                    path, "header", f"no column {column!r} (columns: {rows.fieldnames})", "Name an existing column."
                )
        return [
            _variant(path, line, row, wild_type, score_column, mutant_column, first_position)
            for line, row in enumerate(rows, start=2)
        ]


def _without_bom(lines):
    for number, line in enumerate(lines):
        yield line.lstrip("\ufeff") if number == 0 else line


def _variant(path, line: int, row: dict, wild_type: str, score_column: str, mutant_column: str, first: int) -> Variant:
    where = f"line {line}"
    mutant = (row.get(mutant_column) or "").strip()
    try:
        substitutions = parse_mutant(mutant, wild_type, first, where="mutant")
    except ValueError as error:
        raise MalformedFileError(
            path, where, str(error), "Check the wild-type sequence and its numbering (first_position)."
        ) from None
    try:
        score = float(row[score_column])
    except (TypeError, ValueError):
        score = math.nan
    if math.isnan(score):
        raise MalformedFileError(
            path,
            f"{where} ({mutant})",
            f"{score_column!r} is {row[score_column]!r}, not a number",
            "Fill or drop the row.",
        )
    return Variant(mutant, substitutions, score)
