"""The BERT-style masking rule ESM models were trained with (Rives et al., PNAS 2021; Devlin et al., NAACL 2019).

``select_prob`` of the residues are selected for the loss; each selected one becomes ``<mask>`` with
``mask_prob``, a random amino acid with ``random_prob``, and stays unchanged otherwise. The data
pipeline masks training batches with it (:mod:`data_pipeline.input.masking`); ESM-2's token dropout scales
embeddings by its :attr:`~MaskingRule.mask_ratio` (:mod:`esm_jax.model.esm`).
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class MaskingRule:
    select_prob: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1

    def __post_init__(self) -> None:
        if not (0 < self.select_prob < 1 and self.mask_prob >= 0 and self.random_prob >= 0):
            raise ValueError(f"masking probabilities out of range: {self}")
        if self.mask_prob + self.random_prob > 1:
            raise ValueError(f"mask_prob + random_prob must not exceed 1: {self}")

    @property
    def mask_ratio(self) -> float:
        """The expected fraction of residues replaced by ``<mask>``."""
        return self.select_prob * self.mask_prob

    def most_selected(self, residues: int) -> int:
        """The most positions a sequence of ``residues`` residues can have selected.

        The pipeline selects ``floor(select_prob * residues + u)`` with ``u`` in [0, 1), never more than this.
        """
        return math.ceil(self.select_prob * residues)
