"""Packed rows give every sequence exactly what it gets alone, with every attention kernel that runs on a CPU.

The reference is fair-esm run on the same sequences one per row (float32, 1e-4), outputs and MLM
gradients alike; splash runs in Pallas interpret mode and cuDNN's call runs through XLA.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from esm_jax import pretrained
from esm_jax.model import attention_kernels
from esm_jax.model.packing import check_packed_rows, segment_positions, segment_sums
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
from tests.train_helpers import run_python

TOLERANCE = 1e-4
# Masked tokens, a 1-residue sequence and one of every length class; rows end in a padding tail.
SEQUENCES = [
    ("a", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV"),
    ("b", "MK<mask>AYIA<mask>KQ"),
    ("c", "G"),
    ("d", "MKTA<mask>IAKQRQ<mask>SFVKSH"),
    ("e", "XBUZO.-LAG"),
]
ROWS = [[0, 1], [2, 3, 4]]  # which sequences share a row
ROW_WIDTH = 72
SHAPES = {
    "esm2": lambda: esm2_model(2, 64, 4, seed=11),
    "esm1b": lambda: esm1b_model(2, 64, 4, 128, seed=12),
}
KERNELS = ("dense", "per_head", "splash")


def packed_batch() -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """``tokens``, ``segment_ids`` and (sequence, row, start) of each sequence in its packed row."""
    alone = [reference_tokens([record])[0] for record in SEQUENCES]
    tokens = np.full((len(ROWS), ROW_WIDTH), 1, np.int32)
    segments = np.zeros((len(ROWS), ROW_WIDTH), np.int32)
    places = []
    for row, members in enumerate(ROWS):
        start = 0
        for k, index in enumerate(members, start=1):
            length = len(alone[index])
            tokens[row, start : start + length] = alone[index]
            segments[row, start : start + length] = k
            places.append((index, row, start))
            start += length
        assert start < ROW_WIDTH  # every row keeps a padding tail
    return tokens, segments, places


@pytest.fixture(scope="module", params=sorted(SHAPES))
def models(request, tmp_path_factory):
    """(fair-esm model, esm-jax models by kernel) loaded from one official file."""
    prefix = "esm2" if request.param == "esm2" else "esm1b"
    path = save_official(SHAPES[request.param](), tmp_path_factory.mktemp(request.param) / f"{prefix}_pack.pt")
    ours = {kernel: pretrained.load_model_and_alphabet_local(path, attention_impl=kernel)[0] for kernel in KERNELS}
    for kernel in ("dense", "splash"):
        ours[f"{kernel} bfloat16"], _ = pretrained.load_model_and_alphabet_local(
            path, attention_impl=kernel, compute_dtype="bfloat16"
        )
    return load_reference(path), ours


@pytest.mark.parametrize("kernel", KERNELS)
def test_packed_rows_equal_each_sequence_alone_in_fair_esm(models, kernel):
    reference, ours = models
    padded = reference_tokens(SEQUENCES)
    layers = [0, ours[kernel].num_layers]
    expected = run_reference(reference, padded, repr_layers=layers)
    tokens, segments, places = packed_batch()
    got = ours[kernel](tokens, repr_layers=layers, segment_ids=segments)
    for index, row, start in places:
        length = int(np.sum(padded[index] != 1))
        span = slice(start, start + length)
        assert relative_error(got["logits"][row, span], expected["logits"][index, :length]) < TOLERANCE
        for layer in layers:
            ours_layer = got["representations"][layer][row, span]
            assert relative_error(ours_layer, expected["representations"][layer][index, :length]) < TOLERANCE


@pytest.mark.parametrize("kernel", KERNELS)
def test_packed_mlm_gradients_equal_fair_esm_on_each_sequence_alone(models, kernel):
    reference, ours = models
    padded = reference_tokens(SEQUENCES)
    inputs, selected = masked_lm_inputs(padded)
    loss, expected = reference_mlm_gradients(reference, inputs, padded, selected, reduction="sum")

    tokens, segments, places = packed_batch()
    packed_inputs, packed_targets = np.full_like(tokens, 1), np.full_like(tokens, 1)
    packed_selected = np.zeros(tokens.shape, bool)
    for index, row, start in places:
        length = int(np.sum(padded[index] != 1))
        packed_inputs[row, start : start + length] = inputs[index, :length]
        packed_targets[row, start : start + length] = padded[index, :length]
        packed_selected[row, start : start + length] = selected[index, :length]

    def loss_fn(model):
        out = model.forward(jnp.asarray(packed_inputs), segment_ids=jnp.asarray(segments))
        per_token = optax.softmax_cross_entropy_with_integer_labels(out["logits"], jnp.asarray(packed_targets))
        return jnp.sum(per_token * packed_selected)

    model = ours[kernel]
    our_loss, grads = nnx.value_and_grad(loss_fn)(model)
    assert abs(float(our_loss) - loss) < TOLERANCE * abs(loss)
    errors = gradient_errors(exported_gradients(model, grads), expected)
    assert all(error < TOLERANCE for error in errors.values()), errors


def test_unpacked_padded_batches_agree_across_kernels(models):
    _, ours = models
    tokens = reference_tokens(SEQUENCES)
    dense = ours["dense"](tokens, repr_layers=[-1])
    for kernel in ("per_head", "splash"):
        got = ours[kernel](tokens, repr_layers=[-1])
        real = tokens != 1  # splash lets padding attend to padding only; real positions are exact
        assert relative_error(got["logits"][real], dense["logits"][real]) < 1e-5


def test_cudnn_call_through_xla_equals_dense_attention():
    rng = np.random.default_rng(0)
    query, key, value = (jnp.asarray(rng.normal(size=(2, 24, 3, 8)), jnp.float32) for _ in range(3))
    segments = jnp.asarray(np.repeat([[1] * 10 + [2] * 9 + [0] * 5], 2, axis=0))
    padding = segments == 0
    for ids in (segments, None):
        dense, _ = attention_kernels.dense_attention(query, key, value, ids, padding, jnp.float32)
        fused = attention_kernels.cudnn_attention(query, key, value, ids, padding, jnp.float32, implementation="xla")
        np.testing.assert_allclose(fused, dense, rtol=1e-5, atol=1e-6)


def test_auto_picks_the_fused_kernel_of_each_platform_and_refuses_foreign_ones():
    assert attention_kernels.resolve("auto", "cpu") == "per_head"
    assert attention_kernels.resolve("auto", "tpu") == "splash"
    assert attention_kernels.resolve("auto", "gpu", jnp.bfloat16) == "cudnn"
    assert attention_kernels.resolve("auto", "gpu", jnp.float32) == "dense"  # cuDNN takes 16-bit inputs only
    with pytest.raises(ValueError, match="cudnn.*takes bfloat16 or float16.*not float32"):
        attention_kernels.resolve("cudnn", "gpu", jnp.float32)
    with pytest.raises(ValueError, match="splash.*cannot run on a GPU"):
        attention_kernels.resolve("splash", "gpu")
    with pytest.raises(ValueError, match="cudnn.*needs an NVIDIA GPU.*'tpu'"):
        attention_kernels.resolve("cudnn", "tpu")
    with attention_kernels.compiling_for("tpu"):
        assert attention_kernels.resolve("auto") == "splash"
    assert attention_kernels.resolve("auto") == "per_head"


def test_segment_positions_and_sums_restart_at_every_sequence():
    segments = jnp.asarray([[1, 1, 1, 2, 2, 3, 0, 0]])
    np.testing.assert_array_equal(segment_positions(segments), [[0, 1, 2, 0, 1, 0, 0, 1]])
    np.testing.assert_array_equal(segment_sums(jnp.ones_like(segments), segments), [[3, 3, 3, 2, 2, 1, 2, 2]])


def test_bad_segment_ids_are_refused_with_row_and_position(models):
    _, ours = models
    model = ours["dense"]
    tokens, segments, _ = packed_batch()
    with pytest.raises(ValueError, match=r"segment_ids of shape \(2, 71\) do not match tokens of shape \(2, 72\)"):
        model(tokens, segment_ids=segments[:, :-1])
    no_eos = segments.copy()
    first_length = int(np.sum(segments[0] == 1))
    no_eos[0, first_length] = 1  # the second sequence's <cls> joins the first
    with pytest.raises(ValueError, match="row 0 of the packed batch: segment 1 at positions 0..34 does not run"):
        model(tokens, segment_ids=no_eos)
    on_padding = segments.copy()
    on_padding[1, -1] = 3
    with pytest.raises(ValueError, match="row 1 of the packed batch, position 71: segment id 3 on token 1"):
        model(tokens, segment_ids=on_padding)
    with pytest.raises(ValueError, match="contacts are predicted per sequence"):
        model(tokens, segment_ids=segments, return_contacts=True)


def test_a_packed_sequence_longer_than_learned_positions_is_refused():
    tokens = np.full((1, 12), 5, np.int32)
    tokens[0, [0, 6]], tokens[0, [5, 11]] = 0, 2
    segments = np.array([[1] * 6 + [2] * 6])
    check_packed_rows(tokens, segments, cls_idx=0, eos_idx=2, padding_idx=1, max_tokens=6)
    with pytest.raises(ValueError, match="segment 1 has 6 tokens, more than this model's 5 positions"):
        check_packed_rows(tokens, segments, cls_idx=0, eos_idx=2, padding_idx=1, max_tokens=5)


SHARDED_SPLASH = """
import jax, numpy as np
from esm_jax.model import ModelConfig, build_model
from esm_jax.sharding import shard_model
from esm_jax.mesh import build_mesh
from tests.test_model_packing import packed_batch

