"""Streaming readers for UniRef-style inputs: FASTA (plain or .gz) with progress lines, and the cluster mapping TSV.

FASTA records come from the project's one parser (:func:`esm_jax.fasta.parse_fasta`), one at a time, so memory does
not grow with the file; each carries its file and 1-based record number so a bad record can be pointed at exactly.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator
from pathlib import Path

from data_pipeline.build.progress import ProgressLog
from data_pipeline.errors import MalformedFileError
from esm_jax.fasta import FastaRecord, open_text, parse_fasta


@dataclasses.dataclass(frozen=True)
class MappingRow:
    """One member of one UniRef50 cluster, from line ``line`` (1-based) of the mapping TSV."""

    path: str
    line: int
    cluster_id: str
    member_id: str


def _fraction_reader(raw: io.BufferedReader, path: str | os.PathLike[str]):
    size = max(os.path.getsize(path), 1)
    return lambda: raw.tell() / size


def read_corpus_fasta(
    path: str | os.PathLike[str], file_index: int = 0, progress: bool = True
) -> Iterator[FastaRecord]:
    """Yield the records of one corpus FASTA file in order, logging rate, share read and ETA when ``progress``."""
    with open_text(path) as (text, raw):
        log = ProgressLog(f"reading {Path(path).name}", _fraction_reader(raw, path)) if progress else None
        for record in parse_fasta(text, path, file_index):
            yield record
            if log:
                log.step()
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
