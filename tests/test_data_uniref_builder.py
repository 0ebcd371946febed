"""The UniRef TFDS builder on the real UniRef50/UniRef90 sample: configs, held-out split, UR50/D sampling, sharding."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import pytest

from data_pipeline.build.cluster_sampling import cluster_draws
from data_pipeline.build.corpus_files import read_mapping
from data_pipeline.build.dataset import build_dataset, choose_num_shards
from data_pipeline.build.heldout import is_heldout
from data_pipeline.errors import DataPipelineError
from data_pipeline.input.shard_reader import read_split, split_shards
from esm_jax.fasta import iter_fasta

UR50_RECORDS = 5001
UR90_RECORDS = 11296


@pytest.fixture(scope="module")
def examples(uniref_sample_datasets):
    return {
        (config, split): read_split(path, split)
        for config, path in uniref_sample_datasets.items()
        for split in ("train", "validation")
    }


@pytest.fixture(scope="module")
def clusters(uniref_sample_files) -> dict[str, list[str]]:
    members: dict[str, list[str]] = defaultdict(list)
    for row in read_mapping(uniref_sample_files.mapping_tsv):
        members[row.cluster_id].append(row.member_id)
    return members


def test_ur50s_holds_every_representative_unchanged(examples, uniref_sample_files):
    written = examples["ur50_s", "train"] + examples["ur50_s", "validation"]
    source = {r.record_id: r.sequence for r in iter_fasta(uniref_sample_files.uniref50_fastas[0])}
    assert len(written) == UR50_RECORDS == len(source)
    assert all(e["sequence"] == source[e["id"]] and e["cluster_id"] == e["id"] for e in written)


def test_ur100_holds_every_member_with_its_mapped_cluster(examples, uniref_sample_files, clusters):
    written = examples["ur100", "train"] + examples["ur100", "validation"]
    cluster_of = {m: c for c, members in clusters.items() for m in members}
    source = {r.record_id: r.sequence for r in iter_fasta(uniref_sample_files.member_fastas[0])}
    assert len(written) == UR90_RECORDS == len({e["id"] for e in written})
    assert all(e["cluster_id"] == cluster_of[e["id"]] and e["sequence"] == source[e["id"]] for e in written)


@pytest.mark.parametrize("config", ["ur50_s", "ur50_d", "ur100"])
def test_heldout_clusters_are_disjoint_from_training(examples, config):
    train = {e["cluster_id"] for e in examples[config, "train"]}
    held = {e["cluster_id"] for e in examples[config, "validation"]}
    assert held and train and not held & train
    assert all(is_heldout(c, 0.1) for c in held) and not any(is_heldout(c, 0.1) for c in train)


def test_heldout_fraction_is_ten_percent_of_clusters_and_identical_in_every_config(examples, clusters):
    held = {c for c in clusters if is_heldout(c, 0.1)}
    expected, sd = 0.1 * len(clusters), math.sqrt(0.1 * 0.9 * len(clusters))
    assert abs(len(held) - expected) < 4 * sd
    assert {e["cluster_id"] for e in examples["ur50_s", "validation"]} == held
    assert {e["cluster_id"] for e in examples["ur100", "validation"]} == held
    assert {e["cluster_id"] for e in examples["ur50_d", "validation"]} <= held


def test_heldout_hash_is_the_documented_sha256_rule():
    import hashlib

    cluster = "UniRef50_A0A009GHJ8"
    value = int.from_bytes(hashlib.sha256(b"esm-jax/heldout/v1\x00" + cluster.encode()).digest()[:8], "big")
    assert is_heldout(cluster, 0.1) == (value < 0.1 * 2**64)


def test_ur50d_cluster_frequencies_are_uniform_within_sampling_error(examples, clusters):
    train_clusters = [c for c in clusters if not is_heldout(c, 0.1)]
    counts = Counter(e["cluster_id"] for e in examples["ur50_d", "train"])
    n = [counts.get(c, 0) for c in train_clusters]
    mean = sum(n) / len(n)
    dispersion = sum((x - mean) ** 2 for x in n) / mean
    dof = len(n) - 1
    assert abs(mean - 1.0) < 4 / math.sqrt(len(n))
    assert abs(dispersion - dof) < 5 * math.sqrt(2 * dof)
    for sizes in (range(1, 2), range(2, 4), range(4, 100)):
        group = [counts.get(c, 0) for c in train_clusters if len(clusters[c]) in sizes]
        assert abs(sum(group) / len(group) - 1.0) < 5 / math.sqrt(len(group)), sizes


def test_ur50d_holds_exactly_the_draws_of_the_cluster_sampler(examples, clusters):
    expected = Counter()
    for cluster, members in clusters.items():
        if not is_heldout(cluster, 0.1):
            expected.update((cluster, m) for m in cluster_draws(cluster, sorted(members), 1.0, 0))
    assert Counter((e["cluster_id"], e["id"]) for e in examples["ur50_d", "train"]) == expected


def test_cluster_sampler_picks_members_uniformly(clusters):
    big = {c: sorted(m) for c, m in clusters.items() if len(m) >= 5}
    chi2, dof = 0.0, 0
    for cluster, members in big.items():
        picks = Counter(cluster_draws(cluster, members, 40.0, seed=3))
        total = sum(picks.values())
        chi2 += sum((picks.get(m, 0) - total / len(members)) ** 2 / (total / len(members)) for m in members)
        dof += len(members) - 1
    assert abs(chi2 - dof) < 5 * math.sqrt(2 * dof)


def test_shards_are_the_requested_multiple_of_the_host_count(uniref_sample_datasets):
    for path in uniref_sample_datasets.values():
        assert len(split_shards(path, "train")) == 4 and len(split_shards(path, "validation")) == 4
    assert choose_num_shards(None, 8) == 8
    with pytest.raises(ValueError, match="multiple of 4"):
        choose_num_shards(6, 4)


def test_an_existing_dataset_is_never_overwritten_without_asking(uniref_sample_datasets, uniref_sample_files):
    out = uniref_sample_datasets["ur50_s"].parents[2]
    with pytest.raises(DataPipelineError, match="already exists.*--overwrite"):
        build_dataset("ur50_s", uniref_sample_files, out)
