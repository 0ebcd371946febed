"""`esm-jax demo` end to end on the bundled proteome with a small step budget: every report file, ECE < unigram."""

from __future__ import annotations

import json

import numpy as np
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


def test_the_summary_explains_every_reported_metric_and_the_projection_is_log_coloured(tmp_path):
    from esm_jax.cli.demo import METRIC_EXPLANATIONS
    from esm_jax.plots import projection_png

    for key in ("heldout_ece", "target_unigram_ece", "heldout_masked_accuracy", "proteins_embedded"):
        assert f"**{key}**" in METRIC_EXPLANATIONS
    points = np.random.default_rng(0).normal(size=(30, 8))
    path = projection_png(points, tmp_path / "p.png", "t", np.arange(30) + 10, "length", log_colour=True)
    assert path.read_bytes()[:4] == b"\x89PNG"
