"""Mutant strings (``A42G``, multi-mutants ``A42G:C50T``) parsed and checked against a wild-type sequence.

A substitution names the wild-type letter, the residue number and the new letter. Residue numbers follow
fair-esm's ``--offset-idx``: ``offset`` is the number of the sequence's first residue, so with the usual
1-based numbering on the full wild type ``offset`` is 1, and a DMS numbered on the full protein but scored
on a fragment starting at residue 24 (fair-esm's BLAT_ECOLX example) uses ``offset=24``. (fair-esm's own
default of 0 reads the numbers as 0-based.) Every substitution must name the letter actually at that
position and change it to one of the 20 standard amino acids (a synonymous ``P311P`` is allowed); a
multi-mutant must not change one position twice. Errors say where (row, part), what was expected and
how to fix the numbering.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from esm_jax.alphabet import STANDARD_AMINO_ACIDS
from esm_jax.errors import EsmJaxError

_SUBSTITUTION = re.compile(r"^([A-Z])(\d+)([A-Z])$")


class MutantError(EsmJaxError, ValueError):
    """A mutant string is malformed or does not agree with the wild-type sequence."""


@dataclasses.dataclass(frozen=True)
class Substitution:
    """``wild_type`` at residue number ``position`` replaced by ``mutant``."""

    wild_type: str
    position: int
    mutant: str


@dataclasses.dataclass(frozen=True)
class Mutant:
    """A validated (multi-)mutant of one wild type whose first residue is numbered ``offset``."""

    text: str
    substitutions: tuple[Substitution, ...]
    offset: int = 1

    @property
    def indices(self) -> tuple[int, ...]:
        """0-based indices into the wild-type sequence, in the order written."""
        return tuple(sub.position - self.offset for sub in self.substitutions)

    def apply(self, wild_type: str) -> str:
        """The mutated sequence."""
        residues = list(wild_type)
        for index, sub in zip(self.indices, self.substitutions, strict=True):
            residues[index] = sub.mutant
        return "".join(residues)


def parse_mutant(text: str, wild_type: str, offset: int = 1, where: str = "mutant") -> tuple[Substitution, ...]:
    """The substitutions of ``text`` (``:``-separated), each checked against ``wild_type``.

    Raises :class:`MutantError` whose message starts with ``where`` and names the offending part.
    """
    if not text or not text.strip():
        raise MutantError(f"{where}: empty mutant string; write substitutions such as A42G or A42G:C50T")
    substitutions: list[Substitution] = []
    last = offset + len(wild_type) - 1
    for part in (piece.strip() for piece in text.strip().split(":")):
        match = _SUBSTITUTION.match(part)
        if match is None:
            raise MutantError(
                f"{where}: {part!r} is not <wild-type letter><position><mutant letter>, e.g. A42G "
                "(multi-mutants join substitutions with ':', e.g. A42G:C50T)"
            )
        wt, position, mt = match[1], int(match[2]), match[3]
        if not offset <= position <= last:
            raise MutantError(
                f"{where}: position {position} of {part!r} is outside the wild type ({offset}..{last}); "
                "check that the sequence is the full wild type and the offset is the number of its first residue"
            )
        actual = wild_type[position - offset]
        if actual != wt:
            raise MutantError(
                f"{where}: {part!r} says {wt} at {position} but the wild type has {actual} there "
                f"(residue numbering starts at {offset} on the sequence's first residue)"
            )
        if mt not in STANDARD_AMINO_ACIDS:
            raise MutantError(f"{where}: {part!r} mutates to {mt!r}, not one of the 20 standard amino acids")
        if any(sub.position == position for sub in substitutions):
            raise MutantError(f"{where}: position {position} is mutated twice in {text!r}")
        substitutions.append(Substitution(wt, position, mt))
    return tuple(substitutions)


def parse_mutants(
    texts: Sequence[str], wild_type: str, *, offset: int = 1, where: Sequence[str] | None = None
) -> list[Mutant]:
    """Validated :class:`Mutant` for every string; ``where[i]`` names row ``i`` in errors (default ``mutant i+1``)."""
    if where is not None and len(where) != len(texts):
        raise ValueError(f"where has {len(where)} entries for {len(texts)} mutants")
    mutants = []
    for number, text in enumerate(texts):
        location = where[number] if where is not None else f"mutant {number + 1}"
        mutants.append(Mutant(text.strip(), parse_mutant(text, wild_type, offset, location), offset))
    return mutants
