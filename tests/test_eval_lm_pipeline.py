"""`esm-jax eval language-model` end to end on a held-out split built from real UniRef50 records."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from esm_jax.errors import EsmJaxError
from eval.cli import main
from eval.common import published
from eval.language_model import task as language_model
from tests.eval_tiny_model import assert_summarised, build_heldout_dataset, save_tiny_checkpoint


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
    results = json.loads((out / "language-model.json").read_text())
    assert_summarised("language-model", results, out)
    return results


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


def test_ece_carries_bootstrap_intervals_over_sequences(small_dataset, checkpoint, tmp_path):
    results = run_task(checkpoint, small_dataset, tmp_path)
    low, high = results["model_ece_ci95"]
    assert low < results["model_ece"] < high
    best = results["best_ngram"]
    assert best["ece_ci95"][0] < best["ece"] < best["ece_ci95"][1]
    difference = results["model_minus_best_ngram"]
    assert difference["difference"] == pytest.approx(results["model_ece"] - best["ece"], rel=1e-6)
    assert difference["ci95"][0] < difference["difference"] < difference["ci95"][1]
    assert difference["excludes_zero"] == (difference["ci95"][0] > 0 or difference["ci95"][1] < 0)
    report = (tmp_path / "language-model.md").read_text()
    assert "ECE 95% CI" in report and f"[{low:.3f}, {high:.3f}]" in report
    assert "bootstrap over the" in report


def test_per_sequence_sums_add_up_to_the_pooled_totals(small_dataset):
    from esm_jax import build_model
    from eval.language_model.task import score_heldout
    from tests.eval_tiny_model import TINY

    scored = score_heldout(build_model(TINY, seed=0), small_dataset, mask_seed=0, token_budget=4096, context=1)
    assert scored["sequence_nll"].shape == scored["sequence_masked"].shape == (scored["sequences"],)
    assert scored["sequence_nll"].sum() == pytest.approx(scored["total_nll"])
    assert scored["sequence_masked"].sum() == scored["masked_tokens"] == scored["targets"].size
    per_sequence = np.bincount(scored["target_sequence"], minlength=scored["sequences"])
    np.testing.assert_array_equal(per_sequence, scored["sequence_masked"])
    assert (scored["sequence_nll"][scored["sequence_masked"] == 0] == 0).all()
    other = score_heldout(build_model(TINY, seed=0), small_dataset, mask_seed=0, token_budget=2048, context=1)
    np.testing.assert_array_equal(other["sequence_masked"], scored["sequence_masked"])  # numbered by id, not batch
    np.testing.assert_allclose(other["sequence_nll"], scored["sequence_nll"], rtol=1e-5)


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
    assert other_batches["model_ece_ci95"] == pytest.approx(first["model_ece_ci95"], rel=1e-5)
    assert other_masks["model_ece"] != first["model_ece"]


def test_missing_dataset_is_refused_with_the_fix(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="esm-jax build-data"):
        run_task(checkpoint, tmp_path / "nowhere", tmp_path)


def test_summary_pairs_two_runs_ece_over_the_same_resampled_sequences(small_dataset, tmp_path):
    trained = save_tiny_checkpoint(tmp_path, seed=1)  # not the weights of its seed-0 random twin
    runs = {"trained": [], "untrained": ["--random-weights"]}
    results = {name: run_task(trained, small_dataset, tmp_path / name, *flags) for name, flags in runs.items()}
    first, second = results["trained"]["per_sequence"], results["untrained"]["per_sequence"]
    assert first["ids"] == sorted(first["ids"]) == second["ids"] and first["masked_tokens"] == second["masked_tokens"]
    assert sum(first["masked_tokens"]) == results["trained"]["masked_tokens"]
    assert math.exp(sum(first["nll"]) / sum(first["masked_tokens"])) == pytest.approx(results["trained"]["model_ece"])
    argv = ["summary", "--out", str(tmp_path / "summary")]
    assert main([*argv, "--first", str(tmp_path / "trained"), "--second", str(tmp_path / "untrained")]) == 0
    (row,) = json.loads((tmp_path / "summary" / "summary.json").read_text())["rows"]
    difference = results["trained"]["model_ece"] - results["untrained"]["model_ece"]
    assert row["metric"] == "held-out ECE" and row["first − second"].startswith(f"{difference:+.3f} [")
    assert row["verdict"] in ("first higher", "second higher", "no difference shown")


def test_runs_on_different_heldout_masks_are_not_paired(small_dataset, checkpoint, tmp_path):
    ours = run_task(checkpoint, small_dataset, tmp_path / "a")
    other = run_task(checkpoint, small_dataset, tmp_path / "b", "--mask-seed", "7")
    with pytest.raises(EsmJaxError, match="different held-out sequences or masked positions"):
        language_model.ece_difference_between_runs(ours, other)
    same = language_model.ece_difference_between_runs(ours, ours)
    assert same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0] and not same["excludes_zero"]
    assert (
        language_model.ece_difference_between_runs(ours, {k: v for k, v in ours.items() if k != "per_sequence"}) is None
    )
