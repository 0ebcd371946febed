"""The ESM-1b / ESM-2 token alphabet and the batch converter that turns sequences into tokens.

Token order, special tokens and tokenisation rules are identical to fair-esm's
``esm.data.Alphabet.from_architecture("ESM-1b")`` so token ids are interchangeable with the
reference implementation and its checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from esm_jax.errors import InvalidSequenceError

# Residue letters in the order fair-esm assigns them ids 4..30 (esm/constants.py).
RESIDUE_TOKENS: tuple[str, ...] = tuple("LAGVSERTIDPKQNFYMHWCXBUZO.-")
# The amino-acid letters among them (ambiguity codes included; no gaps): what a protein sequence may hold.
RESIDUE_LETTERS = "".join(token for token in RESIDUE_TOKENS if token.isalpha())
STANDARD_AMINO_ACIDS: str = "ACDEFGHIKLMNPQRSTVWY"
_PREPEND_TOKENS = ("<cls>", "<pad>", "<eos>", "<unk>")
_APPEND_TOKENS = ("<mask>",)
_SKIP = -2
_INVALID = -1


class Alphabet:
    """Maps tokens to ids; ESM-1b layout: ``<cls>`` BOS, ``<eos>`` EOS, right padding with ``<pad>``."""

    def __init__(self) -> None:
        toks = list(_PREPEND_TOKENS) + list(RESIDUE_TOKENS)
        toks += [f"<null_{i + 1}>" for i in range((8 - len(toks) % 8) % 8)]
        toks += list(_APPEND_TOKENS)
        self.all_toks: list[str] = toks
        self.standard_toks: list[str] = list(RESIDUE_TOKENS)
        self.tok_to_idx: dict[str, int] = {tok: i for i, tok in enumerate(toks)}
        self.prepend_bos = True
        self.append_eos = True
        self.use_msa = False
        self.cls_idx = self.tok_to_idx["<cls>"]
        self.padding_idx = self.tok_to_idx["<pad>"]
        self.eos_idx = self.tok_to_idx["<eos>"]
        self.unk_idx = self.tok_to_idx["<unk>"]
        self.mask_idx = self.tok_to_idx["<mask>"]
        self.all_special_tokens = ["<eos>", "<unk>", "<pad>", "<cls>", "<mask>"]
        self._bracket_tokens = {tok: i for tok, i in self.tok_to_idx.items() if len(tok) > 1}
        self._ascii_table = self._build_ascii_table(upper_case=False)
        self._ascii_table_upper = self._build_ascii_table(upper_case=True)

    @classmethod
    def from_architecture(cls, name: str) -> Alphabet:
        """The alphabet of a fair-esm architecture name; ESM-1b, ESM-1v and ESM-2 share one."""
        if name in ("ESM-1b", "roberta_large", "ESM-1v", "ESM-2", "esm2"):
            return cls()
        raise ValueError(
            f"unknown alphabet architecture {name!r}: esm-jax supports the ESM-1b/ESM-2 alphabet "
            "('ESM-1b', 'roberta_large', 'ESM-2')"
        )

    def __len__(self) -> int:
        return len(self.all_toks)

    def get_idx(self, tok: str) -> int:
        return self.tok_to_idx.get(tok, self.unk_idx)

    def get_tok(self, idx: int) -> str:
        return self.all_toks[idx]

    def to_dict(self) -> dict[str, int]:
        return dict(self.tok_to_idx)

    def _build_ascii_table(self, upper_case: bool) -> np.ndarray:
        table = np.full(256, _INVALID, dtype=np.int32)
        for tok in RESIDUE_TOKENS:
            table[ord(tok)] = self.tok_to_idx[tok]
            if upper_case and tok.isalpha():
                table[ord(tok.lower())] = self.tok_to_idx[tok]
        for code in range(128):
            if chr(code).isspace():
                table[code] = _SKIP
        return table

    def encode(self, text: str, *, label: str = "<unnamed>", upper_case: bool = False) -> list[int]:
        """Token ids of ``text`` without BOS/EOS; special tokens like ``<mask>`` may appear inline.

        Whitespace is ignored, as in fair-esm. A character outside the alphabet raises
        :class:`InvalidSequenceError` naming ``label`` and its 1-based position; lower-case
        residues are accepted only with ``upper_case=True``.
        """
        if text.isascii() and "<" not in text:
            return self._encode_ascii(text, label, upper_case)
        return self._encode_scanning(text, label, upper_case)

    def _encode_ascii(self, text: str, label: str, upper_case: bool) -> list[int]:
        table = self._ascii_table_upper if upper_case else self._ascii_table
        ids = table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
        bad = np.flatnonzero(ids == _INVALID)
        if bad.size:
            position = int(bad[0])
            self._raise_invalid(label, text[position], position + 1, upper_case)
        return ids[ids != _SKIP].tolist()

    def _encode_scanning(self, text: str, label: str, upper_case: bool) -> list[int]:
        ids: list[int] = []
        i = 0
        while i < len(text):
            char = text[i]
            if char.isspace():
                i += 1
                continue
            if char == "<":
                end = text.find(">", i)
                special = self._bracket_tokens.get(text[i : end + 1]) if end != -1 else None
                if special is None:
                    self._raise_invalid(label, char, i + 1, upper_case)
                ids.append(special)
                i = end + 1
                continue
            idx = self._residue_id(char, upper_case)
            if idx < 0:
                self._raise_invalid(label, char, i + 1, upper_case)
            ids.append(idx)
            i += 1
        return ids

    def _residue_id(self, char: str, upper_case: bool) -> int:
        if char in RESIDUE_TOKENS:
            return self.tok_to_idx[char]
        if upper_case and char.isalpha() and char.upper() in RESIDUE_TOKENS:
            return self.tok_to_idx[char.upper()]
        return _INVALID

    def _raise_invalid(self, label: str, char: str, position: int, upper_case: bool) -> None:
        if char.isalpha() and char.islower() and char.upper() in RESIDUE_TOKENS and not upper_case:
            hint = "Lower-case residues are refused; pass upper_case=True (CLI: --upper-case) to accept them."
        elif char == "*":
            hint = "'*' marks a stop codon; remove it (CLI: --strip-stop drops a terminal '*')."
        elif char == "<":
            hint = f"Special tokens must be one of {sorted(self._bracket_tokens)}."
        else:
            hint = "Allowed residues are " + "".join(RESIDUE_TOKENS) + "; replace unknown residues with 'X'."
        raise InvalidSequenceError(label, char, position, hint)

    def tokenize(self, text: str, *, label: str = "<unnamed>", upper_case: bool = False) -> list[str]:
        """Token strings of ``text`` (fair-esm's ``Alphabet.tokenize``)."""
        return [self.all_toks[i] for i in self.encode(text, label=label, upper_case=upper_case)]

    def get_batch_converter(
        self, truncation_seq_length: int | None = None, *, upper_case: bool = False
    ) -> BatchConverter:
        return BatchConverter(self, truncation_seq_length, upper_case=upper_case)


class BatchConverter:
    """Turns ``[(label, sequence), ...]`` into ``(labels, strs, tokens)`` as fair-esm does.

    ``tokens`` is an ``int32`` array ``(batch, max_len + 2)``: BOS, residues truncated to
    ``truncation_seq_length``, EOS, then right padding.
    """

    def __init__(self, alphabet: Alphabet, truncation_seq_length: int | None = None, *, upper_case: bool = False):
        self.alphabet = alphabet
        self.truncation_seq_length = truncation_seq_length
        self.upper_case = upper_case

    def __call__(self, raw_batch: Sequence[tuple[str, str]]) -> tuple[list[str], list[str], np.ndarray]:
        if len(raw_batch) == 0:
            raise ValueError("the batch is empty: give at least one (label, sequence) pair")
        labels = [label for label, _ in raw_batch]
        strs = [seq for _, seq in raw_batch]
        encoded = [self.alphabet.encode(seq, label=str(label), upper_case=self.upper_case) for label, seq in raw_batch]
        if self.truncation_seq_length:
            encoded = [ids[: self.truncation_seq_length] for ids in encoded]
        max_len = max(len(ids) for ids in encoded)
        tokens = np.full((len(encoded), max_len + 2), self.alphabet.padding_idx, dtype=np.int32)
        for row, ids in enumerate(encoded):
            tokens[row, 0] = self.alphabet.cls_idx
            tokens[row, 1 : len(ids) + 1] = ids
            tokens[row, len(ids) + 1] = self.alphabet.eos_idx
        return labels, strs, tokens
