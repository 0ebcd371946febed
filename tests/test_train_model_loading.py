"""A training run's folder loads like any checkpoint, giving the trained model without its optimizer."""

from __future__ import annotations

import numpy as np

from esm_jax import pretrained
from esm_jax.train.trainer import train
from tests.train_helpers import tiny_config

TOKENS = np.array([[0, 5, 6, 7, 8, 9, 2], [0, 10, 32, 12, 2, 1, 1]], np.int32)


def test_a_training_workdir_loads_its_newest_model(tmp_path):
    result = train(tiny_config(total_steps=2), tmp_path / "run")
    model, _ = pretrained.load_model_and_alphabet_local(tmp_path / "run", scan_layers=False)
    assert not model.config.scan_layers
    trained = result.state["model"]
    for path, expected in (
        (("embed_tokens", "embedding"), trained["embed_tokens"]["embedding"][...]),
        (("layers", "fc1", "kernel"), trained["layers"]["fc1"]["kernel"][...]),
    ):
        value = model
        for key in path:
            value = getattr(value, key)
        np.testing.assert_array_equal(np.asarray(value[...]), np.asarray(expected))
    assert model(TOKENS)["logits"].shape == (2, 7, 33)