tokens, segments, _ = packed_batch()
tokens, segments = np.tile(tokens, (4, 1)), np.tile(segments, (4, 1))
config = ModelConfig(architecture="esm2", num_layers=2, embed_dim=32, attention_heads=2, ffn_embed_dim=64)
alone = build_model(config.replace(attention_impl="dense"), seed=3)(tokens, segment_ids=segments)["logits"]
model = build_model(config.replace(attention_impl="splash"), seed=3)
mesh = build_mesh({"data": 2, "fsdp": 2, "tensor": 2})
with jax.set_mesh(mesh):
    shard_model(model, mesh)
    sharded = model(tokens, segment_ids=segments)["logits"]
real = tokens != 1
error = np.abs(np.asarray(sharded)[real] - np.asarray(alone)[real]).max() / np.abs(np.asarray(alone)).max()
assert error < 1e-5, error
print("ok", error)
"""


def test_splash_runs_per_device_on_a_data_fsdp_tensor_mesh():
    result = run_python(SHARDED_SPLASH, devices=8)
    assert result.stdout.startswith("ok")


def test_attention_maps_take_the_exact_dense_path_whatever_the_kernel(models):
    _, ours = models
    tokens, segments, _ = packed_batch()
    dense = ours["dense"](tokens, need_head_weights=True, segment_ids=segments)["attentions"]
    splash = ours["splash"](tokens, need_head_weights=True, segment_ids=segments)["attentions"]
    np.testing.assert_array_equal(splash, dense)
    other_sequence = segments[0][None, :] != segments[0][:, None]
    assert np.all(np.asarray(dense)[0, :, :, other_sequence] == 0)


def test_bfloat16_splash_is_as_close_to_float32_as_dense_bfloat16(models):
    """These test weights are N(0, 0.2), far rougher than trained ones, so bfloat16 errors are a few 1e-2 here."""
    _, ours = models
    tokens, segments, _ = packed_batch()
    real = tokens != 1

    def logits(kernel: str) -> np.ndarray:
        return np.asarray(ours[kernel](tokens, segment_ids=segments)["logits"], np.float32)[real]

    errors = {half: relative_error(logits(half), logits("dense")) for half in ("dense bfloat16", "splash bfloat16")}
    assert errors["splash bfloat16"] < 1.5 * errors["dense bfloat16"] < 6e-2, errors
