"""Read protein FASTA files (plain or gzip): the one FASTA parser of the project, streaming, with Biopython.

:func:`iter_fasta` yields :class:`FastaRecord` one at a time, so memory does not grow with the file; each record
keeps its file and 1-based record number so a bad one can be pointed at exactly. The data pipeline builds its
training corpora from it. :func:`read_fasta` is what inference reads: checked ``(label, sequence)`` pairs, the
label being the whole header line after ``>``, as fair-esm's ``FastaBatchedDataset`` uses it.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from Bio.SeqIO.FastaIO import SimpleFastaParser

from esm_jax.errors import EsmJaxError


class FastaError(EsmJaxError, ValueError):
    """A FASTA file is unreadable or holds a record that cannot be used as it is."""


@dataclasses.dataclass(frozen=True)
class FastaRecord:
    """A record as read: ``number`` counts from 1 within ``path``; ``file_index`` orders several input files."""

    file_index: int
    path: str
    number: int
    label: str
    sequence: str

    @property
    def record_id(self) -> str:
        """The header's first word ('' for an empty header)."""
        words = self.label.split(None, 1)
        return words[0] if words else ""


GZIP_MAGIC = b"\x1f\x8b"
# Other compressions a FASTA file may come in, which are refused with what to do.
OTHER_COMPRESSIONS = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}


@contextmanager
def open_text(path: str | os.PathLike[str]) -> Iterator[tuple[io.TextIOBase, io.BufferedReader]]:
    """Open plain or gzip UTF-8 text; also returns the raw byte stream, whose offset tells how much was read.

    Gzip is recognised by its first bytes, not the file name, so a gzip file named ``.fasta`` is read too.
    """
    raw = open(path, "rb")  # noqa: SIM115 - closed below together with the text wrapper
    try:
        start = raw.peek(8)[:8]
        for magic, kind in OTHER_COMPRESSIONS.items():
            if start.startswith(magic):
                raise FastaError(f"{path}: {kind}-compressed; decompress it, or compress it with gzip instead")
        stream = gzip.GzipFile(fileobj=raw) if start.startswith(GZIP_MAGIC) else raw
        yield io.TextIOWrapper(stream, encoding="utf-8", newline=None), raw
    finally:
        raw.close()


def parse_fasta(text: io.TextIOBase, path: str | os.PathLike[str], file_index: int = 0) -> Iterator[FastaRecord]:
    """The records of an open FASTA text stream read from ``path``, in order."""
    name = str(path)
    try:
        for number, (label, sequence) in enumerate(SimpleFastaParser(_starting_with_header(text, name)), start=1):
            yield FastaRecord(file_index, name, number, label, sequence)
    except (UnicodeDecodeError, EOFError, OSError) as error:
        raise FastaError(f"{name}: not a readable FASTA file ({error}); check the file is complete") from None


def _starting_with_header(lines: Iterator[str], name: str) -> Iterator[str]:
    """The lines of a FASTA file whose first non-blank line is a header (Biopython would skip anything before it)."""
    lines = iter(lines)
    for number, line in enumerate(lines, start=1):
        if line.strip():
            if not line.startswith(">"):
                raise FastaError(f"{name}: line {number} comes before the first '>' header; is this a FASTA file?")
            yield line
            break
    yield from lines


def iter_fasta(path: str | os.PathLike[str], file_index: int = 0) -> Iterator[FastaRecord]:
    """Stream the records of one FASTA file in order."""
    with open_text(path) as (text, _):
        yield from parse_fasta(text, path, file_index)


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
    for record in iter_fasta(path):
        label, number = record.label, record.number
        sequence = record.sequence[:-1] if strip_stop and record.sequence.endswith("*") else record.sequence
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
