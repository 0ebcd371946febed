"""The builder under Apache Beam's local DirectRunner writes the same examples and bad-record report as locally.

Each Beam build of the sample takes about 4-5 s on 2 cores, so these run in the default suite.
"""

from __future__ import annotations

import json
from collections import Counter

import apache_beam as beam
import pytest

from data_pipeline.build.bad_records import Policy
from data_pipeline.build.dataset import build_dataset
from data_pipeline.input.shard_reader import read_split
from data_pipeline.layout import DATASET_NAME, REPORT_NAME, BuildOptions


def _contents(data_dir, splits=("train", "validation")) -> dict[str, Counter]:
    return {
        split: Counter((e["id"], e["cluster_id"], e["sequence"]) for e in read_split(data_dir, split))
        for split in splits
    }


@pytest.mark.parametrize("config", ["ur50_s", "ur50_d", "ur100"])
def test_beam_build_equals_the_local_build(config, uniref_sample_files, uniref_sample_datasets, tmp_path):
    result = build_dataset(config, uniref_sample_files, tmp_path, num_shards=4, beam_runner=beam.runners.DirectRunner())
    assert _contents(result.data_dir) == _contents(uniref_sample_datasets[config])
    assert result.shards == {"train": 4, "validation": 4}


def test_beam_reports_the_same_bad_records_as_the_local_build(flawed_corpus, tmp_path):
    options = BuildOptions(heldout_fraction=0.0)
    local = build_dataset("ur50_d", flawed_corpus, tmp_path / "local", options)
    beamed = build_dataset("ur50_d", flawed_corpus, tmp_path / "beam", options, beam_runner=beam.runners.DirectRunner())
    reports = [json.loads((r.data_dir / REPORT_NAME).read_text()) for r in (local, beamed)]
    assert reports[0] == reports[1] and reports[0]["total"] == 6
    assert _contents(local.data_dir, ["train"]) == _contents(beamed.data_dir, ["train"])


def test_beam_fail_policy_stops_the_pipeline_with_the_record_named(flawed_corpus, tmp_path):
    options = BuildOptions(heldout_fraction=0.0, on_bad_record=Policy.FAIL)
    with pytest.raises(Exception, match=r"\.(fasta|tsv), (record|line) \d+ .*To fix:"):
        build_dataset("ur100", flawed_corpus, tmp_path, options, beam_runner=beam.runners.DirectRunner())
    assert not (tmp_path / DATASET_NAME).exists()
