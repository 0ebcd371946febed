"""SCOPe ASTRAL FASTA files: domain sid and sccs -> class, fold, superfamily, family (Fox et al., NAR 2014).

Header: ``>d1dlwa_ a.1.1.1 (A:) Protozoan/bacterial hemoglobin {Ciliate ...}``. ASTRAL writes sequences in lower
case; they are returned in upper case. The ESM-1b remote-homology evaluation leaves out Rossmann-like folds
(c.2-c.5, c.27, c.28, c.30, c.31) and 4- to 8-bladed beta-propellers (b.66-b.70) (Rives et al., PNAS 2021).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from Bio.SeqIO.FastaIO import SimpleFastaParser

from data_pipeline.errors import MalformedFileError
from data_pipeline.readers.checks import check_letters
from esm_jax.alphabet import RESIDUE_LETTERS
from esm_jax.fasta import open_text

EXCLUDED_FOLDS = frozenset(
    {"c.2", "c.3", "c.4", "c.5", "c.27", "c.28", "c.30", "c.31", *(f"b.{n}" for n in range(66, 71))}
)
_HEADER = re.compile(
    r"^(?P<sid>[a-z][0-9][\w.]{5})\s+(?P<sccs>[a-l]\.\d+\.\d+\.\d+)\s+\((?P<region>[^)]*)\)\s*(?P<text>.*)$"
)


@dataclasses.dataclass(frozen=True)
class ScopeDomain:
    sid: str
    sccs: str
    region: str
    description: str
    sequence: str

    @property
    def scop_class(self) -> str:
        return self.sccs.split(".")[0]

    @property
    def fold(self) -> str:
        return ".".join(self.sccs.split(".")[:2])

    @property
    def superfamily(self) -> str:
        return ".".join(self.sccs.split(".")[:3])

    @property
    def family(self) -> str:
        return self.sccs

    @property
    def excluded_from_remote_homology(self) -> bool:
        return self.fold in EXCLUDED_FOLDS


def read_astral_fasta(path: str | Path) -> list[ScopeDomain]:
    """Every domain of an ASTRAL FASTA file (plain or .gz), validated."""
    domains: list[ScopeDomain] = []
    with open_text(path) as (text, _):
        for number, (title, body) in enumerate(SimpleFastaParser(text), start=1):
            where = f"record {number}"
            match = _HEADER.match(title)
            if match is None:
                raise MalformedFileError(
                    path, where, f"header {title[:60]!r} is not 'sid sccs (region) description'", "Fix the header."
                )
            sequence = check_letters(body.upper(), RESIDUE_LETTERS, path, f"{where} ({match['sid']})", "the sequence")
            if not sequence:
                raise MalformedFileError(path, f"{where} ({match['sid']})", "empty sequence", "Remove the record.")
            domains.append(ScopeDomain(match["sid"], match["sccs"], match["region"], match["text"], sequence))
    return domains
