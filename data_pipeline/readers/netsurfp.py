"""NetSurfP-2.0 secondary-structure CSVs (Klausen et al., Proteins 2019) with DSSP 8- and 3-state labels.

Two layouts are read:

* ProtTrans/NetSurfP test sets (CB513, TS115, CASP12): header ``input, dssp3, dssp8, disorder, cb513_mask``; every
  field is a space-separated list per residue. The evaluation mask keeps residues with coordinates (``disorder``
  = 1) that the set's own ``cb513_mask`` also keeps: in CB513 that is 83,427 of 140,486 resolved residues; in
  TS115 and CASP12 ``cb513_mask`` keeps every residue. Records have no id; they are named ``<file stem>:<row>``.
* BioNeMo's NetSurfP-2.0 subsets: header ``id,sequence,3state,8state,resolved``; contiguous strings; ``resolved``
  is the mask; coil is written ``_`` in the 8-state string and is returned as ``C``, the symbol of the other layout.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from data_pipeline.errors import MalformedFileError
from data_pipeline.readers.checks import check_letters, check_same_length
from esm_jax.alphabet import RESIDUE_LETTERS
from esm_jax.fasta import open_text

SS8_STATES = "HGIEBTSC"
SS3_STATES = "HEC"
_SS8_TO_SS3 = str.maketrans({"H": "H", "G": "H", "I": "H", "E": "E", "B": "E", "T": "C", "S": "C", "C": "C"})
_PROTTRANS_HEADER = ["input", "dssp3", "dssp8", "disorder", "cb513_mask"]
_BIONEMO_HEADER = ["id", "sequence", "3state", "8state", "resolved"]


@dataclasses.dataclass(frozen=True)
class SecondaryStructureRecord:
    """One chain: sequence, 8-state and 3-state DSSP strings, and the residues to evaluate (``mask``)."""

    id: str
    sequence: str
    ss8: str
    ss3: str
    mask: np.ndarray


def ss8_to_ss3(ss8: str) -> str:
    """The usual DSSP reduction: H, G, I -> H; E, B -> E; T, S, C -> C (as in NetSurfP-2.0)."""
    return ss8.translate(_SS8_TO_SS3)


def read_netsurfp_csv(path: str | Path) -> list[SecondaryStructureRecord]:
    """All records of a NetSurfP CSV in either layout, validated."""
    with open_text(path) as (text, _):
        rows = csv.reader(text)
        header = [h.strip() for h in next(rows, [])]
        if header == _PROTTRANS_HEADER:
            parse = _prottrans_record
        elif header == _BIONEMO_HEADER:
            parse = _bionemo_record
        else:
            raise MalformedFileError(
                path, "line 1", f"unknown header {header}", f"Expected {_PROTTRANS_HEADER} or {_BIONEMO_HEADER}."
            )
        return [parse(path, number, row) for number, row in enumerate(rows, start=2) if row]


def _fields(path, number: int, row: list[str], count: int) -> list[str]:
    if len(row) != count:
        raise MalformedFileError(path, f"line {number}", f"{len(row)} columns instead of {count}", "Fix the CSV row.")
    return [field.strip() for field in row]


def _prottrans_record(path, number: int, row: list[str]) -> SecondaryStructureRecord:
    sequence, ss3, ss8, disorder, cb513_mask = (field.split() for field in _fields(path, number, row, 5))
    where = f"line {number}"
    for name, column in (("disorder", disorder), ("cb513_mask", cb513_mask)):
        if any(value not in ("1.0", "0.0") for value in column):
            raise MalformedFileError(path, where, f"the {name} mask must be 1.0 or 0.0 per residue", "Fix the column.")
    check_same_length(path, where, sequence=sequence, disorder=disorder, cb513_mask=cb513_mask)
    bits = "".join("1" if (a, b) == ("1.0", "1.0") else "0" for a, b in zip(disorder, cb513_mask, strict=True))
    record_id = f"{Path(path).stem}:{number - 1}"
    return _validated(path, where, record_id, "".join(sequence), "".join(ss8), "".join(ss3), bits)


def _bionemo_record(path, number: int, row: list[str]) -> SecondaryStructureRecord:
    record_id, sequence, ss3, ss8, resolved = _fields(path, number, row, 5)
    return _validated(path, f"line {number} ({record_id})", record_id, sequence, ss8.replace("_", "C"), ss3, resolved)


def _validated(path, where: str, record_id: str, sequence: str, ss8: str, ss3: str, mask: str):
    check_same_length(path, where, sequence=sequence, ss8=ss8, ss3=ss3, mask=mask)
    check_letters(sequence, RESIDUE_LETTERS, path, where, "the sequence")
    check_letters(ss8, SS8_STATES, path, where, "the 8-state string")
    check_letters(ss3, SS3_STATES, path, where, "the 3-state string")
    check_letters(mask, "01", path, where, "the mask")
    return SecondaryStructureRecord(record_id, sequence, ss8, ss3, np.frombuffer(mask.encode(), np.uint8) == ord("1"))
