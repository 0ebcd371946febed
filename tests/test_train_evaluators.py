"""Evaluation tasks run inside training (``config.evals``), logging their numbers to metrics.jsonl."""

from __future__ import annotations

import json

import pytest

from configs.pretrain import get_config
from esm_jax.cli.configuration import ConfigError, apply_overrides
from esm_jax.errors import EsmJaxError
from esm_jax.train.trainer import train
from eval.cli import main as eval_main

PROBE_EVALS = {
    "language_model": {"every": 2, "ngram_orders": (1, 2), "laplace": (1.0,)},
    "secondary_structure_linear": {
        "every": 2, "layers": "last", "max_train": 12, "max_test": 8, "tests": "CB513", "iterations": 20,
    },
    "contacts_linear": {
        "every": 4, "sets": "kortemme", "layers": "last", "max_proteins": 6, "steps": 10, "no_baselines": True,
    },
    "structure_vs_lm": {
        "every": 2, "ss_train": 12, "ss_test": 8, "iterations": 20, "contact_proteins": 6, "contact_steps": 10,
    },
}  # fmt: skip


def _tiny_run_config(shared_data, tmp_path, evals: dict):
    config = get_config("tiny")
    config.model.update(num_layers=2, embed_dim=32, attention_heads=2, ffn_embed_dim=64)
    sample = shared_data / "uniref50_ur90_cluster_sample"
    config.data.uniref50_fasta = [str(sample / "uniref50_train_filt.fasta")]
    config.data.build_dir = str(tmp_path / "datasets")
    config.data.eval_batches = 2
    config.train.update(total_steps=4, checkpoint_every=2, log_every=2)
    config.evals = {
        "heldout": {"every": 2},
        **{name: {**options, "data": str(shared_data)} for name, options in evals.items()},
    }
    return config


def _logged(workdir) -> dict[tuple[str, int], dict]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {(record["split"], record["step"]): record for record in records}


def test_language_model_and_linear_probes_run_during_a_tiny_run(shared_data, tmp_path, capsys):
    workdir = tmp_path / "run"
    result = train(_tiny_run_config(shared_data, tmp_path, PROBE_EVALS), workdir)
    logged = _logged(workdir)
    for step in (2, 4):
        assert 1.0 < logged[("heldout", step)]["ece"] < 100.0
        assert 1.0 < logged[("language_model", step)]["model_ece"] < 100.0
        assert 0.0 <= logged[("secondary_structure_linear", step)]["CB513"] <= 1.0
    assert ("contacts_linear", 2) not in logged
    assert 0.0 <= logged[("contacts_linear", 4)]["kortemme"] <= 1.0
    assert set(result.last_evals) == {"heldout", *PROBE_EVALS}
    assert (workdir / "evals" / "step_4" / "contacts_linear" / "contacts-linear.json").is_file()
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["evals"]["secondary_structure_linear"]["CB513"] == logged[("secondary_structure_linear", 4)]["CB513"]

    # Fig. 6 from the run's own log: no checkpoint is reloaded
    assert eval_main(["structure-vs-lm", "--run", str(workdir), "--out", str(tmp_path / "fig6")]) == 0
    report = json.loads((tmp_path / "fig6" / "structure-vs-lm.json").read_text())
    assert report["source"] == "metrics.jsonl" and [row["step"] for row in report["checkpoints"]] == [2, 4]
    assert report["checkpoints"][1]["ss8_accuracy"] == logged[("structure_vs_lm", 4)]["ss8_accuracy"]
    assert "structure-vs-lm step " not in capsys.readouterr().out


def test_an_unknown_evaluator_option_is_refused_in_one_line_naming_it(shared_data, tmp_path):
    config = _tiny_run_config(shared_data, tmp_path, {"contacts_linear": {"every": 2, "rnak": 8}})
    with pytest.raises(EsmJaxError, match=r"config.evals.contacts_linear: unknown option\(s\) rnak"):
        train(config, tmp_path / "run")


def test_an_evaluator_without_a_positive_every_is_refused(shared_data, tmp_path):
    config = _tiny_run_config(shared_data, tmp_path, {"contacts_linear": {"layers": "last"}})
    with pytest.raises(EsmJaxError, match=r"config.evals.contacts_linear.every must be a positive number"):
        train(config, tmp_path / "run")


def test_command_line_overrides_add_an_evaluator_and_change_one():
    config = apply_overrides(
        get_config("tiny"), ["evals.contacts_linear={'every': 50, 'layers': 'last'}", "evals.heldout.every=7"]
    )
    assert config.evals.contacts_linear.to_dict() == {"every": 50, "layers": "last"}
    assert config.evals.heldout.every == 7
    with pytest.raises(ConfigError, match="expects a dict"):
        apply_overrides(get_config("tiny"), ["evals.contacts_linear=50"])
