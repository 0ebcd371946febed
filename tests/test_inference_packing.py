"""Packed inference batches hold every sequence once, intact, and give it what a row of its own gives."""

from __future__ import annotations

import numpy as np
import pytest

from esm_jax import Alphabet, ModelConfig, build_model
from esm_jax.fasta import bundled_proteome, read_fasta
from esm_jax.inference.batching import (
    Batch,
    PackedBatch,
    default_row_width,
    pack_rows,
    plan_batches,
    plan_packed_batches,
    real_token_share,
)
from esm_jax.inference.embedding import embed_sequences, encode_records, iter_outputs, packs_by_default
from esm_jax.model import attention_kernels
from esm_jax.model.packing import check_packed_rows

ALPHABET = Alphabet()
LENGTHS = [5, 70, 1, 300, 62, 1000, 63, 64, 200, 1, 1022, 126, 30, 900]
ROW_WIDTH = 128


def _encoded(lengths: list[int], seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    residues = [ALPHABET.get_idx(letter) for letter in "ACDEFGHIKLMNPQRSTVWY"]
    return [[int(token) for token in rng.choice(residues, size=n)] for n in lengths]


def _check_packed(batch: PackedBatch, encoded: list[list[int]], toks_per_batch: int) -> None:
    """Shape within budget, each row ``<cls> … <eos>`` runs with ids 1..k then padding, each sequence intact."""
    rows, width = batch.tokens.shape
    most = max(1, toks_per_batch // width)
    assert rows == most or rows & (rows - 1) == 0
    assert rows <= most
    special = {"cls_idx": ALPHABET.cls_idx, "eos_idx": ALPHABET.eos_idx, "padding_idx": ALPHABET.padding_idx}
    check_packed_rows(batch.tokens, batch.segment_ids, **special, max_tokens=width)
    for ids in batch.segment_ids:
        used = ids[ids > 0]
        assert np.all(ids[used.size :] == 0), "padding only after the last sequence"
        assert np.array_equal(np.unique(used), np.arange(1, used.max() + 1))
        assert np.all(np.diff(used) >= 0), "segment ids contiguous and increasing"
    for index, row, start in batch.placements:
        n = len(encoded[index])
        assert batch.tokens[row, start] == ALPHABET.cls_idx and batch.tokens[row, start + n + 1] == ALPHABET.eos_idx
        assert batch.tokens[row, start + 1 : start + n + 1].tolist() == encoded[index]
        assert len(set(batch.segment_ids[row, start : start + n + 2].tolist())) == 1


def test_packed_plan_covers_every_sequence_once_within_its_rows():
    encoded = _encoded(LENGTHS * 3)
    batches = list(plan_packed_batches(encoded, toks_per_batch=512, row_width=ROW_WIDTH))
    assert sorted(i for batch in batches for i in batch.indices) == list(range(len(encoded)))
    packed = [batch for batch in batches if isinstance(batch, PackedBatch)]
    bucketed = [batch for batch in batches if isinstance(batch, Batch)]
    kinds = [isinstance(batch, PackedBatch) for batch in batches]
    assert kinds == sorted(kinds, reverse=True), "packed batches come first"
    assert {i for batch in bucketed for i in batch.indices} == {i for i, ids in enumerate(encoded) if len(ids) > 126}
    for batch in packed:
        assert batch.tokens.shape[1] == ROW_WIDTH
        _check_packed(batch, encoded, 512)
    again = list(plan_packed_batches(encoded, toks_per_batch=512, row_width=ROW_WIDTH))
    assert [batch.indices for batch in again] == [batch.indices for batch in batches]
    assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(again, batches, strict=True))


def test_best_fit_decreasing_fills_rows_and_never_overflows():
    sizes = [60, 50, 40, 30, 20, 10, 64, 3, 3, 1]
    rows = pack_rows(sizes, 64)
    assert sorted(i for row in rows for i in row) == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in row) <= 64 for row in rows)
    assert rows == [[6], [0, 7, 9], [1, 5, 8], [2, 4], [3]]
    assert pack_rows([], 64) == []


def test_default_row_width_is_the_longest_sequence_ladder_width_at_most_1024():
    assert default_row_width(_encoded([5, 70, 40])) == 80
    assert default_row_width(_encoded([5, 1022])) == 1024
    assert default_row_width(_encoded([5, 3000])) == 1024
    assert default_row_width(_encoded([5, 300]), max_width=200) == 200
    with pytest.raises(ValueError, match="row_width 2 cannot hold a sequence"):
        list(plan_packed_batches(_encoded([1]), 64, row_width=2))


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig("esm2", 2, 32, 4, 64), seed=3)


def test_packed_outputs_equal_rows_of_their_own_and_contacts_are_never_packed(model):
    encoded = _encoded([1, 9, 40, 62, 90, 17], seed=1)
    runs = {
        pack: {
            out.index: out for out in iter_outputs(model, encoded, [0, -1], toks_per_batch=256, pack=pack, row_width=64)
        }
        for pack in (False, True)
    }
    assert sorted(runs[True]) == list(range(len(encoded)))
    for index, ids in enumerate(encoded):
        for layer in (0, 2):
            alone, packed = runs[False][index], runs[True][index]
            assert packed.residues[layer].shape == (len(ids), 32)
            np.testing.assert_allclose(packed.residues[layer], alone.residues[layer], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(packed.bos[layer], alone.bos[layer], rtol=1e-5, atol=1e-5)
    with_contacts = iter_outputs(model, encoded[:2], return_contacts=True, toks_per_batch=128, pack=True, row_width=64)
    assert sorted((out.index, out.contacts.shape) for out in with_contacts) == [(0, (1, 1)), (1, (9, 9))]


def test_packing_is_the_default_on_accelerators_but_not_with_per_head_cpu_attention(model):
    assert not packs_by_default(model)
    assert packs_by_default(build_model(ModelConfig("esm2", 2, 32, 4, 64, attention_impl="dense")))
    with attention_kernels.compiling_for("tpu"):
        assert packs_by_default(model)
    with attention_kernels.compiling_for("gpu"):
        assert packs_by_default(model)


def test_embed_sequences_packed_and_unpacked_agree_in_input_order(model):
    sequences = ["MKV", "G", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV", "ACDEFGHIKL"]
    packed = embed_sequences(model, sequences, per_residue=True, toks_per_batch=256, pack=True)
    unpacked = embed_sequences(model, sequences, per_residue=True, toks_per_batch=256)
    for sequence, a, b in zip(sequences, packed, unpacked, strict=True):
        assert a.shape == (len(sequence), 32)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_packing_raises_the_real_token_share_on_the_bundled_proteome():
    """The first 512 proteins (stops stripped, 1022 residues kept), 4096 tokens per batch, as `esm-jax extract`."""
    encoded = encode_records(read_fasta(bundled_proteome(), strip_stop=True, limit=512))
    width = default_row_width(encoded)
    bucketed = list(plan_batches(encoded, 4096, max_width=1024))
    packed = list(plan_packed_batches(encoded, 4096, width, max_width=1024))
    shares = real_token_share(bucketed), real_token_share(packed)
    print(
        f"\nreal-token share, first 512 proteome proteins: bucketed {shares[0]:.3f} "
        f"({len(bucketed)} batches, {len({b.tokens.shape for b in bucketed})} shapes), packed into {width}-token rows "
        f"{shares[1]:.3f} ({len(packed)} batches, {len({b.tokens.shape for b in packed})} shapes)"
    )
    assert sorted(i for batch in packed for i in batch.indices) == list(range(512))
    assert shares[1] > shares[0]
