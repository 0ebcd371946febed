"""Table 3's structural hold-out: SCOPe labels of PDB chains, group-disjoint folds per level, too-small levels, and
one end-to-end run on a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.readers.scope import ScopeDomain
from eval.common.task import Backbone
from eval.structure.contacts.sets import ContactProtein
from eval.structure.holdout import (
    ALIGNMENT_METRICS,
    TASK,
    AlignmentBaselines,
    Options,
    alignment_scores,
    holdout_folds,
    level_result,
)
from eval.structure.holdout_sets import LabelledStructure
from eval.structure.scop_labels import (
    ASTRAL_FILE,
    LEVEL_FIELDS,
    group_at,
    index_by_chain,
    label_chain,
    read_chain_index,
)
from tests.eval_tiny_model import assert_summarised


def _domain(sid: str, sccs: str, region: str) -> ScopeDomain:
    return ScopeDomain(sid, sccs, region, "", "ACDE")


def test_a_chain_takes_the_sccs_its_domains_share_and_ambiguous_or_absent_chains_get_none():
    index = index_by_chain(
        [
            _domain("d1ahsa_", "b.19.1.1", "A:"),
            _domain("d2gu3a1", "d.17.1.6", "A:99-161"),
            _domain("d2gu3a2", "d.17.1.6", "A:34-98"),
            _domain("d1aqta1", "a.2.10.1", "A:87-136"),
            _domain("d1aqta2", "b.93.1.1", "A:2-86"),
        ]
    )
    assert label_chain(index, "1AHS", "A") == ("b.19.1.1", "")
    assert label_chain(index, "2gu3", "A") == ("d.17.1.6", "")
    assert label_chain(index, "1aqt", "A")[0] is None and "a.2.10.1" in label_chain(index, "1aqt", "A")[1]
    assert label_chain(index, "1ahs", "B") == (None, "chain not in the ASTRAL set")
    assert [group_at("a.1.1.2", level) for level in LEVEL_FIELDS] == ["a.1.1.2", "a.1.1", "a.1"]


def test_known_pdb_chains_get_their_sccs_from_the_real_astral_file(shared_data):
    index = read_chain_index(shared_data / ASTRAL_FILE)
    assert label_chain(index, "1ahs", "A") == ("b.19.1.1", "")  # an MDAnalysis chain
    assert label_chain(index, "2O37", "A") == ("a.2.3.0", "")  # a Kortemme domain
    assert label_chain(index, "1lpb", "A")[0] is None


@pytest.mark.parametrize("level", list(LEVEL_FIELDS))
def test_no_group_is_on_both_sides_of_any_fold(level):
    sccs = [f"{c}.{f}.{s}.{m}" for c in "ab" for f in (1, 2, 3) for s in (1, 2) for m in (1, 2)] * 2
    groups = [group_at(label, level) for label in sccs]
    folds = holdout_folds(groups, 5, seed=3)
    assert len(folds) == 5
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(len(sccs)))
    for train, test in folds:
        assert len(test) and not {groups[i] for i in train} & {groups[i] for i in test}


def _structure(name: str, sccs: str) -> LabelledStructure:
    protein = ContactProtein(name, "ACDEFGHIKL", np.zeros((10, 10), bool), np.ones(10, bool))
    return LabelledStructure(protein, sccs, "HHHCCCEEEC")


def test_a_level_with_fewer_groups_than_folds_is_reported_without_numbers():
    structures = [_structure(f"s{i}", sccs) for i, sccs in enumerate(["a.1.1.1", "a.1.1.2", "a.2.1.1", "b.1.1.1"])]
    features = [np.zeros((10, 4), np.float32)] * len(structures)
    entry = level_result("fold", structures, features, Options(folds=5))
    assert entry["groups"] == 3 and "only 3 distinct fold group(s) for 5 folds" in entry["too_few_groups"]
    assert "partitions" not in entry and "Q3" not in entry
    assert holdout_folds([group_at(s.sccs, "family") for s in structures], 5, 0) is None


def test_the_task_runs_end_to_end_on_a_tiny_random_model(shared_data, tmp_path: Path):
    backbone = Backbone("esm2_t6_8M_UR50D", random_weights=True)
    options = Options(sets="pdb-chains", levels="fold", max_structures=6, steps=2, iterations=2, rank=4)
    result = TASK.run(backbone, shared_data, tmp_path, options)
    assert set(result.metrics) == {"fold"}
    saved = json.loads((tmp_path / "structural-holdout.json").read_text())
    assert_summarised("structural-holdout", saved, tmp_path)
    assert len(saved["labelled"]) == 6 and saved["labelled"]["1ahsA"] == "b.19.1.1"
    assert saved["unlabelled"]["1lpbA"] == "chain not in the ASTRAL set"
    fold = saved["levels"]["fold"]
    assert len(fold["partitions"]) == 5 and fold["Q3"]["partitions"] == 5
    assert 0.0 <= fold["long P@L"]["mean"] <= 1.0 and 0.0 <= fold["majority-class Q3"]["mean"] <= 1.0
    # each structure's values by name, from the partition that tested it, for `compare`
    assert "per_structure" not in fold and set(saved["per_item"]) == {"fold Q3", "fold long P@L"}
    assert fold["Potts long P@L"]["partitions"] == 0  # PDB chains have no family alignment
    for table in saved["per_item"].values():
        assert table and set(table) <= set(saved["labelled"]) and all(0.0 <= v <= 1.0 for v in table.values())
    report = (tmp_path / "structural-holdout.md").read_text()
    assert "Q3" in report and "Table 3" in report and "eight-class" in report


def test_alignment_rows_score_only_aligned_structures_of_each_partition():
    structures = [_structure(f"s{i}", "a.1.1.1") for i in range(6)]
    profiles = [np.full((10, 21), i, np.float32) if i % 2 == 0 else None for i in range(6)]
    baselines = AlignmentBaselines(profiles, [0.1 * i if i % 2 == 0 else None for i in range(6)])
    options = Options(steps=2, rank=4)
    scores = alignment_scores(structures, baselines, (np.array([0, 1, 2, 3]), np.array([4, 5])), options)
    assert scores["Potts long P@L"] == pytest.approx(0.4)  # structure 4 alone: 5 has no alignment
    assert set(scores) == set(ALIGNMENT_METRICS)  # the probe's value is checked on real domains below
    unaligned_train = alignment_scores(structures, baselines, (np.array([1, 3]), np.array([0, 2])), options)
    assert all(np.isnan(value) for value in unaligned_train.values())


def test_profile_and_potts_rows_on_real_kortemme_domains(shared_data, tmp_path: Path):
    backbone = Backbone("esm2_t6_8M_UR50D", random_weights=True)
    options = Options(
        sets="kortemme",
        levels="fold",
        folds=2,
        max_structures=6,
        steps=2,
        rank=4,
        msa_max_sequences=16,
        potts_iterations=2,
    )
    TASK.run(backbone, shared_data, tmp_path, options)
    saved = json.loads((tmp_path / "structural-holdout.json").read_text())
    assert_summarised("structural-holdout", saved, tmp_path)
    for metric in ALIGNMENT_METRICS:
        assert (
            saved["levels"]["fold"][metric]["partitions"] == 2 and 0.0 <= saved["levels"]["fold"][metric]["mean"] <= 1
        )
    assert len(saved["aligned"]) == 5 and set(saved["aligned"]) < set(saved["labelled"])  # one has no Pfam MSA
    cached = sorted(path.name.split("-rows")[0] for path in (tmp_path / ".potts-cache").glob("*.npy"))
    assert cached == sorted(saved["aligned"])  # the folder and names contacts-linear's cache uses
    report = (tmp_path / "structural-holdout.md").read_text()
    assert "profile long P@L" in report and "Potts long P@L" in report and "CCMpred" in report
