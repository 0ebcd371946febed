"""Protein chains from PDB or mmCIF files (plain or .gz): sequence, CB coordinates (CA for glycine), contact maps.

Contacts follow the ESM-1b evaluation (Rives et al., PNAS 2021): two residues are in contact when their CB atoms
(CA for glycine) are closer than 8 Å. Residues are the chain's amino acids that have a CA atom, in file order,
including modified ones (MSE -> M via Biopython's extended three-to-one table; unknown ones -> X). A non-glycine
residue without CB gets NaN coordinates and ``has_cb`` False, so it is never a contact.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
from Bio.Data.PDBData import protein_letters_3to1_extended
from Bio.PDB import MMCIFParser, PDBParser
from Bio.PDB.PDBExceptions import PDBConstructionException, PDBConstructionWarning

from data_pipeline.errors import MalformedFileError
from esm_jax.fasta import open_text

CONTACT_ANGSTROM = 8.0
_WATER = {"HOH", "WAT", "DOD"}


@dataclasses.dataclass(frozen=True)
class ChainStructure:
    """One chain: ``sequence[i]`` has CB (or glycine CA) coordinates ``coords[i]`` and residue id ``residue_ids[i]``."""

    name: str
    chain: str
    sequence: str
    coords: np.ndarray
    residue_ids: tuple[str, ...]

    @property
    def has_cb(self) -> np.ndarray:
        return ~np.isnan(self.coords).any(axis=1)

    def distances(self) -> np.ndarray:
        """``(L, L)`` CB-CB distances in Å; NaN where a residue lacks its atom."""
        return np.linalg.norm(self.coords[:, None, :] - self.coords[None, :, :], axis=-1)

    def contact_map(self, threshold: float = CONTACT_ANGSTROM) -> np.ndarray:
        """``(L, L)`` bool: CB (CA for glycine) closer than ``threshold`` Å; False where an atom is missing."""
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(self.distances(), nan=np.inf) < threshold


def read_chain(path: str | Path, chain: str | None = None, model: int = 0) -> ChainStructure:
    """The chain ``chain`` (or the only chain) of ``model`` in a ``.pdb``/``.cif`` file, optionally gzipped."""
    structure = _parse(Path(path))
    models = list(structure)
    if not models:
        raise MalformedFileError(path, "whole file", "no chain with amino-acid residues (no model)", "Check the file.")
    if model >= len(models):
        raise MalformedFileError(
            path, f"model {model}", f"the file has {len(models)} model(s)", "Choose another model."
        )
    chains = {c.id: c for c in models[model] if _amino_acids(c)}
    if not chains:
        raise MalformedFileError(path, "whole file", "no chain with amino-acid residues (CA atoms)", "Check the file.")
    if chain is None and len(chains) > 1:
        raise MalformedFileError(path, "chain", f"several chains {sorted(chains)}", "Name the chain to read.")
    chosen = chains[chain] if chain is not None and chain in chains else None if chain else next(iter(chains.values()))
    if chosen is None:
        raise MalformedFileError(path, f"chain {chain!r}", f"not found; chains with residues: {sorted(chains)}")
    return _chain_structure(Path(path).name, chosen)


def _parse(path: Path):
    is_cif = any(part in (".cif", ".mmcif") for part in path.suffixes)
    parser = MMCIFParser(QUIET=True) if is_cif else PDBParser(QUIET=True)
    try:
        with warnings.catch_warnings(), open_text(path) as (text, _):
            warnings.simplefilter("ignore", PDBConstructionWarning)
            return parser.get_structure(path.name.split(".")[0], text)
    except (PDBConstructionException, ValueError, KeyError, IndexError, EOFError, UnicodeDecodeError) as error:
        kind = "mmCIF" if is_cif else "PDB"
        raise MalformedFileError(
            path, "while parsing", f"not a readable {kind} file ({error})", "Check the file."
        ) from error


def _amino_acids(chain) -> list:
    return [r for r in chain if r.get_resname() not in _WATER and "CA" in r]


def _chain_structure(name: str, chain) -> ChainStructure:
    residues = _amino_acids(chain)
    letters, coords, ids = [], np.full((len(residues), 3), np.nan, dtype=np.float32), []
    for i, residue in enumerate(residues):
        letter = protein_letters_3to1_extended.get(residue.get_resname().upper(), "X")
        letters.append(letter)
        atom = "CA" if letter == "G" else "CB"
        if atom in residue:
            coords[i] = residue[atom].coord
        hetero, number, insertion = residue.id
        ids.append(f"{number}{insertion.strip()}")
    return ChainStructure(name, chain.id, "".join(letters), coords, tuple(ids))
