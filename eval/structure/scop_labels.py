"""SCOPe labels for PDB chains, looked up by PDB id and chain in an ASTRAL FASTA file (Fox et al., NAR 2014).

ASTRAL names each domain's chain in its region, e.g. ``d1ahsa_ b.19.1.1 (A:)`` or ``d2a2la1 d.110.9.1 (A:4-145)``.
A chain takes the sccs of its domains when they all share one; a chain whose domains lie in different families
(e.g. 1aqt A: a.2.10.1 and b.93.1.1) is ambiguous and left unlabelled, as is a chain the file does not list (the 40%
set keeps one representative per sequence cluster, so most PDB chains are absent).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from data_pipeline.readers.scope import ScopeDomain, read_astral_fasta

ASTRAL_FILE = Path("scope_astral40_2.07") / "astral-scopedom-seqres-gd-sel-gs-bib-40-2.07.fa.gz"
# structural hold-out level -> how many sccs fields name the group (class.fold.superfamily.family)
LEVEL_FIELDS = {"family": 4, "superfamily": 3, "fold": 2}
_REGION_CHAIN = re.compile(r"(?:^|,)\s*(\w):")

ChainIndex = dict[tuple[str, str], list[ScopeDomain]]


def index_by_chain(domains: Sequence[ScopeDomain]) -> ChainIndex:
    """``{(pdb id in lower case, chain id): domains on that chain}`` from each domain's region."""
    index: ChainIndex = {}
    for domain in domains:
        for chain in sorted(set(_REGION_CHAIN.findall(domain.region))):
            index.setdefault((domain.sid[1:5].lower(), chain), []).append(domain)
    return index


def read_chain_index(path: str | Path) -> ChainIndex:
    """The ASTRAL FASTA file at ``path`` indexed by PDB id and chain."""
    return index_by_chain(read_astral_fasta(path))


def label_chain(index: ChainIndex, pdb: str, chain: str) -> tuple[str | None, str]:
    """``(sccs, "")`` for a chain whose ASTRAL domains share one sccs, else ``(None, why it has no label)``."""
    domains = index.get((pdb.lower(), chain), [])
    if not domains:
        return None, "chain not in the ASTRAL set"
    families = sorted({d.sccs for d in domains})
    if len(families) > 1:
        return None, f"domains in different families ({', '.join(families)})"
    return families[0], ""


def group_at(sccs: str, level: str) -> str:
    """The family, superfamily or fold an sccs belongs to (``a.1.1.2`` at fold level: ``a.1``)."""
    if level not in LEVEL_FIELDS:
        raise ValueError(f"unknown hold-out level {level!r}; choose from {', '.join(LEVEL_FIELDS)}")
    return ".".join(sccs.split(".")[: LEVEL_FIELDS[level]])
