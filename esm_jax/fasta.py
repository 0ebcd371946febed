"""Read protein FASTA files (plain or gzip) into ``(label, sequence)`` pairs with Biopython.

The label is the whole header line after ``>``, as fair-esm's ``FastaBatchedDataset`` uses it.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
from pathlib import Path

from Bio import SeqIO

from esm_jax.errors import EsmJaxError


class FastaError(EsmJaxError, ValueError):
    """A FASTA file is unreadable or holds a record that cannot be used as it is."""


def _open(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def read_fasta(path: str | os.PathLike, *, strip_stop: bool = False, limit: int | None = None) -> list[tuple[str, str]]:
    """All records of ``path`` as ``(label, sequence)``.

    ``strip_stop`` removes one terminal ``*`` (stop codon, as gene callers such as Prodigal
    write); any other ``*`` is left for the alphabet to refuse. Empty records and duplicate
    labels raise :class:`FastaError` naming the file and record number.
    """
    path = Path(path)
    if not path.is_file():
        raise FastaError(f"{path}: no such FASTA file")
    records: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    try:
        with _open(path) as handle:
            for number, record in enumerate(SeqIO.parse(handle, "fasta"), start=1):
                label, sequence = record.description, str(record.seq)
                if strip_stop and sequence.endswith("*"):
                    sequence = sequence[:-1]
                if not sequence:
                    raise FastaError(f"{path}: record {number} ({label!r}) has an empty sequence; remove it")
                if label in seen:
                    raise FastaError(
                        f"{path}: record {number} repeats the label {label!r} of record {seen[label]}; "
                        "labels name the output files, so make them unique"
                    )
                seen[label] = number
                records.append((label, sequence))
                if limit is not None and len(records) >= limit:
                    break
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise FastaError(f"{path}: unreadable FASTA ({exc})") from None
    if not records:
        raise FastaError(f"{path}: no FASTA records found (records start with '>')")
    return records


def bundled_proteome() -> Path:
    """A real proteome that ships with the installed ``pyhmmer`` wheel: 2,100 bacterial proteins.

    ``938293.PRJEB85.HG003687.faa`` from pyhmmer's test data (Prodigal gene calls, so every
    sequence ends with a ``*`` stop). It is the default corpus when no FASTA is given.
    """
    resource = importlib.resources.files("pyhmmer").joinpath("tests/data/seqs/938293.PRJEB85.HG003687.faa")
    path = Path(str(resource))
    if not path.is_file():
        raise FastaError(f"{path}: the pyhmmer test proteome is missing; reinstall pyhmmer")
    return path
