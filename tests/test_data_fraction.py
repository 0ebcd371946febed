"""Pretraining on a fraction of the training clusters (Table 1's 10%, 1% and 0.1% rows): which records, and refusals."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from data_pipeline.errors import DataPipelineError, IteratorStateError
from data_pipeline.input.input_pipeline import PipelineConfig
from data_pipeline.input.shard_reader import (
    ProcessStream,
    kept_by_fraction,
    read_split,
    shards_for_process,
    split_shards,
)
from data_pipeline.input.training import mlm_batches
from esm_jax.train.trainer import train
from tests.pipeline_helpers import one_process_iterator, take
from tests.train_helpers import tiny_config

FRACTIONS = (1.0, 0.1, 0.01, 0.001)


@pytest.fixture(scope="module")
def ur50s(uniref_sample_datasets):
    return uniref_sample_datasets["ur50_s"]


@pytest.fixture(scope="module")
def train_records(ur50s) -> list[dict[str, str]]:
    return read_split(ur50s, "train")


def _kept_ids(records: list[dict[str, str]], fraction: float) -> set[str]:
    keep = kept_by_fraction([record["cluster_id"] for record in records], fraction)
    return {record["id"] for record, kept in zip(records, keep, strict=True) if kept}


def _stream_ids(shards, fraction: float) -> list[str]:
    stream = ProcessStream(shards, seed=0, fields=("id",), fraction=fraction)
    return [value.decode() for value in stream.read(0, stream.epoch_records)["id"]]


def test_subsets_are_nested_and_about_the_right_size():
    cluster_ids = [f"UniRef50_T{i:06d}" for i in range(100_000)]
    masks = {fraction: kept_by_fraction(cluster_ids, fraction) for fraction in FRACTIONS}
    assert masks[1.0].all()
    for larger, smaller in zip(FRACTIONS, FRACTIONS[1:], strict=False):
        assert not np.any(masks[smaller] & ~masks[larger]), f"{smaller} is not inside {larger}"
    for fraction in FRACTIONS[1:]:
        expected = fraction * len(cluster_ids)
        assert abs(masks[fraction].sum() - expected) < 5 * np.sqrt(expected), fraction


def test_a_record_is_kept_or_not_by_its_cluster_id_alone():
    cluster_ids = [f"UniRef50_T{i:05d}" for i in range(5000)]
    order = np.random.default_rng(0).permutation(len(cluster_ids))
    mask = kept_by_fraction(cluster_ids, 0.1)
    np.testing.assert_array_equal(kept_by_fraction([cluster_ids[i] for i in order], 0.1), mask[order])
    np.testing.assert_array_equal(kept_by_fraction(cluster_ids, 0.1), mask)


def test_the_real_sample_keeps_about_the_fraction_and_nested_subsets(train_records):
    kept = {fraction: _kept_ids(train_records, fraction) for fraction in FRACTIONS}
    n = len(train_records)
    assert len(kept[1.0]) == n > 4000
    assert abs(len(kept[0.1]) - 0.1 * n) < 5 * np.sqrt(0.1 * n)
    assert 0 < len(kept[0.01]) < 0.02 * n
    assert kept[0.001] <= kept[0.01] <= kept[0.1] <= kept[1.0]


def test_the_subset_does_not_depend_on_hosts_shards_or_seed(ur50s, train_records):
    shards = split_shards(ur50s, "train")
    expected = _kept_ids(train_records, 0.1)
    one_host = _stream_ids(shards, 0.1)
    assert len(one_host) == len(set(one_host)) and set(one_host) == expected
    for hosts in (2, 4):
        per_host = [_stream_ids(shards_for_process(shards, index, hosts), 0.1) for index in range(hosts)]
        assert sorted(sum(per_host, [])) == sorted(one_host), hosts
    for seed in (3, 4):
        config = PipelineConfig(
            seed=seed, token_budget=4096, block_records=256, repeat=False, include_ids=True, fraction=0.1
        )
        with one_process_iterator(ur50s, config) as iterator:
            seen = [i.decode() for batch in iterator for i in batch["ids"] if i]
        assert sorted(seen) == sorted(expected), seed


def test_batches_are_deterministic_and_resume_only_with_the_same_fraction(ur50s):
    config = PipelineConfig(token_budget=4096, block_records=256, seed=3, fraction=0.1)
    first, second = take(one_process_iterator(ur50s, config), 4), take(one_process_iterator(ur50s, config), 4)
    for a, b in zip(first, second, strict=True):
        assert all(np.array_equal(a[key], b[key]) for key in a)
    with one_process_iterator(ur50s, config) as iterator:
        next(iterator)
        state = iterator.get_state()
    assert state["settings"]["fraction"] == 0.1
    assert "fraction" not in PipelineConfig().settings()  # states saved before the option still restore
    other = PipelineConfig(token_budget=4096, block_records=256, seed=3, fraction=0.01)
    with pytest.raises(IteratorStateError, match="fraction"):
        one_process_iterator(ur50s, other, state=state)


def test_held_out_data_is_never_reduced(ur50s):
    data = ml_collections.ConfigDict(
        dict(dataset_dir=str(ur50s), seed=0, eval_seed=1, global_token_budget=4096, buckets=(64, 128, 256, 512, 1024),
             max_residues=1022, block_records=256, fraction=0.001)
    )  # fmt: skip
    with mlm_batches(data, "validation") as validation:
        assert validation.config.fraction == 1.0
    with mlm_batches(data, "train") as training:
        assert training.config.fraction == 0.001 and training._stream.epoch_records < 20


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_fractions_outside_zero_to_one_are_refused(fraction):
    with pytest.raises(DataPipelineError, match=r"data.fraction must be in \(0, 1\]"):
        PipelineConfig(fraction=fraction)


def test_a_fraction_that_keeps_no_sequence_is_refused(ur50s):
    with pytest.raises(DataPipelineError, match="data.fraction=1e-09 keeps none of the records"):
        one_process_iterator(ur50s, PipelineConfig(fraction=1e-9))


def test_a_tiny_run_trains_on_a_tenth_of_the_sample(ur50s, tmp_path):
    config = tiny_config(total_steps=3)
    config.evals = ml_collections.ConfigDict()  # the held-out split is checked above; no second compilation here
    config.data.factory = "data_pipeline.input.training:mlm_batches"
    config.data.update(
        dataset_dir=str(ur50s), fraction=0.1, global_token_budget=2048, buckets=(256,), max_residues=254
    )  # one batch shape, one compilation
    result = train(config, tmp_path / "run")
    assert result.step == 3 and np.isfinite(result.last_train["loss"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["fraction"] == 0.1
