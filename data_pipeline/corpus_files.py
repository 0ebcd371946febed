"""Streaming readers for UniRef-style inputs: FASTA (plain or .gz) and the UniRef50-to-member mapping TSV.

Records are yielded one at a time (Biopython's FASTA parser over a text stream), so memory does not grow with
the file. Each record carries its file and 1-based record number so a bad record can be pointed at exactly.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from Bio.SeqIO.FastaIO import SimpleFastaParser

from data_pipeline.errors import MalformedFileError
from data_pipeline.progress import ProgressLog


@dataclasses.dataclass(frozen=True)
class SequenceRecord:
    """A FASTA record as read: ``file_index`` orders input files, ``record`` counts from 1 within the file."""

    file_index: int
    path: str
    record: int
    record_id: str
    sequence: str


@dataclasses.dataclass(frozen=True)
class MappingRow:
    """One member of one UniRef50 cluster, from line ``line`` (1-based) of the mapping TSV."""

    path: str
    line: int
    cluster_id: str
    member_id: str


@contextmanager
def open_text(path: str | os.PathLike[str]) -> Iterator[tuple[io.TextIOBase, io.BufferedReader]]:
    """Open plain or gzip text; also returns the raw byte stream so progress can follow the compressed offset."""
    raw = open(path, "rb")  # noqa: SIM115 - closed below together with the text wrapper
    try:
        stream = gzip.GzipFile(fileobj=raw) if str(path).endswith(".gz") else raw
        yield io.TextIOWrapper(stream, encoding="utf-8", newline=None), raw
    finally:
        raw.close()


def _fraction_reader(raw: io.BufferedReader, path: str | os.PathLike[str]):
    size = max(os.path.getsize(path), 1)
    return lambda: raw.tell() / size


def read_fasta(path: str | os.PathLike[str], file_index: int = 0, progress: bool = True) -> Iterator[SequenceRecord]:
    """Yield the records of one FASTA file in order; the id is the header's first word."""
    name = str(path)
    with open_text(path) as (text, raw):
        log = ProgressLog(f"reading {Path(name).name}", _fraction_reader(raw, path)) if progress else None
        try:
            for number, (title, sequence) in enumerate(SimpleFastaParser(text), start=1):
                words = title.split(None, 1)
                yield SequenceRecord(file_index, name, number, words[0] if words else "", sequence)
                if log:
                    log.step()
        except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, ValueError) as error:
            raise MalformedFileError(
                name, "while reading", f"not a readable FASTA file ({error})", "Check the file is complete."
            ) from error
        if log:
            log.finish()


def read_mapping(path: str | os.PathLike[str]) -> Iterator[MappingRow]:
    """Yield one row per cluster member from a ``cluster<TAB>member,member,...`` TSV with a header line."""
    name = str(path)
    with open_text(path) as (text, _):
        for line_number, line in enumerate(text, start=1):
            line = line.rstrip("\n")
            if line_number == 1 or not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0].strip():
                raise MalformedFileError(
                    name,
                    f"line {line_number}",
                    f"expected 'cluster<TAB>member,member,...', got {line[:80]!r}",
                    "Fix the line; the mapping needs exactly two tab-separated columns.",
                )
            cluster_id = fields[0].strip()
            for member in fields[1].split(","):
                if member.strip():
                    yield MappingRow(name, line_number, cluster_id, member.strip())
