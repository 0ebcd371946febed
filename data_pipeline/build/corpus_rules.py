"""What makes a corpus record acceptable, decided the same way by the local builder and by Beam workers.

Rules: a sequence must be non-empty and hold only the amino-acid letters of the ESM alphabet (gaps, ``*`` and
special tokens are refused; lower case only with ``upper_case``); ids are unique (the first record in file order is
kept); a member must be in exactly one UniRef50 cluster of the mapping and a mapping entry must have a sequence.
The judges take every record that shares one id, so the verdict does not depend on the order records arrive in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from data_pipeline.build.bad_records import BadRecord, Reason
from data_pipeline.build.corpus_files import MappingRow
from esm_jax.alphabet import RESIDUE_LETTERS
from esm_jax.fasta import FastaRecord

_REFUSED = re.compile(f"[^{RESIDUE_LETTERS}]")
_REFUSED_CASELESS = re.compile(f"[^{RESIDUE_LETTERS}{RESIDUE_LETTERS.lower()}]")


def sequence_problem(record: FastaRecord, upper_case: bool) -> BadRecord | None:
    """The reason ``record``'s sequence cannot be used, or None when it is fine."""
    if not record.sequence:
        return _bad(Reason.EMPTY_SEQUENCE, record, "the record has a header but no residues")
    refused = (_REFUSED_CASELESS if upper_case else _REFUSED).search(record.sequence)
    if refused is None:
        return None
    char = refused.group()
    hint = " (lower case: pass --upper-case to accept it)" if char.upper() in RESIDUE_LETTERS else ""
    return _bad(
        Reason.INVALID_CHARACTER,
        record,
        f"character {char!r} at residue {refused.start() + 1} is not an amino-acid letter of the ESM alphabet "
        f"({RESIDUE_LETTERS}){hint}",
    )


def stored_sequence(record: FastaRecord, upper_case: bool) -> str:
    """The sequence as it goes into the dataset: unchanged, or upper-cased when the user asked for it."""
    return record.sequence.upper() if upper_case else record.sequence


def judge_representative(
    records: Sequence[FastaRecord], upper_case: bool
) -> tuple[FastaRecord | None, list[BadRecord]]:
    """Among the records sharing one id, the one to keep (first in file order, if valid) and the bad ones."""
    ordered = sorted(records, key=lambda r: (r.file_index, r.number))
    first, later = ordered[0], ordered[1:]
    bads = [duplicate(r, (first.path, first.number)) for r in later]
    problem = sequence_problem(first, upper_case)
    if problem:
        return None, [problem, *bads]
    return first, bads


def judge_member(
    member_id: str, records: Sequence[FastaRecord], rows: Sequence[MappingRow], upper_case: bool
) -> tuple[tuple[str, FastaRecord] | None, list[BadRecord]]:
    """For one member id: ``(cluster_id, record)`` to keep, or None, and the bad records found."""
    rows = sorted(rows, key=lambda r: r.line)
    bads = [duplicate_mapping(row, rows[0]) for row in rows[1:]]
    if not records:
        return None, [*bads, mapping_without_sequence(rows[0])]
    kept, record_bads = judge_representative(records, upper_case)
    bads += record_bads
    if kept is None:
        return None, bads
    if not rows:
        return None, [*bads, member_without_cluster(kept)]
    return (rows[0].cluster_id, kept), bads


def duplicate(record: FastaRecord, first: tuple[str, int]) -> BadRecord:
    """``record`` repeats an id first used at ``first`` = (path, record number)."""
    return _bad(Reason.DUPLICATE_ID, record, f"the id was already used by record {first[1]} of {first[0]}")


def duplicate_mapping(row: MappingRow, first: MappingRow) -> BadRecord:
    """``row`` maps a member that an earlier line, ``first``, already mapped."""
    return _bad_row(
        Reason.DUPLICATE_MAPPING,
        row,
        f"member listed under cluster {row.cluster_id!r} but line {first.line} already put it in {first.cluster_id!r}",
    )


def mapping_without_sequence(row: MappingRow) -> BadRecord:
    """``row`` maps a member that no member FASTA holds."""
    return _bad_row(
        Reason.MAPPING_WITHOUT_SEQUENCE,
        row,
        f"cluster {row.cluster_id!r} lists this member but no member FASTA has a record with that id",
    )


def member_without_cluster(record: FastaRecord) -> BadRecord:
    return _bad(Reason.MEMBER_WITHOUT_CLUSTER, record, "no row of the mapping TSV lists this member")


def _bad(reason: Reason, record: FastaRecord, detail: str) -> BadRecord:
    return BadRecord(reason, record.path, record.number, record.record_id, detail)


def _bad_row(reason: Reason, row: MappingRow, detail: str) -> BadRecord:
    return BadRecord(reason, row.path, row.line, row.member_id, detail, unit="line")
