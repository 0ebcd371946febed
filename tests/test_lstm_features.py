"""The LSTM baselines as feature extractors: per-layer representations as ESM gives them, read by evaluations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esm_jax.cli.main import main as esm_jax_main
from esm_jax.errors import EsmJaxError
from esm_jax.inference.embedding import embed_sequences
from esm_jax.inference.extract import extract
from esm_jax.inference.sharded_outputs import ExtractedShards
from esm_jax.model import BiLSTMLM, LSTMConfig, build_model
from esm_jax.model.lstm import LSTMFeatureError
from esm_jax.train.trainer import train
from eval import cli
from eval.common.representations import parse_layers, per_residue_layers, residue_window
from eval.common.task import Backbone
from eval.tasks import get_task
from tests.train_helpers import tiny_config

# <cls> M K T A Y I A K <eos>, then right padding.
TOKENS = np.array([[0, 20, 15, 11, 5, 19, 12, 5, 15, 2, 1, 1]], np.int32)
REAL = 10
HIDDEN = 24


@pytest.fixture(scope="module")
def model() -> BiLSTMLM:
    return build_model(LSTMConfig(num_layers=2, embed_dim=16, hidden_dim=HIDDEN), seed=1)


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory) -> str:
    """A one-step training run of a tiny LSTM baseline, loaded by path as any checkpoint is."""
    config = tiny_config(total_steps=1)
    config.model = {"kind": "lstm", "num_layers": 2, "embed_dim": 16, "hidden_dim": 16}
    workdir = tmp_path_factory.mktemp("lstm") / "run"
    train(config, workdir)
    return str(workdir)


def _representations(model: BiLSTMLM, tokens: np.ndarray) -> dict[int, np.ndarray]:
    return {k: np.asarray(v) for k, v in model(tokens, repr_layers=[0, 1, 2])["representations"].items()}


def test_layers_have_esm_shapes_and_zero_padding(model):
    out = model(TOKENS, repr_layers=[0, -1])
    layers = out["representations"]
    assert set(layers) == {0, 2} and out["logits"].shape == (1, TOKENS.shape[1], 33)
    assert layers[0].shape == (1, TOKENS.shape[1], 16) and layers[2].shape == (1, TOKENS.shape[1], 2 * HIDDEN)
    embedding = np.asarray(model.embed_tokens.embedding[...])[TOKENS[0, :REAL]]
    np.testing.assert_array_equal(np.asarray(layers[0])[0, :REAL], embedding)
    assert not np.asarray(layers[2])[0, REAL:].any()
    assert set(model.embed(TOKENS, [1])) == {"representations"}


def test_logits_do_not_depend_on_the_layers_asked_for(model):
    plain = np.asarray(model(TOKENS)["logits"])
    np.testing.assert_array_equal(np.asarray(model(TOKENS, repr_layers=[0, 1, 2])["logits"]), plain)
    np.testing.assert_array_equal(np.asarray(model.forward(TOKENS)["logits"]), plain)


def test_padding_never_changes_real_positions(model):
    alone = _representations(model, TOKENS[:, :REAL])
    padded = _representations(model, TOKENS)
    shorter = np.concatenate([TOKENS[:, :5], [[2] + [1] * 6]], axis=1)
    batched = _representations(model, np.concatenate([shorter, TOKENS]))
    for layer, values in alone.items():
        np.testing.assert_allclose(padded[layer][:, :REAL], values, rtol=1e-5, atol=1e-6, err_msg=f"layer {layer}")
        np.testing.assert_allclose(batched[layer][1:, :REAL], values, rtol=1e-5, atol=1e-6, err_msg=f"layer {layer}")


def test_features_of_a_token_include_the_token(model):
    """Token i's features are both directions' states after reading i (ELMo), unlike the LM head, which skips i."""
    position = 5
    changed = TOKENS.copy()
    changed[0, position] = 32  # <mask>
    before, after = _representations(model, TOKENS)[1][0], _representations(model, changed)[1][0]
    forward, backward = slice(0, HIDDEN), slice(HIDDEN, 2 * HIDDEN)
    assert np.abs(after[position, forward] - before[position, forward]).max() > 1e-4
    assert np.abs(after[position, backward] - before[position, backward]).max() > 1e-4
    np.testing.assert_array_equal(after[:position, forward], before[:position, forward])
    np.testing.assert_array_equal(after[position + 1 : REAL, backward], before[position + 1 : REAL, backward])


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"need_head_weights": True}, "attention maps"),
        ({"return_contacts": True}, "contacts"),
        ({"segment_ids": (TOKENS != 1).astype(np.int32)}, "packed rows"),
    ],
)
def test_transformer_only_outputs_are_refused_in_one_line(model, options, named):
    with pytest.raises(LSTMFeatureError, match=f"LSTM baseline has no attention, so it cannot give {named}") as error:
        model(TOKENS, **options)
    assert "\n" not in str(error.value)


def test_bad_layers_and_tokens_are_refused(model):
    with pytest.raises(ValueError, match="layer 3 does not exist: the model has layers 0..2"):
        model(TOKENS, repr_layers=[3])
    with pytest.raises(EsmJaxError, match=r"tokens\[0, 1\] is 40"):
        model(np.where(np.arange(12) == 1, 40, TOKENS).astype(np.int32))


def test_shared_embedding_engine_reads_lstm_layers(model):
    sequences = ["MKTAYIAK", "MKT", "ACDEFGHIKLMNPQRSTVWY" * 3]
    per_residue = embed_sequences(model, sequences, layer=-1, per_residue=True)
    alone = _representations(model, np.array([[0, *model.alphabet.encode(sequences[0]), 2]], np.int32))[2][0, 1:-1]
    np.testing.assert_allclose(per_residue[0], alone, rtol=1e-5, atol=1e-6)
    assert [len(values) for values in per_residue] == [8, 3, 60]
    features = per_residue_layers(model, list(enumerate(sequences)), [0, 1])
    assert [f.shape[1] for f in (features[0][2], features[1][2])] == [16, 2 * HIDDEN]
    assert residue_window(model) is None and parse_layers("all", model) == [0, 1, 2]


def test_extract_writes_each_layer_at_its_own_width(model, tmp_path):
    records = [("short", "MKT"), ("long", "MKTAYIAKQRQISFVKSHFSRQ")]
    options = {"repr_layers": [0, 2], "include": ["mean", "per_tok"], "show_progress": False}
    extract(model, records, tmp_path / "shards", output_format="shards", **options)
    extracted = ExtractedShards(tmp_path / "shards")["long"]
    alone = _representations(model, np.array([[0, *model.alphabet.encode(records[1][1]), 2]], np.int32))
    assert extracted["representations"][0].shape == (22, 16)
    np.testing.assert_allclose(extracted["representations"][2], alone[2][0, 1:-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(extracted["mean_representations"][2], alone[2][0, 1:-1].mean(0), rtol=1e-5, atol=1e-6)


def test_attention_tasks_refuse_an_lstm(model, tmp_path):
    task = get_task("contacts-unsupervised")
    backbone = Backbone(None, model=model)
    reason = task.why_skipped(backbone, task.options())
    assert reason and "reads attention maps" in reason and "LSTM baseline" in reason and "\n" not in reason
    assert get_task("secondary-structure-linear").why_skipped(backbone, task.options()) is None
    with pytest.raises(EsmJaxError, match="reads attention maps"):
        task.run(backbone, tmp_path, tmp_path, task.options())
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_lstm_run_through_the_eval_command(lstm_run, shared_data, tmp_path, capsys):
    """A representation-reading task end to end on an LSTM training run; an attention task refused (exit status 2)."""
    argv = ["--checkpoint", lstm_run, "--data", str(shared_data), "--out", str(tmp_path)]
    assert cli.main(["remote-homology", *argv, "--limit", "20", "--hmm-queries", "0"]) == 0
    result = json.loads((tmp_path / "remote-homology.json").read_text())
    summary = result["summary"]["cosine (all queries)"]
    assert result["domains"] >= 20 and summary
    assert all(0.0 <= level["auc"] <= 1.0 for level in summary.values())
    capsys.readouterr()
    assert esm_jax_main(["eval", "contacts-unsupervised", *argv]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "reads attention maps" in message
    assert not (tmp_path / "contacts-unsupervised.json").exists()
