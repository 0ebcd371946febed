"""BERT-style masking exactly as ESM-1b trained (Rives et al., PNAS 2021; Devlin et al., NAACL 2019).

Per sequence, ``floor(0.15 * residues + u)`` residue positions are selected (``u`` uniform in [0, 1): the
probabilistic rounding of fairseq's ``MaskTokensDataset``, with which ESM-1b was trained), without replacement.
Each selected position independently becomes ``<mask>`` (80%), a random standard amino acid (10%) or stays
unchanged (10%). BOS, EOS and padding are never selected. The loss targets are the original ids at selected
positions and ``padding_idx`` elsewhere (the ignore value fairseq's criterion uses), with an explicit float mask.
"""

from __future__ import annotations

import numpy as np

from data_pipeline import counter_random
from data_pipeline.input.tokenization import ResidueTable
from esm_jax.masking_rule import MaskingRule

# Counter ranges of the per-sequence random stream: one block of counters per purpose, token position added.
_SELECT = 1 << 20
_DECIDE = 2 << 20
_REPLACE = 3 << 20
_ROUND = 4 << 20


def mask_batch(
    tokens: np.ndarray,
    residues: np.ndarray,
    streams: np.ndarray,
    seed: int,
    table: ResidueTable,
    rule: MaskingRule = MaskingRule(),
) -> dict[str, np.ndarray]:
    """Mask a ``(rows, length)`` batch laid out BOS, residues, EOS, padding; ``residues`` counts residues per row.

    Returns ``tokens`` (model input), ``targets`` and ``loss_mask``; ``streams`` gives each row its random stream.
    """
    rows, length = tokens.shape
    columns = np.arange(length, dtype=np.uint64)[None, :]
    row_streams = np.asarray(streams, dtype=np.uint64)[:, None]
    is_residue = (columns >= 1) & (columns <= residues[:, None].astype(np.uint64))

    rounding = counter_random.uniform(seed, row_streams[:, 0], _ROUND)
    n_select = np.floor(rule.select_prob * residues + rounding).astype(np.int64)
    keys = np.where(is_residue, counter_random.uniform(seed, row_streams, _SELECT + columns), np.inf)
    order = np.argsort(keys, axis=1, kind="stable")
    selected = np.zeros((rows, length), dtype=bool)
    np.put_along_axis(selected, order, np.arange(length)[None, :] < n_select[:, None], axis=1)

    decide = counter_random.uniform(seed, row_streams, _DECIDE + columns)
    to_mask = selected & (decide < rule.mask_prob)
    to_random = selected & (decide >= rule.mask_prob) & (decide < rule.mask_prob + rule.random_prob)
    replacement = table.standard_ids[
        counter_random.below(seed, row_streams, _REPLACE + columns, table.standard_ids.size)
    ]

    inputs = np.where(to_mask, table.mask_idx, np.where(to_random, replacement, tokens)).astype(np.int32)
    targets = np.where(selected, tokens, table.padding_idx).astype(np.int32)
    return {"tokens": inputs, "targets": targets, "loss_mask": selected.astype(np.float32)}
