"""Stored sequences (ASCII bytes) to token ids of the project alphabet, vectorised with a 256-entry table."""

from __future__ import annotations

import numpy as np

from esm_jax.alphabet import RESIDUE_TOKENS, STANDARD_AMINO_ACIDS, Alphabet

_NOT_A_RESIDUE = -1


class ResidueTable:
    """Byte-to-id lookup built from :class:`esm_jax.alphabet.Alphabet`, plus the special ids the batches need."""

    def __init__(self, alphabet: Alphabet | None = None) -> None:
        alphabet = alphabet or Alphabet()
        self.table = np.full(256, _NOT_A_RESIDUE, dtype=np.int32)
        for tok in RESIDUE_TOKENS:
            if tok.isalpha():
                self.table[ord(tok)] = alphabet.get_idx(tok)
        self.cls_idx = alphabet.cls_idx
        self.eos_idx = alphabet.eos_idx
        self.padding_idx = alphabet.padding_idx
        self.mask_idx = alphabet.mask_idx
        self.standard_ids = np.array([alphabet.get_idx(aa) for aa in STANDARD_AMINO_ACIDS], dtype=np.int32)

    def encode(self, sequence: bytes, label: str = "<unnamed>") -> np.ndarray:
        """Token ids (int32) of ``sequence``; raises ValueError naming ``label`` for a byte that is no residue."""
        ids = self.table[np.frombuffer(sequence, dtype=np.uint8)]
        if ids.size and ids.min() == _NOT_A_RESIDUE:
            position = int(np.flatnonzero(ids == _NOT_A_RESIDUE)[0])
            raise ValueError(
                f"{label}: byte {sequence[position : position + 1]!r} at residue {position + 1} is not an amino-acid "
                "letter of the ESM alphabet"
            )
        return ids
