"""FASTA files whose headers carry labels (``>ID KEY=VALUE ...``), and FLIP's secondary-structure split built on them.

FLIP (Dallago et al., NeurIPS Datasets and Benchmarks 2021) ships the NetSurfP-2.0 split as three FASTA files with
the same ids: sequences, 3-state labels (header ``SET=train|test VALIDATION=True|False``) and a 0/1 resolved mask.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from Bio.SeqIO.FastaIO import SimpleFastaParser

from data_pipeline.errors import MalformedFileError
from data_pipeline.readers.checks import check_letters, check_same_length
from data_pipeline.readers.netsurfp import SS3_STATES
from esm_jax.alphabet import RESIDUE_LETTERS
from esm_jax.fasta import open_text


@dataclasses.dataclass(frozen=True)
class LabeledRecord:
    id: str
    labels: dict[str, str]
    body: str


@dataclasses.dataclass(frozen=True)
class FlipSecondaryStructure:
    """One chain of FLIP's secondary-structure split; evaluate only where ``mask`` is True."""

    id: str
    sequence: str
    ss3: str
    mask: np.ndarray
    split: str
    validation: bool


def read_labeled_fasta(path: str | Path) -> list[LabeledRecord]:
    """Records with their ``KEY=VALUE`` header labels; a header word without ``=`` or a repeated id is an error."""
    records: list[LabeledRecord] = []
    seen: set[str] = set()
    with open_text(path) as (text, _):
        for number, (title, body) in enumerate(SimpleFastaParser(text), start=1):
            words = title.split()
            record_id = words[0] if words else ""
            where = f"record {number} ({record_id})"
            if not record_id or record_id in seen:
                raise MalformedFileError(path, where, "missing or repeated id", "Give every record a unique id.")
            seen.add(record_id)
            records.append(LabeledRecord(record_id, _labels(path, where, words[1:]), body))
    return records


def _labels(path, where: str, words: list[str]) -> dict[str, str]:
    labels = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise MalformedFileError(path, where, f"header word {word!r} is not KEY=VALUE", "Fix the header.")
        labels[key] = value
    return labels


def read_flip_secondary_structure(
    sequences: str | Path, labels: str | Path, mask: str | Path
) -> list[FlipSecondaryStructure]:
    """Join FLIP's three files by id, checking they hold the same ids and one label and mask bit per residue."""
    residues = {r.id: r for r in read_labeled_fasta(sequences)}
    masks = {r.id: r for r in read_labeled_fasta(mask)}
    out: list[FlipSecondaryStructure] = []
    for number, labeled in enumerate(read_labeled_fasta(labels), start=1):
        where = f"record {number} ({labeled.id})"
        if labeled.id not in residues or labeled.id not in masks:
            raise MalformedFileError(labels, where, "id missing from the sequence or mask file", "Use matching files.")
        sequence, bits = residues[labeled.id].body, masks[labeled.id].body
        check_same_length(labels, where, sequence=sequence, labels=labeled.body, mask=bits)
        check_letters(sequence, RESIDUE_LETTERS, sequences, where, "the sequence")
        check_letters(labeled.body, SS3_STATES, labels, where, "the 3-state string")
        check_letters(bits, "01", mask, where, "the mask")
        split, validation = labeled.labels.get("SET"), labeled.labels.get("VALIDATION")
        if split not in ("train", "test") or validation not in ("True", "False"):
            raise MalformedFileError(
                labels, where, f"SET={split} VALIDATION={validation}", "Expected SET=train|test VALIDATION=True|False."
            )
        mask_array = np.frombuffer(bits.encode(), np.uint8) == ord("1")
        out.append(FlipSecondaryStructure(labeled.id, sequence, labeled.body, mask_array, split, validation == "True"))
    if len(out) != len(residues):
        raise MalformedFileError(sequences, "whole file", f"{len(residues)} sequences but {len(out)} labelled records")
    return out
