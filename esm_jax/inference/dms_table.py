"""A deep mutational scan as a CSV table: read every column as text, add score columns, write it back atomically.

The project's one DMS CSV reader. ``esm-jax score-variants`` keeps the input's columns and rows as they are (a
leading byte-order mark is dropped) and each model adds one column, so the output is the input plus predictions,
as fair-esm's ``predict.py`` writes it; the evaluations read their assays through it too
(``data_pipeline.readers.dms`` checks each mutant against the wild type).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path

from esm_jax.errors import EsmJaxError
from esm_jax.files import atomic_output


class DmsTableError(EsmJaxError, ValueError):
    """A DMS CSV is missing, lacks a named column, or holds a value that cannot be used."""


@dataclasses.dataclass
class DmsTable:
    """``rows[i][j]`` is column ``header[j]`` of data row ``i``, found on line ``lines[i]`` of ``path``."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        if name not in self.header:
            raise DmsTableError(f"{self.path}: no column {name!r}; the columns are {self.header}")
        index = self.header.index(name)
        return [row[index] for row in self.rows]

    def numbers(self, name: str) -> list[float]:
        """Column ``name`` as floats; empty cells and ``nan`` become NaN, anything else non-numeric is refused."""
        values = []
        for line, text in zip(self.lines, self.column(name), strict=True):
            try:
                values.append(float(text) if text.strip() else math.nan)
            except ValueError:
                raise DmsTableError(f"{self.path}: line {line}: column {name!r} holds {text!r}, not a number") from None
        return values

    def set_column(self, name: str, values: Sequence[str]) -> None:
        """Replace column ``name`` (or append it) with ``values``, one per row."""
        if len(values) != len(self.rows):
            raise ValueError(f"{len(values)} values for {len(self.rows)} rows")
        if name not in self.header:
            self.header.append(name)
            for row in self.rows:
                row.append("")
        index = self.header.index(name)
        for row, value in zip(self.rows, values, strict=True):
            row[index] = value


def read_dms_table(path: str | os.PathLike) -> DmsTable:
    """Every row of the CSV at ``path``; short rows are padded with empty cells, long rows refused."""
    path = Path(path)
    if not path.is_file():
        raise DmsTableError(f"{path}: no such CSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header, rows, lines = _read_rows(path, csv.reader(handle))
    except UnicodeDecodeError as error:
        raise DmsTableError(
            f"{path}: not UTF-8 text (byte {error.object[error.start : error.start + 1]!r} at offset {error.start}); "
            "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    except csv.Error as error:
        raise DmsTableError(f"{path}: not a readable CSV file ({error})") from None
    return DmsTable(path, header, rows, lines)


def _read_rows(path: Path, reader) -> tuple[list[str], list[list[str]], list[int]]:
    header = next(reader, None)
    if not header:
        raise DmsTableError(f"{path}: empty file; a DMS CSV starts with a header line naming its columns")
    rows, lines = [], []
    for row in reader:
        if not row:
            continue
        if len(row) > len(header):
            raise DmsTableError(
                f"{path}: line {reader.line_num}: {len(row)} fields but the header names {len(header)} columns"
            )
        rows.append(row + [""] * (len(header) - len(row)))
        lines.append(reader.line_num)
    return header, rows, lines


def write_dms_table(table: DmsTable, path: str | os.PathLike) -> Path:
    """Write ``table`` to ``path`` through a temporary file in the same folder, so no partial file is ever seen."""
    with atomic_output(path, newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(table.header)
        writer.writerows(table.rows)
    return Path(path)
