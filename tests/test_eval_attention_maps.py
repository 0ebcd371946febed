"""Attention-map contact features: the model's own contact head read off them, and device-side logits."""

from __future__ import annotations

import numpy as np

from esm_jax.inference.embedding import encode_records, iter_outputs
from esm_jax.model import ModelConfig, build_model
from eval.structure.contacts.attention_maps import feature_count, iter_attention_features, iter_contact_logits

RECORDS = [("a", "MKTAYIAKQRQISFVKSHFSRQ"), ("b", "GSHMLEDPVAG"), ("c", "MSTNPKPQRKTKRNTNRRPQDVKFPGG")]


def _model():
    return build_model(ModelConfig("esm2", 2, 32, 4, 64), seed=3)


def test_the_checkpoint_head_over_the_features_gives_the_models_contacts():
    model = _model()
    weights = np.asarray(model.contact_head.regression.kernel[...])[:, 0]
    intercept = float(np.asarray(model.contact_head.regression.bias[...])[0])
    encoded = encode_records(RECORDS, truncation_seq_length=None)
    expected = {out.index: out.contacts for out in iter_outputs(model, encoded, [-1], return_contacts=True)}
    features = dict(iter_attention_features(model, RECORDS))
    assert sorted(features) == [0, 1, 2]
    for index, maps in features.items():
        assert maps.shape == (len(RECORDS[index][1]),) * 2 + (feature_count(model),)
        probabilities = 1.0 / (1.0 + np.exp(-(maps @ weights + intercept)))
        np.testing.assert_allclose(probabilities, expected[index], atol=1e-5)


def test_device_logits_equal_the_features_times_the_weights():
    model = _model()
    rng = np.random.default_rng(0)
    weights, intercept = rng.normal(size=feature_count(model)), -0.5
    features = dict(iter_attention_features(model, RECORDS))
    logits = dict(iter_contact_logits(model, RECORDS, weights, intercept))
    assert sorted(logits) == sorted(features)
    for index, maps in features.items():
        np.testing.assert_allclose(logits[index], maps @ weights + intercept, rtol=1e-4, atol=1e-5)
