"""`esm-jax demo` end to end on the bundled proteome with a small step budget: every report file, ECE < unigram."""

from __future__ import annotations

import json

import pytest

from esm_jax.cli.main import main

REPORT_FILES = ("summary.md", "metrics.json", "learning_curve.png", "attention_map.png", "embedding_projection.png")


@pytest.mark.slow
def test_demo_writes_every_report_file_and_beats_the_unigram_baseline(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path), "--steps", "60", "--num-proteins", "8"]) == 0
    report = tmp_path / "report"
    for name in REPORT_FILES:
        assert (report / name).stat().st_size > 0, name
    metrics = json.loads((report / "metrics.json").read_text())
    ece, unigram = metrics["heldout_ece"], metrics["target_unigram_ece"]
    print(f"demo, 60 steps: held-out ECE {ece:.2f}, target unigram {unigram:.2f}")
    assert metrics["training_steps"] == 60 and metrics["proteins_embedded"] == 8
    assert metrics["heldout_ece"] < metrics["target_unigram_ece"]
    assert f"report written to {report}" in capsys.readouterr().out
