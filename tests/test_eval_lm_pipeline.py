"""`esm-jax eval language-model` end to end on a held-out split built from real UniRef50 records."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from eval.cli import main
from eval.common import published
from tests.eval_tiny_model import build_heldout_dataset, save_tiny_checkpoint


@pytest.fixture(scope="module")
def small_dataset(shared_data, tmp_path_factory):
    """200 real UniRef50 representatives with 25% of clusters held out, built by the data pipeline."""
    return build_heldout_dataset(shared_data, tmp_path_factory.mktemp("lm_data"), proteins=200, max_length=400)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def run_task(checkpoint, dataset, out, *extra):
    argv = ["language-model", "--checkpoint", str(checkpoint), "--dataset", str(dataset), "--out", str(out)]
    assert main([*argv, "--ngram-orders", "1", "2", "--laplace", "1", *extra]) == 0
    return json.loads((out / "language-model.json").read_text())


def heldout_reference(dataset, seed):
    """Masked targets and sequence count read straight from the input pipeline, independently of the task."""
    from data_pipeline.input.input_pipeline import MlmBatchIterator, PipelineConfig

    config = PipelineConfig(split="validation", seed=seed, token_budget=4096, repeat=False)
    targets, sequences = [], 0
    with MlmBatchIterator(dataset, config, process_index=0, process_count=1) as batches:
        for batch in batches:
            targets.append(batch["targets"][batch["loss_mask"] > 0])
            sequences += int(np.sum(batch["residues"] > 0))
    return np.concatenate(targets), sequences


def test_every_heldout_sequence_and_masked_token_is_scored(small_dataset, checkpoint, tmp_path):
    from data_pipeline.input.shard_reader import read_split

    results = run_task(checkpoint, small_dataset, tmp_path)
    targets, sequences = heldout_reference(small_dataset, seed=0)
    assert results["heldout_sequences"] == sequences == len(read_split(small_dataset, "validation"))
    assert results["masked_tokens"] == targets.size > 0
    assert results["uniform_ece"] == pytest.approx(25.0)
    assert 1.0 < results["model_ece"] < 33.0 * 3
    for name in ("language-model.md", "language-model.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert results["published"] == [published.LANGUAGE_MODEL.as_json()]
    assert "## Published figures" in (tmp_path / "language-model.md").read_text()


def test_unigram_baseline_matches_training_frequencies(small_dataset, checkpoint, tmp_path):
    from data_pipeline.input.shard_reader import read_split
    from eval.language_model.ngram import LETTERS

    results = run_task(checkpoint, small_dataset, tmp_path)
    counts = {letter: 0 for letter in LETTERS}
    for example in read_split(small_dataset, "train"):
        for letter in example["sequence"]:
            counts[letter] += 1
    total = sum(counts.values())
    targets, _ = heldout_reference(small_dataset, seed=0)
    from esm_jax import Alphabet

    alphabet = Alphabet()
    log_p = [math.log((counts[alphabet.get_tok(int(t))] + 1) / (total + 25)) for t in targets]
    assert results["unigram_ece"] == pytest.approx(math.exp(-sum(log_p) / len(log_p)), rel=1e-9)
    assert results["training_residues"] == total


def test_ece_is_deterministic_and_independent_of_batch_size(small_dataset, checkpoint, tmp_path):
    first = run_task(checkpoint, small_dataset, tmp_path / "a")
    again = run_task(checkpoint, small_dataset, tmp_path / "b")
    other_batches = run_task(checkpoint, small_dataset, tmp_path / "c", "--token-budget", "2048")
    other_masks = run_task(checkpoint, small_dataset, tmp_path / "d", "--mask-seed", "1")
    assert again["model_ece"] == first["model_ece"]
    assert other_batches["masked_tokens"] == first["masked_tokens"]
    assert other_batches["model_ece"] == pytest.approx(first["model_ece"], rel=1e-5)
    assert other_batches["best_ngram"] == first["best_ngram"]
    assert other_masks["model_ece"] != first["model_ece"]


def test_missing_dataset_is_refused_with_the_fix(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="esm-jax build-data"):
        run_task(checkpoint, tmp_path / "nowhere", tmp_path)
