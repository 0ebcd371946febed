"""esm-jax reproduces fair-esm within 1e-4 relative error in float32, through the official file format."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from esm_jax import pretrained
from tests.fair_esm_reference import (
    esm1b_model,
    esm2_model,
    exported_gradients,
    gradient_errors,
    load_reference,
    masked_lm_inputs,
    reference_mlm_gradients,
    reference_tokens,
    relative_error,
    run_reference,
    save_official,
)

TOLERANCE = 1e-4
SHAPES = {
    "esm2_t1_d32_h2": lambda: esm2_model(1, 32, 2, seed=1),
    "esm2_t2_d64_h4": lambda: esm2_model(2, 64, 4, seed=2),
    "esm2_t3_d96_h6": lambda: esm2_model(3, 96, 6, seed=3),
    "esm1b_t1_d32_h2": lambda: esm1b_model(1, 32, 2, 64, seed=4),
    "esm1b_t2_d64_h4_no_emb_ln": lambda: esm1b_model(2, 64, 4, 128, before=False, seed=5),
    "esm1b_t3_d80_h5": lambda: esm1b_model(3, 80, 5, 160, seed=6),
}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def pair(request, tmp_path_factory):
    """(fair-esm model loaded by fair-esm, esm-jax model loaded by our reader) from one official file."""
    prefix = "esm2" if request.param.startswith("esm2") else "esm1b"
    path = save_official(SHAPES[request.param](), tmp_path_factory.mktemp(request.param) / f"{prefix}_test.pt")
    ours, _ = pretrained.load_model_and_alphabet_local(path)
    return load_reference(path), ours


def test_every_output_matches_fair_esm(pair):
    reference, ours = pair
    tokens = reference_tokens()
    layers = list(range(ours.num_layers + 1))
    expected = run_reference(reference, tokens, repr_layers=layers, return_contacts=True)
    got = ours(tokens, repr_layers=layers, return_contacts=True)
    assert relative_error(got["logits"], expected["logits"]) < TOLERANCE
    assert sorted(got["representations"]) == layers
    for layer in layers:
        assert relative_error(got["representations"][layer], expected["representations"][layer]) < TOLERANCE
    assert got["attentions"].shape == expected["attentions"].shape
    assert relative_error(got["attentions"], expected["attentions"]) < TOLERANCE
    assert relative_error(got["contacts"], expected["contacts"]) < TOLERANCE


def test_padded_batch_equals_each_sequence_alone(pair):
    _, ours = pair
    tokens = reference_tokens()
    batched = ours(tokens, repr_layers=[-1], return_contacts=True)
    for row in range(tokens.shape[0]):
        length = int(np.sum(tokens[row] != 1))
        alone = ours(tokens[row : row + 1, :length], repr_layers=[-1], return_contacts=True)
        last = ours.num_layers
        assert relative_error(batched["logits"][row, :length], alone["logits"][0]) < 1e-5
        assert relative_error(batched["representations"][last][row, :length], alone["representations"][last][0]) < 1e-5
        assert relative_error(batched["contacts"][row, : length - 2, : length - 2], alone["contacts"][0]) < 1e-5


def test_token_dropout_rescales_masked_inputs_like_fair_esm(pair):
    reference, ours = pair
    tokens = reference_tokens([("m", "MK<mask><mask>AYIA<mask>KQ"), ("plain", "MKTAYIAKQ")])
    expected = run_reference(reference, tokens, repr_layers=[0])
    got = ours(tokens, repr_layers=[0])
    assert relative_error(got["representations"][0], expected["representations"][0]) < TOLERANCE
    assert relative_error(got["logits"], expected["logits"]) < TOLERANCE


def test_masked_lm_gradients_match_fair_esm(pair):
    reference, ours = pair
    tokens = reference_tokens()
    inputs, selected = masked_lm_inputs(tokens)
    loss, expected = reference_mlm_gradients(reference, inputs, tokens, selected)

    def loss_fn(model):
        out = model.forward(jnp.asarray(inputs))
        per_token = optax.softmax_cross_entropy_with_integer_labels(out["logits"], jnp.asarray(tokens))
        return jnp.sum(per_token * selected) / selected.sum()

    our_loss, grads = nnx.value_and_grad(loss_fn)(ours)
    assert abs(float(our_loss) - loss) < TOLERANCE * abs(loss)
    got = {n: g for n, g in exported_gradients(ours, grads).items() if not n.endswith("inv_freq")}
    assert set(got) == set(expected) - {"contact_head.regression.weight", "contact_head.regression.bias"}
    errors = gradient_errors(got, expected)
    assert all(error < TOLERANCE for error in errors.values()), errors


def test_rotary_frequencies_come_from_the_checkpoint(tmp_path):
    path = save_official(esm2_model(1, 32, 2, fp16_inv_freq=True), tmp_path / "esm2_fp16freq.pt")
    ours, _ = pretrained.load_model_and_alphabet_local(path)
    stored = np.asarray(ours.layers.self_attn.rotary_frequencies[...])
    from esm_jax.model.rotary import default_inverse_frequencies

    recomputed = np.asarray(default_inverse_frequencies(16))
    assert not np.array_equal(stored[0], recomputed), "fp16-rounded frequencies must differ from recomputed ones"
    np.testing.assert_array_equal(stored[0], recomputed.astype(np.float16).astype(np.float32))


def test_fp16_checkpoint_matches_fair_esm(tmp_path):
    model = esm2_model(2, 64, 4, seed=7)
    path = save_official(model, tmp_path / "esm2_half.pt", fp16=True)
    reference = load_reference(path)
    ours, _ = pretrained.load_model_and_alphabet_local(path)
    tokens = reference_tokens()
    expected = run_reference(reference, tokens, return_contacts=True)
    got = ours(tokens, return_contacts=True)
    assert relative_error(got["logits"], expected["logits"]) < TOLERANCE
    assert relative_error(got["contacts"], expected["contacts"]) < TOLERANCE


def test_forward_is_usable_inside_a_callers_jit(pair):
    _, ours = pair
    tokens = reference_tokens()
    graphdef, state = nnx.split(ours)

    @jax.jit
    def logits(state, tokens):
        return nnx.merge(graphdef, state).forward(tokens)["logits"]

    np.testing.assert_allclose(logits(state, tokens), ours(tokens)["logits"], rtol=1e-6, atol=1e-6)
