"""The bidirectional LSTM baselines (paper Table 1): sizes, padding, no self-information, training and ECE."""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from esm_jax import pretrained
from esm_jax.model import BiLSTMLM, LSTMConfig, abstract_model, build_model, config_from_dict
from esm_jax.train.trainer import train
from eval.common.task import Backbone
from eval.language_model.masked_lm import MaskedLmScorer, ece
from tests.synthetic_batches import SyntheticBatches
from tests.train_helpers import REPO, run_module, tiny_config

# <cls> M K T A Y I A K <eos>, then right padding.
TOKENS = np.array([[0, 20, 15, 11, 5, 19, 12, 5, 15, 2, 1, 1]], np.int32)
REAL = 10


def _pretrain_config(arg: str):
    sys.path.insert(0, str(REPO))
    from configs.pretrain import get_config

    return get_config(arg)


@pytest.fixture(scope="module")
def model() -> BiLSTMLM:
    return build_model(LSTMConfig(num_layers=2, embed_dim=16, hidden_dim=24), seed=1)


@pytest.mark.parametrize(("name", "paper_millions"), [("lstm_small", 28.4), ("lstm_large", 113.4)])
def test_configured_sizes_match_table_1(name, paper_millions):
    config = config_from_dict(_pretrain_config(f"model={name},data=ur50s").model.to_dict())
    params = nnx.state(abstract_model(config), nnx.Param)  # shapes only, nothing allocated
    count = sum(leaf.size for leaf in jax.tree.leaves(params))
    print(f"{name}: {count:,} parameters (Rives et al. 2021, Table 1: {paper_millions}M)")
    assert count == config.num_parameters()
    assert round(count / 1e6, 1) == paper_millions


def test_lstm_tiny_is_a_cpu_config():
    config = _pretrain_config("model=lstm_tiny")
    assert isinstance(config_from_dict(config.model.to_dict()), LSTMConfig)
    assert config.model.compute_dtype == "float32" and config.data.global_token_budget == 8192


def test_right_padding_does_not_change_outputs(model):
    alone = np.asarray(model(TOKENS[:, :REAL])["logits"])
    padded = np.asarray(model(TOKENS)["logits"])[:, :REAL]
    shorter = np.concatenate([TOKENS[:, :5], [[2] + [1] * 6]], axis=1)
    batched = np.asarray(model(np.concatenate([TOKENS, shorter]))["logits"])[:1, :REAL]
    np.testing.assert_allclose(padded, alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)


def test_a_position_is_predicted_without_its_own_token(model):
    position = 5
    changed = TOKENS.copy()
    changed[0, position] = 32  # <mask>
    before, after = np.asarray(model(TOKENS)["logits"][0]), np.asarray(model(changed)["logits"][0])
    np.testing.assert_array_equal(after[position], before[position])
    for neighbour in (position - 1, position + 1, 1, REAL - 1):
        assert np.abs(after[neighbour] - before[neighbour]).max() > 1e-4


def test_tiny_training_run_learns_and_loads_for_heldout_ece(tmp_path):
    config = tiny_config(total_steps=12, eval_every=12)
    config.model = _pretrain_config("model=lstm_tiny").model
    config.model.update(embed_dim=16, hidden_dim=32)
    config.optimizer.update(peak_learning_rate=1e-2, end_learning_rate=1e-2)
    result = train(config, tmp_path / "run")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    losses = [record["loss"] for record in map(json.loads, lines) if record["split"] == "train"]
    print(f"train loss {np.mean(losses[:3]):.3f} -> {np.mean(losses[-3:]):.3f}; held-out {result.last_heldout}")
    assert np.mean(losses[-3:]) < np.mean(losses[:3])

    loaded = Backbone(str(tmp_path / "run")).model
    assert isinstance(loaded, BiLSTMLM)
    scorer = MaskedLmScorer(loaded)
    sums = [scorer.batch_nll(b["tokens"], b["targets"], b["loss_mask"]) for b in SyntheticBatches(1, 0, 2)]
    heldout = ece(sum(nll for nll, _ in sums), sum(count for _, count in sums))
    assert heldout == pytest.approx(result.last_heldout["ece"], rel=1e-5)
    assert heldout < 33.0
    reloaded, _ = pretrained.load_model_and_alphabet_local(tmp_path / "run")
    assert reloaded(TOKENS)["logits"].shape == (1, TOKENS.shape[1], 33)


def test_sharded_lstm_training_equals_one_device(tmp_path):
    """Three steps on a (2, 2, 2) mesh against one device. Adam's epsilon is raised to 1 for this check: with
    the default 1e-8, Adam turns a gradient of ~1e-9 into a full learning-rate step whose sign follows float
    rounding, so near-zero gradients alone would make the meshes differ by ~lr after one step."""
    for mesh, devices in (("1x1x1", 1), ("2x2x2", 8)):
        worker_args = [str(tmp_path / mesh), str(tmp_path / f"{mesh}.npz"), "--mesh", mesh, "--lstm", "--adam-eps", "1"]
        run_module("tests.train_worker", worker_args, devices=devices)
    with np.load(tmp_path / "1x1x1.npz") as one, np.load(tmp_path / "2x2x2.npz") as sharded:
        parameters = [key for key in one.files if key.startswith("['model']")]
        assert parameters and one.files == sharded.files
        for key in parameters:
            np.testing.assert_allclose(sharded[key], one[key], rtol=2e-5, atol=1e-6, err_msg=key)
