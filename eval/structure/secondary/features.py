"""Residue-level training and test matrices for secondary-structure probes from per-protein representations."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from data_pipeline.readers.netsurfp import SecondaryStructureRecord
from eval.structure.secondary.metrics import SS3_STATES, SS8_STATES, encode_states


@dataclasses.dataclass(frozen=True)
class ResidueLabels:
    """Per-residue 8-state (or -1 when absent) and 3-state labels, and the residues to use."""

    ss8: np.ndarray
    ss3: np.ndarray
    mask: np.ndarray
    beyond_window: int


def residue_labels(records: Sequence[SecondaryStructureRecord], feature_lengths: Sequence[int]) -> ResidueLabels:
    """Labels of every record concatenated, cut to its feature rows (a model's window); masked residues kept.

    A record whose features are longer than its labels, or whose labels disagree in length, is refused.
    """
    ss8, ss3, mask, beyond = [], [], [], 0
    for record, rows in zip(records, feature_lengths, strict=True):
        length = len(record.sequence)
        if rows > length or len(record.ss3) != length or (record.ss8 and len(record.ss8) != length):
            raise ValueError(
                f"{record.id}: {rows} feature rows, {length} residues, {len(record.ss3)} 3-state and "
                f"{len(record.ss8)} 8-state labels; every residue needs one label of each kind"
            )
        beyond += int(record.mask[rows:].sum())
        ss3.append(encode_states(record.ss3[:rows], SS3_STATES, record.id))
        ss8.append(encode_states(record.ss8[:rows], SS8_STATES, record.id) if record.ss8 else np.full(rows, -1))
        mask.append(np.asarray(record.mask[:rows], dtype=bool))
    return ResidueLabels(np.concatenate(ss8), np.concatenate(ss3), np.concatenate(mask), beyond)


def padded_rows(x: np.ndarray, multiple: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """``x`` padded with zero rows to a multiple of ``multiple`` and the mask of its real rows."""
    rows = -(-x.shape[0] // multiple) * multiple
    padded = np.zeros((rows, *x.shape[1:]), dtype=x.dtype)
    padded[: x.shape[0]] = x
    return padded, np.arange(rows) < x.shape[0]
