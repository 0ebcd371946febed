"""Secondary-structure sets: NetSurfP-2.0 8-state training subset and test sets, and FLIP's full 3-state split.

The 500-protein training subset shares one sequence with CB513; it is dropped from training (the data README's
trap), as is any training sequence identical to one in any test set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from data_pipeline.layout import require
from data_pipeline.readers.labeled_fasta import read_flip_secondary_structure
from data_pipeline.readers.netsurfp import SecondaryStructureRecord, read_netsurfp_csv

SS8_FOLDER = "ss8_netsurfp2"
TEST_FILES = {"CB513": "CB513_HHblits.csv", "TS115": "TS115_HHblits.csv", "CASP12": "CASP12_HHblits.csv"}
TRAIN_FILE = "netsurfp2_subset500_train.csv"


@dataclasses.dataclass(frozen=True)
class SecondaryStructureSets:
    """Training records, test sets by name, and the ids of training records dropped as test duplicates."""

    train: list[SecondaryStructureRecord]
    tests: dict[str, list[SecondaryStructureRecord]]
    dropped: list[str]


def load_ss8_sets(
    data_dir: Path,
    max_train: int | None = None,
    max_test: int | None = None,
    tests: tuple[str, ...] = tuple(TEST_FILES),
) -> SecondaryStructureSets:
    """NetSurfP training subset (test duplicates removed, then the first ``max_train``) and the named test sets."""
    folder = require(SS8_FOLDER, data_dir)
    unknown = set(tests) - set(TEST_FILES)
    if unknown:
        raise ValueError(f"unknown test sets {sorted(unknown)}; choose from {', '.join(TEST_FILES)}")
    every_test = {name: read_netsurfp_csv(folder / file) for name, file in TEST_FILES.items()}
    test_sets = {name: every_test[name][:max_test] for name in tests}
    # duplicates are looked for in the full test files, whatever part of them is evaluated
    test_sequences = {r.sequence for records in every_test.values() for r in records}
    train, dropped = [], []
    for record in read_netsurfp_csv(folder / TRAIN_FILE):
        (dropped if record.sequence in test_sequences else train).append(record)
    return SecondaryStructureSets(train[:max_train], test_sets, [r.id for r in dropped])


def load_flip_ss3(
    data_dir: Path, max_train: int | None = None, max_test: int | None = None, seed: int = 0
) -> tuple[list[SecondaryStructureRecord], list[SecondaryStructureRecord]]:
    """FLIP's NetSurfP-2.0 3-state split as records (``ss8`` left empty): a seeded training sample and the test set."""
    folder = require("ss3_flip_netsurfp2", data_dir)
    chains = read_flip_secondary_structure(
        folder / "sequences.fasta.gz", folder / "sampled.fasta.gz", folder / "mask.fasta.gz"
    )
    records = {
        split: [
            SecondaryStructureRecord(c.id, c.sequence, "", c.ss3, np.asarray(c.mask))
            for c in chains
            if c.split == split
        ]
        for split in ("train", "test")
    }
    train = records["train"]
    if max_train is not None and max_train < len(train):
        chosen = np.sort(np.random.default_rng(seed).choice(len(train), size=max_train, replace=False))
        train = [train[i] for i in chosen]
    return train, records["test"][:max_test]
