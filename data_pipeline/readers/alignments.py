"""Multiple sequence alignments: Stockholm (Pfam), A3M (HHblits), aligned FASTA and PSICOV ``.aln``.

All return an :class:`Alignment` whose rows have equal width. In A3M, lower-case letters are insertions relative to
the query and ``.`` pads them; they are removed by default (as fair-esm's ``remove_insertions`` does) so the rows
line up with the query's columns.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from Bio import AlignIO
from Bio.SeqIO.FastaIO import SimpleFastaParser

from data_pipeline.errors import MalformedFileError
from data_pipeline.readers.checks import check_letters
from esm_jax.alphabet import RESIDUE_LETTERS
from esm_jax.fasta import open_text

_INSERTIONS = re.compile(r"[a-z.*]")
ALIGNED_LETTERS = RESIDUE_LETTERS + "-"


@dataclasses.dataclass(frozen=True)
class Alignment:
    ids: tuple[str, ...]
    rows: tuple[str, ...]

    @property
    def width(self) -> int:
        return len(self.rows[0])

    @property
    def depth(self) -> int:
        return len(self.rows)


def read_stockholm(path: str | Path) -> Alignment:
    """A single-alignment Stockholm file; ``.`` gaps (insert columns) become ``-``, residues upper case."""
    try:
        with open_text(path) as (text, _):
            alignment = AlignIO.read(text, "stockholm")
    except ValueError as error:
        raise MalformedFileError(
            path, "while parsing", f"not a valid Stockholm alignment ({error})", "Check the file."
        ) from None
    rows = [str(record.seq).replace(".", "-").upper() for record in alignment]
    return _checked(path, [record.id for record in alignment], rows)


def read_a3m(path: str | Path, keep_insertions: bool = False) -> Alignment:
    """An A3M file; insertions (lower case, ``.``) are removed unless ``keep_insertions`` (then rows may differ)."""
    ids, rows = [], []
    with open_text(path) as (text, _):
        for title, body in SimpleFastaParser(text):
            ids.append(title.split()[0] if title.split() else "")
            rows.append(body if keep_insertions else _INSERTIONS.sub("", body))
    if keep_insertions:
        return Alignment(tuple(ids), tuple(rows))
    return _checked(path, ids, rows)


def read_aligned_fasta(path: str | Path) -> Alignment:
    """Aligned FASTA (e.g. Pfam ``NAME/start-end`` rows with ``-`` gaps)."""
    with open_text(path) as (text, _):
        pairs = [(title.split()[0] if title.split() else "", body) for title, body in SimpleFastaParser(text)]
    return _checked(path, [p[0] for p in pairs], [p[1] for p in pairs])


def read_psicov(path: str | Path) -> Alignment:
    """PSICOV ``.aln``: one aligned sequence per line, no headers, the first line is the target."""
    with open_text(path) as (text, _):
        rows = [line.strip() for line in text if line.strip()]
    return _checked(path, [f"row{i + 1}" for i in range(len(rows))], rows)


def _checked(path, ids: list[str], rows: list[str]) -> Alignment:
    if not rows:
        raise MalformedFileError(path, "whole file", "no sequences", "Check the file is an alignment.")
    width = len(rows[0])
    for number, (row_id, row) in enumerate(zip(ids, rows, strict=True), start=1):
        where = f"row {number} ({row_id})"
        if len(row) != width:
            raise MalformedFileError(
                path,
                where,
                f"{len(row)} columns but the first row has {width}",
                "Every aligned row needs the same width.",
            )
        check_letters(row, ALIGNED_LETTERS, path, where, "the aligned row")
    return Alignment(tuple(ids), tuple(rows))
