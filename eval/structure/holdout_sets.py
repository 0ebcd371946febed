"""Structures for the structural hold-out (ESM-1b Table 3): contact proteins with an SCOPe sccs and, where the set
has one, a 3-state DSSP string.

The contact sets of :mod:`eval.structure.contacts.sets` are reused: the Kortemme domains (chain A of the named PDB
entry) and the MDAnalysis PDB chains (file ``1ahsA.pdb.gz``: entry 1ahs, chain A, DSSP string in ``1ahsA.pdb.dssp``).
The CASP12 domains name no PDB entry, so they cannot be looked up and are counted as unlabelled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from data_pipeline.errors import MalformedFileError
from data_pipeline.layout import require
from esm_jax.errors import EsmJaxError
from eval.structure.contacts.sets import ContactProtein, load_contact_set
from eval.structure.scop_labels import ChainIndex, label_chain

HOLDOUT_SETS = ("kortemme", "pdb-chains", "casp12")
# MDAnalysis' simplified DSSP alphabet -> the 3 states of the secondary-structure metrics (H, E, C)
_DSSP3 = {"H": "H", "E": "E", "-": "C"}


@dataclasses.dataclass(frozen=True)
class LabelledStructure:
    """One structure: its contacts (``protein``), SCOPe ``sccs`` and 3-state DSSP string (None when unknown)."""

    protein: ContactProtein
    sccs: str
    ss3: str | None


@dataclasses.dataclass(frozen=True)
class HoldoutStructures:
    """The labelled structures, and each unlabelled one's name with the reason it has no label."""

    labelled: list[LabelledStructure]
    unlabelled: dict[str, str]


def read_dssp3(path: Path, length: int) -> str:
    """The 3-state string (H, E, C) of an MDAnalysis ``.pdb.dssp`` file, checked to hold ``length`` residues."""
    fields = path.read_text().split()
    if not fields:
        raise MalformedFileError(path, "line 1", "no DSSP string", "Restore the file from the MDAnalysis test data.")
    states = fields[0]
    unknown = sorted(set(states) - set(_DSSP3))
    if unknown:
        raise MalformedFileError(path, "DSSP string", f"states {unknown} are not H, E or -", "Use 3-state DSSP.")
    if len(states) != length:
        raise MalformedFileError(
            path, "DSSP string", f"{len(states)} states for a {length}-residue chain", "Use the chain's own DSSP file."
        )
    return "".join(_DSSP3[s] for s in states)


def entry_and_chain(set_name: str, protein: ContactProtein) -> tuple[str, str] | None:
    """The PDB entry and chain a structure of ``set_name`` comes from (None: the set names no entry)."""
    if set_name == "kortemme":
        return protein.name.split("_")[1], "A"
    if set_name == "pdb-chains":
        return protein.name[:4], protein.name[4:]
    return None


def load_holdout_structures(set_names: list[str], data: Path, index: ChainIndex) -> HoldoutStructures:
    """Every structure of ``set_names`` labelled through ``index``, and the ones left without a label."""
    unknown = sorted(set(set_names) - set(HOLDOUT_SETS))
    if unknown:
        raise EsmJaxError(f"--sets: unknown structure set(s) {unknown}; choose from {', '.join(HOLDOUT_SETS)}")
    labelled, unlabelled = [], {}
    for set_name in set_names:
        for protein in load_contact_set(set_name, Path(data)):
            entry = entry_and_chain(set_name, protein)
            sccs, reason = label_chain(index, *entry) if entry else (None, "no PDB entry named to look up")
            if sccs is None:
                unlabelled[protein.name] = reason
                continue
            ss3 = None
            if set_name == "pdb-chains":
                folder = require("pdb_chains_mdanalysis_dssp", data)
                ss3 = read_dssp3(folder / f"{protein.name}.pdb.dssp", len(protein.sequence))
            labelled.append(LabelledStructure(protein, sccs, ss3))
    return HoldoutStructures(labelled, unlabelled)
