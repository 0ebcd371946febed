"""Counter-based random numbers: equal to a plain-integer reference, so every machine draws the same numbers."""

from __future__ import annotations

import hashlib

import numpy as np

from data_pipeline import counter_random
from data_pipeline.input.masking import mask_batch
from data_pipeline.input.tokenization import ResidueTable

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _reference_bits(seed: int, stream: int, counter: int) -> int:
    key = _mix((_mix(seed ^ GOLDEN) + stream * GOLDEN) & MASK64)
    return _mix((key + (counter + 1) * GOLDEN) & MASK64)


def test_numpy_draws_equal_the_plain_integer_splitmix_reference():
    streams = np.array([0, 1, 2**40 + 3, 2**64 - 1], dtype=np.uint64)
    counters = np.array([0, 7, 2**21 + 5, 2**63], dtype=np.uint64)
    for seed in (0, 1, 2**63 + 12345):
        drawn = counter_random.random_bits(seed, streams[:, None], counters[None, :])
        expected = [[_reference_bits(seed, int(s), int(c)) for c in counters] for s in streams]
        assert drawn.tolist() == expected


def test_uniform_and_bounded_draws_cover_their_range_evenly():
    u = counter_random.uniform(3, 9, np.arange(200_000))
    assert u.min() >= 0.0 and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.003
    counts = np.bincount(counter_random.below(3, 9, np.arange(200_000), 20), minlength=20)
    assert counts.size == 20 and abs(counts / 10_000 - 1).max() < 0.06


def test_stable_hash_is_sha256_prefix():
    text = "UniRef50_A0A009GHJ8"
    assert counter_random.stable_hash64(text) == int(hashlib.sha256(text.encode()).hexdigest()[:16], 16)


def test_masks_of_a_fixed_batch_never_change_between_versions_or_machines():
    table = ResidueTable()
    sequence = b"MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ"
    tokens = np.full((3, 64), table.padding_idx, dtype=np.int32)
    residues = np.array([62, 30, 0])
    for row, n in enumerate(residues):
        if n:
            tokens[row, 0], tokens[row, n + 1] = table.cls_idx, table.eos_idx
            tokens[row, 1 : n + 1] = table.encode(sequence[:n])
    out = mask_batch(tokens, residues, np.array([5, 6, 7]), 42, table)
    digest = hashlib.sha256(b"".join(out[k].tobytes() for k in sorted(out))).hexdigest()
    assert digest == "fd77a8e2ce6b9737ca6a02046f01cdd979eecf99d7fa40625461baea2535dbd4"
