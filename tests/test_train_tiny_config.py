"""The tiny config, trained for a few minutes on the real UniRef50 sample, beats the unigram baseline."""

from __future__ import annotations

import pytest

from configs.pretrain import get_config
from esm_jax.train.trainer import train


@pytest.mark.slow
def test_tiny_config_brings_heldout_ece_below_unigram(shared_data, tmp_path, capsys):
    config = get_config("tiny")
    sample = shared_data / "uniref50_ur90_cluster_sample"
    config.data.uniref50_fasta = [str(sample / "uniref50_train_filt.fasta")]
    config.data.build_dir = str(tmp_path / "datasets")
    config.train.update(total_steps=60, eval_every=60, checkpoint_every=60, log_every=20)
    result = train(config, tmp_path / "run")
    heldout = result.last_heldout
    with capsys.disabled():
        ece, unigram = heldout["ece"], heldout["target_unigram_ece"]
        print(f"\nheld-out ECE after 60 steps: {ece:.3f}; target unigram: {unigram:.3f}")
    assert heldout["ece"] < 0.95 * heldout["target_unigram_ece"]
    for name in ("learning_curve.png", "summary.json", "metrics.jsonl", "config.json"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    assert list((tmp_path / "run" / "tensorboard").glob("events.*"))


@pytest.mark.slow
def test_tiny_config_trains_on_packed_rows_of_the_real_sample(shared_data, tmp_path):
    config = get_config("tiny")
    sample = shared_data / "uniref50_ur90_cluster_sample"
    config.data.update(
        uniref50_fasta=[str(sample / "uniref50_train_filt.fasta")], build_dir=str(tmp_path / "datasets"),
        shapes="packed", buckets=(64, 128, 256, 512), max_residues=510,
    )  # fmt: skip
    config.train.update(total_steps=40, eval_every=40, checkpoint_every=40, log_every=20)
    result = train(config, tmp_path / "run")
    assert result.last_train["real_token_fraction"] > 0.95
    assert result.last_train["tokens_per_second"] < result.last_train["padded_tokens_per_second"]
    assert result.last_heldout["ece"] < result.last_heldout["target_unigram_ece"]
