"""Contact-prediction proteins from the shared data: structure, true contacts and, where there is one, an MSA.

Three sets (see each folder's SOURCE.md):

* ``kortemme``: 40 single-domain crystal structures with SCOP classes (Ollikainen & Kortemme, PLoS Comput Biol
  2013) and, for 38 of them, their Pfam family alignment. The structure's sequence is not a row of the alignment,
  so it is placed by a local BLOSUM62 alignment to the most similar row; structure residues that fall outside the
  family's columns have no alignment column.
* ``pdb-chains``: 50 PDB chains (MDAnalysis test data), no alignment, no labels.
* ``casp12``: CASP12 domains T0866-D1 and T0900-D1 with the targets' deep PSICOV alignments (DNCON2); residue
  numbers are target positions, so the domain spans target positions ``first..last``.

Contacts are CB-CB < 8 Å (CA for glycine), from :mod:`data_pipeline.readers.structure`; residues lacking the atom
are marked invalid and never scored.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
from Bio import Align

from data_pipeline.errors import MalformedFileError
from data_pipeline.layout import require
from data_pipeline.readers.alignments import Alignment, read_aligned_fasta, read_psicov
from data_pipeline.readers.structure import ChainStructure, read_chain
from eval.structure.msa.features import encode_msa

CONTACT_SETS = ("kortemme", "pdb-chains", "casp12")


@dataclasses.dataclass(frozen=True)
class QueryAlignment:
    """An MSA whose column ``columns[p]`` holds the residue aligned to query residue ``p`` (-1: none)."""

    rows: tuple[str, ...]
    columns: np.ndarray

    def anchored(self, query: str, max_rows: int | None = None, seed: int = 0) -> np.ndarray:
        """``(1 + N, L)`` integer MSA over the query's residues, row 0 the query, ``N <= max_rows`` rows sampled."""
        chosen = self._chosen_rows(max_rows, seed)
        mapped = self.columns >= 0
        gaps = np.full(len(query), ord("-"), dtype=np.uint8)
        rows = [query]
        for index in chosen:
            letters = gaps.copy()
            letters[mapped] = np.frombuffer(self.rows[index].encode("ascii"), np.uint8)[self.columns[mapped]]
            rows.append(letters.tobytes().decode("ascii"))
        return encode_msa(rows)

    def residues(self, max_rows: int | None = None, seed: int = 0) -> tuple[list[str], np.ndarray]:
        """Ungapped sequences of the sampled rows and ``(N, L)`` the index of each one's residue at query residue p.

        The index is -1 where the row has a gap at that column or the query residue has no column.
        """
        chosen = self._chosen_rows(max_rows, seed)
        sequences, index = [], np.full((len(chosen), len(self.columns)), -1, dtype=np.int64)
        mapped = self.columns >= 0
        for n, row_index in enumerate(chosen):
            row = np.frombuffer(self.rows[row_index].encode("ascii"), np.uint8)
            is_residue = (row != ord("-")) & (row != ord("."))
            position = np.cumsum(is_residue) - 1
            at = np.where(is_residue[self.columns[mapped]], position[self.columns[mapped]], -1)
            index[n, mapped] = at
            sequences.append(row[is_residue].tobytes().decode("ascii"))
        return sequences, index

    def _chosen_rows(self, max_rows: int | None, seed: int) -> np.ndarray:
        count = len(self.rows)
        if max_rows is None or count <= max_rows:
            return np.arange(count)
        return np.sort(np.random.default_rng(seed).choice(count, size=max_rows, replace=False))


@dataclasses.dataclass(frozen=True)
class ContactProtein:
    """One protein: ``contacts`` (L, L) bool, ``valid`` (L,) residues with coordinates, a CV ``group`` label."""

    name: str
    sequence: str
    contacts: np.ndarray
    valid: np.ndarray
    group: str = ""
    alignment: QueryAlignment | None = None


def from_structure(
    chain: ChainStructure, name: str, group: str = "", alignment: QueryAlignment | None = None
) -> ContactProtein:
    """A :class:`ContactProtein` from a parsed chain; a chain with fewer than two located residues is refused."""
    valid = chain.has_cb
    if valid.sum() < 2:
        raise MalformedFileError(
            chain.name,
            f"chain {chain.chain!r}",
            "fewer than two residues have a CB (CA for Gly) atom",
            "Use a chain with coordinates.",
        )
    return ContactProtein(name, chain.sequence, chain.contact_map(), valid, group, alignment)


def load_contact_set(name: str, data_dir: Path, limit: int | None = None) -> list[ContactProtein]:
    """The proteins of contact set ``name`` (one of :data:`CONTACT_SETS`), the first ``limit`` of them."""
    loaders = {"kortemme": load_kortemme, "pdb-chains": load_pdb_chains, "casp12": load_casp12}
    if name not in loaders:
        raise ValueError(f"unknown contact set {name!r}; choose from {', '.join(CONTACT_SETS)}")
    return loaders[name](Path(data_dir), limit)


