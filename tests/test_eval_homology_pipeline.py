"""`esm-jax eval remote-homology` end to end on real SCOPe domains, and the phmmer baseline on real sequences."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_pipeline.readers.scope import EXCLUDED_FOLDS
from eval.cli import main
from eval.common import published
from eval.homology import metrics as homology_metrics
from eval.homology import remote_homology, scop_pairs
from eval.homology.hmm_baseline import phmmer_scores
from tests.eval_tiny_model import assert_summarised, save_tiny_checkpoint


@pytest.fixture(scope="module")
def astral(shared_data):
    return shared_data / remote_homology.ASTRAL_FILE


def test_subsample_keeps_whole_folds_and_drops_excluded_ones(astral):
    from data_pipeline.readers.scope import read_astral_fasta

    read = read_astral_fasta(astral)
    domains = remote_homology.load_domains(astral, 150, seed=0)
    everything = remote_homology.load_domains(astral, 0, seed=0)
    folds = {d.fold for d in domains}
    assert len(domains) >= 150
    assert sum(d.fold in folds for d in everything) == len(domains)
    assert not folds & EXCLUDED_FOLDS
    assert not {d.fold for d in everything} & EXCLUDED_FOLDS
    assert len(read) == 14323 and len(everything) == sum(d.fold not in EXCLUDED_FOLDS for d in read)
    assert remote_homology.load_domains(astral, 150, seed=0) == domains


def test_phmmer_finds_each_query_itself_first(astral):
    domains = remote_homology.load_domains(astral, 60, seed=1)
    names, sequences = [d.sid for d in domains], [d.sequence for d in domains]
    scores, _ = phmmer_scores([0, 5, 9], names, sequences, cpus=1)
    assert scores.shape == (3, len(domains))
    np.testing.assert_array_equal(np.argmax(scores, axis=1), [0, 5, 9])
    assert np.isneginf(scores).any()  # unreported pairs tie at the bottom


def test_phmmer_refuses_duplicate_names():
    with pytest.raises(ValueError, match="unique"):
        phmmer_scores([0], ["d1", "d1"], ["MKV", "MKA"])


def test_remote_homology_task_end_to_end(astral, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path)
    out = tmp_path / "results"
    argv = ["remote-homology", "--checkpoint", str(checkpoint), "--out", str(out), "--data", str(astral.parents[1])]
    assert main([*argv, "--limit", "40", "--hmm-queries", "6", "--cpus", "1"]) == 0
    results = json.loads((out / "remote-homology.json").read_text())
    assert_summarised("remote-homology", results, out)
    domains = remote_homology.load_domains(astral, 40, seed=0)
    labels = scop_pairs.parse_sccs([d.sccs for d in domains])
    assert results["domains"] == len(domains)
    for level in scop_pairs.LEVELS:
        queries = homology_metrics.query_indices(level, labels).size
        assert results["queries"][level] == queries
        for method in ("cosine (all queries)", "euclidean (all queries)"):
            summary = results["summary"][method][level]
            assert summary["queries"] == queries
            assert 0.0 <= summary["hit10"] <= 1.0 and 0.0 <= summary["auc"] <= 1.0
            for key in ("hit10", "auc", "auc_pooled"):
                low, high = summary[f"{key}_ci95"]
                assert low <= summary[key] <= high
    assert results["hmm_searched"] == 6
    assert "phmmer (phmmer queries)" in results["summary"]
    chance = results["summary"]["chance: cosine, SCOP labels shuffled"]
    assert all(0.0 <= chance[level]["auc"] <= 1.0 for level in scop_pairs.LEVELS)
    assert "labels shuffled" in (out / "remote-homology.md").read_text()
    assert (out / "remote-homology.png").stat().st_size > 0
    report = (out / "remote-homology.md").read_text()
    assert "Hit-10 fold" in report and "AUC fold" in report and "AUC pooled fold" in report
    assert "compared with Table 2" in report
    assert set(results["differences_from_phmmer"]) == {"cosine - phmmer", "euclidean - phmmer"}
    # each query's values by domain id, for `compare`
    assert results["task"] == "remote-homology"
    hits = results["per_item"]["cosine fold Hit-10"]
    assert 0 < len(hits) <= results["queries"]["fold"] and set(hits) <= {d.sid for d in domains}
    assert set(hits.values()) <= {0.0, 1.0} and "euclidean superfamily AUC" in results["per_item"]
    assert results["published"] == [published.REMOTE_HOMOLOGY.as_json(), published.RELATED_MODELS.as_json()]
