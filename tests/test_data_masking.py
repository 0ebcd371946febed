"""ESM masking statistics on real batches: 15% of residues selected, then 80% <mask> / 10% random / 10% unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline.input.input_pipeline import MlmBatchIterator, PipelineConfig
from data_pipeline.input.masking import mask_batch
from data_pipeline.input.tokenization import ResidueTable
from esm_jax.alphabet import STANDARD_AMINO_ACIDS, Alphabet

ALPHABET = Alphabet()
STANDARD_IDS = {ALPHABET.get_idx(aa) for aa in STANDARD_AMINO_ACIDS}


@pytest.fixture(scope="module")
def real_batches(uniref_sample_datasets) -> list[dict[str, np.ndarray]]:
    """Masked batches of real UR50/S sequences holding at least 10^5 residues."""
    config = PipelineConfig(token_budget=8192, block_records=1024, seed=11)
    batches, residues = [], 0
    with MlmBatchIterator(uniref_sample_datasets["ur50_s"], config, process_index=0, process_count=1) as iterator:
        while residues < 100_000:
            batches.append(next(iterator))
            residues += int(batches[-1]["residues"].sum())
    return batches


def _stacked(batches, key):
    return np.concatenate([b[key].ravel() for b in batches])


def _is_residue(batch):
    columns = np.arange(batch["tokens"].shape[1])[None, :]
    return (columns >= 1) & (columns <= batch["residues"][:, None])


def test_fifteen_percent_of_residues_are_selected(real_batches):
    selected = sum(b["loss_mask"].sum() for b in real_batches)
    residues = sum(b["residues"].sum() for b in real_batches)
    assert residues >= 100_000
    assert abs(selected / residues - 0.15) < 0.005


def test_selected_positions_split_80_10_10(real_batches):
    picked = _stacked(real_batches, "loss_mask") == 1
    inputs, targets = _stacked(real_batches, "tokens")[picked], _stacked(real_batches, "targets")[picked]
    masked = np.mean(inputs == ALPHABET.mask_idx)
    unchanged = np.mean(inputs == targets)
    replaced = np.mean((inputs != ALPHABET.mask_idx) & (inputs != targets))
    same_by_chance = 0.1 * np.mean(np.isin(targets, list(STANDARD_IDS))) / len(STANDARD_IDS)
    assert abs(masked - 0.8) < 0.01
    assert abs(unchanged - (0.1 + same_by_chance)) < 0.01
    assert abs(replaced - (0.1 - same_by_chance)) < 0.01
    assert set(np.unique(inputs[(inputs != ALPHABET.mask_idx) & (inputs != targets)])) <= STANDARD_IDS


def test_bos_eos_and_padding_are_never_selected(real_batches):
    for batch in real_batches:
        outside = ~_is_residue(batch)
        assert not batch["loss_mask"][outside].any()
        assert (batch["targets"][batch["loss_mask"] == 0] == ALPHABET.padding_idx).all()
        rows = np.flatnonzero(batch["residues"] > 0)
        assert (batch["tokens"][rows, 0] == ALPHABET.cls_idx).all()
        assert (batch["tokens"][rows, batch["residues"][rows] + 1] == ALPHABET.eos_idx).all()


def test_targets_hold_the_original_residue_at_selected_positions(real_batches):
    for batch in real_batches:
        picked = batch["loss_mask"] == 1
        assert set(np.unique(batch["targets"][picked])) <= set(range(4, 31))
        kept = picked & (batch["tokens"] != ALPHABET.mask_idx) & (batch["tokens"] == batch["targets"])
        assert kept.sum() > 0


def test_masking_is_a_pure_function_of_seed_and_stream():
    table = ResidueTable()
    tokens = np.full((4, 40), ALPHABET.padding_idx, dtype=np.int32)
    tokens[:, 0], tokens[:, 1:31], tokens[:, 31] = ALPHABET.cls_idx, ALPHABET.get_idx("A"), ALPHABET.eos_idx
    residues = np.full(4, 30)
    first = mask_batch(tokens, residues, np.arange(4), 5, table)
    again = mask_batch(tokens, residues, np.arange(4), 5, table)
    other = mask_batch(tokens, residues, np.arange(4), 6, table)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["loss_mask"], other["loss_mask"])
    assert (first["loss_mask"].sum(axis=1) >= 4).all() and (first["loss_mask"].sum(axis=1) <= 5).all()
