"""The deep mutational scans in the shared data folder, read and validated against their wild types.

Three assays of the DeepSequence collection (Riesselman et al. 2018) used by Rives et al. 2021 and
Meier et al. 2021: TEM-1 β-lactamase (BLAT_ECOLX, Stiffler et al. 2015, fitness at 2500 µg/mL
ampicillin), the PSD-95 PDZ3 domain (DLG4_RAT, McLaughlin et al. 2012, CRIPT binding) and the Pab1 RRM
domain (PABP_YEAST, Melamed et al. 2013). Mutant strings are 1-based on the full wild type; for all three
a higher fitness value means a fitter variant (ProteinGym's ``raw_DMS_directionality`` is 1).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from data_pipeline.layout import dataset_file
from data_pipeline.readers.dms import read_dms_csv
from data_pipeline.readers.labeled_fasta import read_labeled_fasta
from esm_jax.inference.mutations import Mutant

WILD_TYPES = "dms_deepsequence_subset/wild_type_sequences.fasta"


@dataclasses.dataclass(frozen=True)
class AssaySource:
    """Where an assay lives under the data folder, which column is its fitness, and its name in Meier et al."""

    protein: str
    csv: str
    fitness_column: str
    published_name: str


ASSAYS: dict[str, AssaySource] = {
    source.protein: source
    for source in (
        AssaySource("BLAT_ECOLX", "esm_examples/BLAT_ECOLX_Ranganathan2015.csv", "2500", "BLAT_ECOLX_Ranganathan2015"),
        AssaySource(
            "DLG4_RAT", "dms_deepsequence_subset/DLG4_RAT_Ranganathan2012.csv", "CRIPT", "DLG4_RAT_Ranganathan2012"
        ),
        AssaySource(
            "PABP_YEAST",
            "dms_deepsequence_subset/PABP_YEAST_Fields2013-singles.csv",
            "linear",
            "PABP_YEAST_Fields2013-singles",
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class Assay:
    """One protein's variants (validated against ``wild_type``) and their measured fitness."""

    protein: str
    wild_type: str
    mutants: tuple[Mutant, ...]
    fitness: np.ndarray

    def __len__(self) -> int:
        return len(self.mutants)

    def subset(self, indices) -> Assay:
        indices = np.asarray(indices, dtype=np.int64)
        return Assay(self.protein, self.wild_type, tuple(self.mutants[i] for i in indices), self.fitness[indices])


def load_assay(data_dir: str | Path, protein: str, *, max_variants: int = 0, seed: int = 0) -> Assay:
    """The assay of ``protein``; ``max_variants`` > 0 keeps a seeded random subset of that many (for quick runs)."""
    data_dir = Path(data_dir)
    if protein not in ASSAYS:
        raise ValueError(f"unknown assay {protein!r}; known: {', '.join(ASSAYS)}")
    source = ASSAYS[protein]
    wild_types = {record.id: record.body for record in read_labeled_fasta(dataset_file(WILD_TYPES, data_dir))}
    wild_type = wild_types[protein]
    variants = read_dms_csv(dataset_file(source.csv, data_dir), wild_type, source.fitness_column)
    mutants = tuple(Mutant(variant.mutant, variant.substitutions, 1) for variant in variants)
    assay = Assay(protein, wild_type, mutants, np.array([variant.score for variant in variants], dtype=np.float64))
    if 0 < max_variants < len(assay):
        keep = np.sort(np.random.default_rng(seed).choice(len(assay), size=max_variants, replace=False))
        assay = assay.subset(keep)
    return assay
