"""Aligned vs unaligned residue pairs: pair extraction by hand, AUCs, and `esm-jax eval family-alignment` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_pipeline.errors import MalformedFileError
from eval.cli import main
from eval.homology import alignment_pairs, family_alignment
from tests.eval_tiny_model import assert_summarised, save_tiny_checkpoint

# as many families as pairing needs for an interval (eval.compare.MIN_PAIRED_ITEMS)
FAMILIES = tuple(f"PF{n:05d}" for n in (13, 18, 41, 72, 76, 85, 111, 168, 169, 179))


def test_residue_numbers_and_aligned_pairs_by_hand():
    np.testing.assert_array_equal(alignment_pairs.residue_numbers("A-CD-"), [0, -1, 1, 2, -1])
    i, j = alignment_pairs.aligned_pairs("A-CD-E", "-GC-HE")
    # columns 2 (C/C) and 5 (E/E) hold residues in both rows: a's residues 1 and 3, b's residues 1 and 3
    np.testing.assert_array_equal(i, [1, 3])
    np.testing.assert_array_equal(j, [1, 3])
    with pytest.raises(ValueError, match="differ in width"):
        alignment_pairs.aligned_pairs("AC", "A")


def test_unaligned_pairs_are_distinct_and_never_aligned():
    rng = np.random.default_rng(0)
    aligned = (np.arange(5), np.arange(5))
    i, j = alignment_pairs.unaligned_pairs(5, 6, aligned, 12, rng)
    pairs = set(zip(i.tolist(), j.tolist(), strict=True))
    assert len(pairs) == 12
    assert not pairs & set(zip(range(5), range(5), strict=True))
    assert all(0 <= a < 5 and 0 <= b < 6 for a, b in pairs)
    i, j = alignment_pairs.unaligned_pairs(2, 2, (np.array([0, 1]), np.array([0, 1])), 10, rng)
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1), (1, 0)]  # all that is left


def test_family_pairs_separate_identical_aligned_representations():
    rows = ["AC-D", "AKGD"]
    # sequence 1 = ACD, sequence 2 = AKGD; aligned: A/A (0,0), C/K (1,1), D/D (2,3)
    first = np.eye(4)[:3]
    second = np.stack([np.eye(4)[0], np.eye(4)[1], np.eye(4)[3] * -1, np.eye(4)[2]])
    pairs = family_alignment.family_pairs(rows, [first, second], np.random.default_rng(0))
    np.testing.assert_allclose(pairs["aligned"]["cosine"], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(pairs["aligned"]["same"], [True, False, True])
    assert pairs["unaligned"]["cosine"].size == 3
    assert np.all(pairs["unaligned"]["cosine"] < 1.0)
    assert family_alignment.subset_auc(pairs, "all") == 1.0
    assert family_alignment.subset_auc(pairs, "different amino acid") == 1.0
    # every unaligned combination of ACD x AKGD pairs different amino acids: no same-amino-acid background
    assert np.isnan(family_alignment.subset_auc(pairs, "same amino acid"))


def test_subset_auc_by_hand():
    pairs = {
        "aligned": {"cosine": np.array([0.9, 0.2, 0.8]), "same": np.array([True, False, False])},
        "unaligned": {"cosine": np.array([0.5, 0.1, 0.3]), "same": np.array([True, True, False])},
    }
    assert family_alignment.subset_auc(pairs, "all") == pytest.approx(7 / 9)  # 0.2 loses to 0.5 and 0.3
    assert family_alignment.subset_auc(pairs, "same amino acid") == 1.0  # 0.9 vs 0.5, 0.1
    assert family_alignment.subset_auc(pairs, "different amino acid") == 0.5  # 0.2, 0.8 vs 0.3
    with pytest.raises(ValueError, match="subset"):
        family_alignment.subset_auc(pairs, "similar")


def test_sampled_rows_are_deterministic_and_distinct(shared_data):
    path = shared_data / "msa_examples" / "fn3.sto"
    alignment = family_alignment.read_alignment(path)
    chosen = family_alignment.sample_rows(alignment, 10, 0, "fn3")
    assert chosen == family_alignment.sample_rows(alignment, 10, 0, "fn3")
    assert len(set(chosen)) == 10 and chosen != family_alignment.sample_rows(alignment, 10, 1, "fn3")
    assert len(family_alignment.sample_rows(alignment, 500, 0, "fn3")) == alignment.depth


def test_ragged_alignment_is_refused_naming_the_row(tmp_path):
    path = tmp_path / "bad.fasta"
    path.write_text(">a\nAC-D\n>b\nACD\n")
    with pytest.raises(MalformedFileError, match=r"row 2 \(b\)"):
        family_alignment.read_alignment(path)


def test_family_alignment_task_end_to_end(shared_data, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path)
    files = [
        shared_data / "pfam40_domains_kortemme" / "alignments" / "PF00013.align.80",
        shared_data / "msa_examples" / "globins4.sto",
    ]
    out = tmp_path / "out"
    argv = ["family-alignment", "--checkpoint", str(checkpoint), "--out", str(out), "--sequences-per-family", "4"]
    assert main([*argv, "--alignments", *map(str, files)]) == 0
    results = json.loads((out / "family-alignment.json").read_text())
    assert_summarised("family-alignment", results, out)
    assert [row["family"] for row in results["per_family"]] == ["PF00013", "globins4"]
    assert [row["sequences"] for row in results["per_family"]] == [4, 4]
    globins = family_alignment.read_alignment(files[1])
    expected = sum(
        alignment_pairs.aligned_pairs(globins.rows[a], globins.rows[b])[0].size
        for a in range(4)
        for b in range(a + 1, 4)
    )
    assert results["per_family"][1]["aligned pairs"] == expected
    for subset in family_alignment.SUBSETS:
        assert 0.0 <= results["mean_auc"][subset] <= 1.0
        low, high = results["mean_auc_ci95"][subset]
        assert low <= results["mean_auc"][subset] <= high
    for name in ("family-alignment-distributions.png", "family-alignment-auc.png", "family-alignment.md"):
        assert (out / name).stat().st_size > 0


def test_summary_pairs_two_runs_family_by_family(shared_data, tmp_path):
    checkpoint = str(save_tiny_checkpoint(tmp_path, seed=1))  # not the weights of its seed-0 random twin
    files = [str(shared_data / "pfam40_domains_kortemme" / "alignments" / f"{name}.align.80") for name in FAMILIES]
    folders = {"trained": [], "untrained": ["--random-weights"]}
    for folder, weights in folders.items():
        argv = ["family-alignment", "--checkpoint", checkpoint, "--out", str(tmp_path / folder), *weights]
        assert main([*argv, "--sequences-per-family", "4", "--alignments", *files]) == 0
    results = {f: json.loads((tmp_path / f / "family-alignment.json").read_text()) for f in folders}
    per_family = {f: {row["family"]: row["AUC all"] for row in r["per_family"]} for f, r in results.items()}
    for folder, values in per_family.items():
        assert results[folder]["per_item"][family_alignment.PER_FAMILY_AUC] == values
    assert per_family["trained"] != per_family["untrained"]
    summary_argv = ["--first", str(tmp_path / "trained"), "--second", str(tmp_path / "untrained")]
    assert main(["summary", "--out", str(tmp_path / "summary"), *summary_argv]) == 0
    (row,) = json.loads((tmp_path / "summary" / "summary.json").read_text())["rows"]
    difference = np.mean([per_family["trained"][f] - per_family["untrained"][f] for f in FAMILIES])
    assert row["metric"] == "AUC, aligned vs unaligned pairs"
    assert row["first − second"].startswith(f"{difference:+.3f} [")
    assert row["verdict"] in ("first higher", "second higher", "no difference shown")