def load_kortemme(data_dir: Path, limit: int | None = None) -> list[ContactProtein]:
    """The Kortemme-lab Pfam domains, grouped by SCOP class, with their family alignments."""
    folder = require("pfam40_domains_kortemme", data_dir)
    table = folder / "domains.csv"
    with open(table) as handle:
        rows = [row for row in csv.reader(line for line in handle if not line.startswith("#")) if row]
    proteins = []
    for pfam, _, _, pdb, _, scop_class in rows[:limit]:
        chain = read_chain(folder / "structures" / f"{pdb}_A.pdb")
        alignment_file = folder / "alignments" / f"{pfam}.align.80"
        alignment = None
        if alignment_file.is_file():
            alignment = place_query(chain.sequence, read_aligned_fasta(alignment_file), alignment_file)
        proteins.append(from_structure(chain, f"{pfam}_{pdb}", scop_class, alignment))
    return proteins


def load_pdb_chains(data_dir: Path, limit: int | None = None) -> list[ContactProtein]:
    """The MDAnalysis PDB chains (no alignment, no group labels)."""
    folder = require("pdb_chains_mdanalysis_dssp", data_dir)
    files = sorted(folder.glob("*.pdb.gz"))[:limit]
    return [from_structure(read_chain(path), path.name.split(".")[0]) for path in files]


def load_casp12(data_dir: Path, limit: int | None = None) -> list[ContactProtein]:
    """The two CASP12 domains with their targets' alignments cut to the domain's span."""
    folder = require("casp12_dncon2_examples", data_dir)
    proteins = []
    for target in ("T0866", "T0900")[:limit]:
        path = folder / f"{target}-D1.pdb"
        chain = read_chain(path)
        alignment = read_psicov(folder / f"{target}.aln")
        proteins.append(domain_on_target(chain, alignment, path, f"{target}-D1"))
    return proteins


def domain_on_target(chain: ChainStructure, alignment: Alignment, path: Path, name: str) -> ContactProtein:
    """A domain whose residue numbers are positions on the alignment's first row (the target), 1-based."""
    target = alignment.rows[0]
    numbers = [_residue_number(path, rid) for rid in chain.residue_ids]
    first, last = min(numbers), max(numbers)
    if first < 1 or last > len(target):
        raise MalformedFileError(
            path, "residue numbers", f"{first}..{last} fall outside the target's {len(target)} positions"
        )
    length = last - first + 1
    coords = np.full((length, 3), np.nan, dtype=np.float32)
    for number, letter, xyz in zip(numbers, chain.sequence, chain.coords, strict=True):
        if target[number - 1] != letter:
            raise MalformedFileError(
                path,
                f"residue {number}",
                f"the structure has {letter} but the target has {target[number - 1]} there",
                "Use the alignment of this structure's target.",
            )
        coords[number - first] = xyz
    domain = dataclasses.replace(
        chain,
        sequence=target[first - 1 : last],
        coords=coords,
        residue_ids=tuple(str(n) for n in range(first, last + 1)),
    )
    rows = tuple(row[first - 1 : last] for row in alignment.rows[1:])
    return from_structure(domain, name, alignment=QueryAlignment(rows, np.arange(length)))


def _residue_number(path: Path, residue_id: str) -> int:
    if not residue_id.lstrip("-").isdigit():
        raise MalformedFileError(path, f"residue {residue_id}", "has an insertion code", "Renumber the residues.")
    return int(residue_id)


def place_query(query: str, alignment: Alignment, path: Path) -> QueryAlignment:
    """Map each query residue to a column via a local BLOSUM62 alignment to the alignment's most similar row."""
    aligner = Align.PairwiseAligner(mode="local", open_gap_score=-10.0, extend_gap_score=-1.0)
    aligner.substitution_matrix = Align.substitution_matrices.load("BLOSUM62")
    ungapped = [row.replace("-", "") for row in alignment.rows]
    scores = [aligner.score(query, row) if row else -np.inf for row in ungapped]
    best = int(np.argmax(scores))
    if scores[best] <= 0:
        raise MalformedFileError(path, "every row", "no row resembles the structure's sequence", "Check the family.")
    columns_of_residues = np.flatnonzero(np.frombuffer(alignment.rows[best].encode("ascii"), np.uint8) != ord("-"))
    columns = np.full(len(query), -1, dtype=np.int64)
    pairwise = aligner.align(query, ungapped[best])[0]
    for (q_start, q_end), (r_start, r_end) in zip(*pairwise.aligned, strict=True):
        columns[q_start:q_end] = columns_of_residues[r_start:r_end]
    return QueryAlignment(alignment.rows, columns)
