"""Model options keep their promises: scan equals unrolled, bfloat16 stays in budget, shapes match the releases."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from flax import nnx

from esm_jax import Alphabet, ModelConfig, build_model
from esm_jax.checkpoints import fair_esm
from esm_jax.model import NAMED_MODELS, abstract_model
from esm_jax.sharding import DEFAULT_RULES, LOGICAL_AXES, logical_axes
from tests.fair_esm_reference import fair_esm_model, relative_error, torch

SEQUENCES = [("a", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKV"), ("b", "MKL<mask>AGHHTTK")]
TOKENS = Alphabet().get_batch_converter()(SEQUENCES)[2]
# bfloat16 compute (float32 parameters, softmax and LayerNorm) against float32, measured as
# max |difference| / max |float32 value| on 6-layer random models.
BFLOAT16_BUDGET = {"logits": 2e-2, "representations": 2e-2, "attentions": 1e-2, "contacts": 1e-2}


@pytest.mark.parametrize("architecture", ["esm2", "esm1b"])
def test_scanned_layers_equal_the_unrolled_loop(architecture):
    config = ModelConfig(architecture, 4, 64, 4, 128, emb_layer_norm_before=architecture == "esm1b")
    unrolled = build_model(config.replace(scan_layers=False), seed=1)
    scanned = build_model(config.replace(scan_layers=True), seed=1)
    layers = [0, 1, 3, -1]
    a = unrolled(TOKENS, repr_layers=layers, return_contacts=True)
    b = scanned(TOKENS, repr_layers=layers, return_contacts=True)
    assert sorted(b["representations"]) == [0, 1, 3, 4]
    for layer in (0, 1, 3, 4):
        assert relative_error(b["representations"][layer], a["representations"][layer]) < 1e-6
    for key in ("logits", "attentions", "contacts"):
        assert relative_error(b[key], a[key]) < 1e-6


@pytest.mark.parametrize("architecture", ["esm2", "esm1b"])
def test_final_hidden_states_at_positions_equal_the_full_forward(architecture):
    config = ModelConfig(architecture, 3, 64, 4, 128, emb_layer_norm_before=architecture == "esm1b")
    model = build_model(config, seed=3)
    positions = np.array([[5, 0, 60, 31], [4, 12, 1, 4]], dtype=np.int32)  # row b: <mask> at 4, <eos> at 12
    full = np.asarray(model(TOKENS, repr_layers=[3])["representations"][3])
    picked = np.take_along_axis(full, positions[:, :, None], axis=1)
    got = np.asarray(jax.jit(model.final_hidden_at)(TOKENS, positions))
    assert got.shape == (2, 4, 64)
    np.testing.assert_allclose(got, picked, atol=2e-6 * np.abs(full).max(), rtol=0)
    many = np.tile(positions, 16)  # more positions than tokens: the full forward, indexed
    got = np.asarray(jax.jit(model.final_hidden_at)(TOKENS, many))
    np.testing.assert_allclose(got, np.tile(picked, (1, 16, 1)), atol=2e-6 * np.abs(full).max(), rtol=0)


@pytest.mark.parametrize("architecture", ["esm2", "esm1b"])
def test_bfloat16_compute_stays_within_its_error_budget(architecture):
    config = ModelConfig(architecture, 6, 128, 8, 512, emb_layer_norm_before=architecture == "esm1b")
    full = build_model(config, seed=2)
    half = build_model(config.replace(compute_dtype="bfloat16"), seed=2)
    a = full(TOKENS, repr_layers=[6], return_contacts=True)
    b = half(TOKENS, repr_layers=[6], return_contacts=True)
    assert b["logits"].dtype == np.float32
    errors = {
        "logits": relative_error(b["logits"], a["logits"]),
        "representations": relative_error(b["representations"][6], a["representations"][6]),
        "attentions": relative_error(b["attentions"], a["attentions"]),
        "contacts": relative_error(b["contacts"], a["contacts"]),
    }
    assert all(errors[key] < BFLOAT16_BUDGET[key] for key in errors), errors
    assert errors["logits"] > 0, "bfloat16 compute must actually differ from float32"
    jaxpr = str(jax.make_jaxpr(lambda t: half.forward(t))(TOKENS))
    assert "bf16" in jaxpr and "preferred_element_type=float32" in jaxpr


def test_every_variable_carries_known_logical_axes():
    for architecture in ("esm1b", "esm2"):
        model = build_model(ModelConfig(architecture, 2, 32, 2, 64, emb_layer_norm_before=architecture == "esm1b"))
        for path, variable in nnx.to_flat_state(nnx.state(model)):
            names = logical_axes(variable)
            assert len(names) == variable.shape.__len__(), path
            assert all(name is None or name in LOGICAL_AXES for name in names), (path, names)
            assert set(LOGICAL_AXES) == set(DEFAULT_RULES)
            if path[0] == "layers":
                assert names[0] == "layers", path


def test_named_shapes_match_the_released_fair_esm_models():
    for name, config in NAMED_MODELS.items():
        released = config.replace(emb_layer_norm_before=config.architecture == "esm1b")  # as every ESM-1b/1v file
        with torch.device("meta"):
            reference = fair_esm_model(released)
        expected = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
        model = abstract_model(config)
        pure = nnx.to_pure_dict(nnx.state(model))
        for slot in fair_esm.model_slots(config) + fair_esm.CONTACT_SLOTS:
            value = pure
            for key in slot.path:
                value = value[key]
            shape = value.shape[1:] if slot.per_layer else value.shape
            shape = tuple(reversed(shape)) if slot.transpose else tuple(shape)
            for external in slot.names(config.num_layers):
                assert expected[external] == shape, (name, external)
        trainable = sum(p.numel() for n, p in reference.named_parameters())
        assert config.num_parameters() == trainable, name


def test_small_released_shapes_build_with_random_weights():
    model = build_model("esm2_t6_8M_UR50D", seed=0)
    out = model(TOKENS, repr_layers=[-1])
    assert out["representations"][6].shape == (2, TOKENS.shape[1], 320)


def test_out_of_range_layers_and_overlong_inputs_are_refused():
    model = build_model(ModelConfig("esm1b", 2, 32, 2, 64, max_positions=16))
    with pytest.raises(ValueError, match="layers 0..2"):
        model(TOKENS[:, :10], repr_layers=[3])
    assert sorted(model(TOKENS[:, :10], repr_layers=[-1, -3])["representations"]) == [0, 2]
    with pytest.raises(ValueError, match="exceeds this model's maximum of 16"):
        model(TOKENS)


def test_sharded_model_on_eight_devices_matches_one_device():
    script = textwrap.dedent(
        """
        import jax, numpy as np
        from jax.sharding import AxisType
        from esm_jax import Alphabet, ModelConfig, build_model
        from esm_jax.sharding import shard_model
        tokens = Alphabet().get_batch_converter()([("a", "MKTAYIAKQRQISFV"), ("b", "MKL")])[2]
        model = build_model(ModelConfig("esm2", 2, 64, 4, 128), seed=0)
        expected = model(tokens, return_contacts=True)
        mesh = jax.make_mesh((2, 4), ("fsdp", "tensor"), axis_types=(AxisType.Auto,) * 2)
        shard_model(model, mesh)
        kernel = model.layers.fc1.kernel[...]
        assert len(jax.devices()) == 8 and len(kernel.sharding.device_set) == 8
        assert kernel.addressable_shards[0].data.shape == (2, 32, 128 // 4)
        got = model(tokens, return_contacts=True)
        for key in ("logits", "contacts"):
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-5)
        print("ok")
        """
    )
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_bfloat16_matmuls_accumulate_into_float32_outputs():
    """bf16 × bf16 → bf16 products miss XLA:CPU's AVX-512 BF16 GEMM and run slower than float32."""
    config = ModelConfig("esm2", 2, 64, 4, 128, compute_dtype="bfloat16")
    model = build_model(config, seed=3)
    text = jax.jit(lambda t: model.forward(t, (2,))).lower(TOKENS).as_text()
    signatures = [line.rsplit(":", 1)[-1] for line in text.splitlines() if "stablehlo.dot_general" in line]
    results = [signature.split("->")[-1] for signature in signatures]
    assert any("bf16" in signature.split("->")[0] for signature in signatures)
    assert not [result for result in results if "bf16" in result], results
