"""The model inputs of a supervised mutational-effect predictor: the wild type with the mutated positions masked.

A variant with substitutions at positions ``M`` is seen by the model as the wild type with every position of
``M`` replaced by ``<mask>`` (the input of ESM-1v's masked-marginal score), and its representation is the
final-layer hidden state at each position of ``M``. Variants mutating the same positions share one input
row (a "site"), so a full single-mutant scan needs one row per mutated position rather than one per
variant. Long wild types are cut to the model window by the sliding-window rule of
:mod:`esm_jax.inference.variant_scoring`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from esm_jax.alphabet import STANDARD_AMINO_ACIDS, Alphabet
from esm_jax.inference.embedding import iter_outputs
from esm_jax.inference.variant_scoring import window_bounds
from esm_jax.model import ESM
from eval.variants.assays import Assay

_ALPHABET = Alphabet()
AMINO_ACID_INDEX = {letter: index for index, letter in enumerate(STANDARD_AMINO_ACIDS)}


@dataclasses.dataclass(frozen=True)
class SiteTable:
    """Distinct masked input rows of an assay and, per variant, its row and its substitutions.

    ``rows[s]`` holds residue token ids (no BOS/EOS) with ``<mask>`` at ``positions[s]`` (sorted). Variant
    ``v`` uses row ``site_of[v]``; its ``k``-th substitution (in position order) sits at ``positions[site][k]``
    and changes amino acid ``wild_type[v, k]`` to ``mutant[v, k]`` (indices into the 20 standard letters);
    ``valid[v, k]`` is False past the variant's last substitution.
    """

    rows: tuple[np.ndarray, ...]
    positions: tuple[tuple[int, ...], ...]
    site_of: np.ndarray
    wild_type: np.ndarray
    mutant: np.ndarray
    valid: np.ndarray

    @property
    def max_substitutions(self) -> int:
        return self.valid.shape[1]


def build_sites(assay: Assay, window: int) -> SiteTable:
    """The site table of every variant of ``assay`` with rows of at most ``window`` residues."""
    encoded = np.asarray(_ALPHABET.encode(assay.wild_type, label=assay.protein), dtype=np.int32)
    width = max(len(mutant.substitutions) for mutant in assay.mutants)
    keys: dict[tuple[int, tuple[int, ...]], int] = {}
    site_of = np.zeros(len(assay), dtype=np.int32)
    wild_type = np.zeros((len(assay), width), dtype=np.int32)
    mutant_ids = np.zeros((len(assay), width), dtype=np.int32)
    valid = np.zeros((len(assay), width), dtype=bool)
    for number, mutant in enumerate(assay.mutants):
        ordered = sorted(zip(mutant.indices, mutant.substitutions, strict=True))
        start, _ = window_bounds([index for index, _ in ordered], len(encoded), window)
        key = (start, tuple(index - start for index, _ in ordered))
        site_of[number] = keys.setdefault(key, len(keys))
        for k, (_, sub) in enumerate(ordered):
            if sub.wild_type not in AMINO_ACID_INDEX:
                raise ValueError(
                    f"{assay.protein}: wild-type residue {sub.wild_type!r} at {sub.position} is not one of the 20 "
                    "standard amino acids the regression head scores"
                )
            wild_type[number, k] = AMINO_ACID_INDEX[sub.wild_type]
            mutant_ids[number, k] = AMINO_ACID_INDEX[sub.mutant]
            valid[number, k] = True
    rows, positions = [], []
    for start, local in keys:
        row = encoded[start : start + min(window, len(encoded))].copy()
        row[list(local)] = _ALPHABET.mask_idx
        rows.append(row)
        positions.append(local)
    return SiteTable(tuple(rows), tuple(positions), site_of, wild_type, mutant_ids, valid)


def site_hidden(
    model: ESM, table: SiteTable, sites: np.ndarray | None = None, *, toks_per_batch: int = 8192
) -> np.ndarray:
    """Final-layer hidden states (len(sites), K, D) at each site's masked positions (zeros past the last).

    Runs ``model`` over the site rows with the shared bucketed engine; ``sites`` defaults to all of them.
    """
    sites = np.arange(len(table.rows)) if sites is None else np.asarray(sites)
    layer = model.num_layers
    hidden = np.zeros((len(sites), table.max_substitutions, model.representation_width(layer)), dtype=np.float32)
    rows = [table.rows[site] for site in sites]
    for outputs in iter_outputs(model, rows, [layer], toks_per_batch=toks_per_batch):
        positions = table.positions[sites[outputs.index]]
        hidden[outputs.index, : len(positions)] = outputs.residues[layer][list(positions)]
    return hidden
