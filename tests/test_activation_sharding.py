"""Activations are pinned through the same logical-axis rules as the parameters.

The mesh checks run on 8 CPU devices in a subprocess (:func:`tests.train_helpers.run_python`); the checks
without a mesh, or with one lacking the rules' axes, run here on one device.
"""

from __future__ import annotations

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh

from esm_jax.sharding import DEFAULT_RULES, HIDDEN_AXES, ROW_AXES, active_rules, axis_rules, constrain
from tests.train_helpers import run_python

DATA_ONLY = {**DEFAULT_RULES, "activation_batch": ("data",)}


def _one_device_mesh(axes: tuple[str, ...]) -> Mesh:
    devices = np.asarray(jax.devices()[:1]).reshape((1,) * len(axes))
    return Mesh(devices, axes, axis_types=(AxisType.Auto,) * len(axes))


def _constrained(names: tuple[str, ...], x: jax.Array) -> str:
    return str(jax.make_jaxpr(lambda x: constrain(x * 2, names))(x))


def test_default_rules_split_activations_by_example_only():
    assert active_rules() is DEFAULT_RULES
    assert [DEFAULT_RULES[name] for name in HIDDEN_AXES] == [("data", "fsdp"), None, None]


def test_constrain_is_the_identity_without_a_mesh_or_without_the_rules_axes():
    x = jnp.ones((2, 3, 4))
    assert constrain(x, HIDDEN_AXES) is x
    assert "sharding_constraint" not in _constrained(HIDDEN_AXES, x)
    with jax.set_mesh(_one_device_mesh(("data",))):
        assert "sharding_constraint" not in _constrained(HIDDEN_AXES, x)
        with axis_rules(DATA_ONLY):
            assert "sharding_constraint" in _constrained(HIDDEN_AXES, x)
    with jax.set_mesh(_one_device_mesh(("data", "fsdp", "tensor"))):
        assert "sharding_constraint" in _constrained(HIDDEN_AXES, x)


def test_axis_rules_nest_and_unknown_names_are_refused():
    with axis_rules(DATA_ONLY):
        assert active_rules()["activation_batch"] == ("data",)
        with axis_rules({**DEFAULT_RULES, "activation_batch": ["fsdp"]}):
            assert active_rules()["activation_batch"] == ("fsdp",)
        assert active_rules()["activation_batch"] == ("data",)
    assert active_rules() is DEFAULT_RULES
    parameters_only = {name: axes for name, axes in DEFAULT_RULES.items() if not name.startswith("activation")}
    mesh = _one_device_mesh(("data", "fsdp", "tensor"))
    refused = pytest.raises(ValueError, match="'activation_batch' has no sharding rule")
    with jax.set_mesh(mesh), axis_rules(parameters_only), refused:
        constrain(jnp.ones((2, 3)), ROW_AXES)
    with pytest.raises(ValueError, match="2 logical axis names"):
        constrain(jnp.ones((2, 3, 4)), ROW_AXES)


MESH_SCRIPT = textwrap.dedent(
    """
    import json, re
    import jax, jax.numpy as jnp, numpy as np
    from esm_jax.mesh import build_mesh
    from esm_jax.model import ModelConfig, build_model
    from esm_jax.sharding import DEFAULT_RULES, HIDDEN_AXES, axis_rules, constrain, shard_model

    data_only = {**DEFAULT_RULES, "activation_batch": ("data",)}
    split_length = {**DEFAULT_RULES, "activation_length": "tensor"}
    mesh = build_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    step = jax.jit(lambda x: constrain(x * 2, HIDDEN_AXES))
    x = jnp.ones((8, 4, 6))
    specs = {}
    with jax.set_mesh(mesh):
        specs["default"] = list(step(x).sharding.spec)
        with axis_rules(data_only):
            specs["data_only"] = list(step(x).sharding.spec)
        with axis_rules(split_length):
            specs["split_length"] = list(step(x).sharding.spec)

    config = ModelConfig("esm2", 2, 32, 2, 64)
    tokens = np.random.default_rng(0).integers(4, 24, size=(4, 10)).astype(np.int32)
    tokens[:, 0], tokens[:, -1], tokens[1, 6], tokens[1, 7:] = 0, 2, 2, 1
    reference = np.asarray(build_model(config, seed=1)(tokens)["logits"])
    model = shard_model(build_model(config, seed=1), build_mesh({"data": 1, "fsdp": 2, "tensor": 1}, jax.devices()[:2]))
    sharded = np.asarray(model(tokens)["logits"])

    def logits(t):
        return model.forward(t)["logits"]

    with model.mesh_context(), axis_rules(data_only):
        lowered = jax.jit(logits).lower(tokens).as_text()
        data_only_logits = np.asarray(jax.jit(logits)(tokens))
    print(json.dumps({
        "specs": specs,
        "model_constraints": sorted(set(re.findall(r"sdy.sharding_constraint %[0-9]+ <@mesh, ([^>]*)>", lowered))),
        "sharded_error": float(np.max(np.abs(sharded - reference))),
        "data_only_error": float(np.max(np.abs(data_only_logits - reference))),
        "scale": float(np.max(np.abs(reference))),
    }))
    """
)


def test_the_rules_give_the_compiled_shardings_and_a_sharded_forward_equals_one_device():
    facts = json.loads(run_python(MESH_SCRIPT, devices=8).stdout.strip().splitlines()[-1])
    # One jitted function, traced again under each table (trailing unsplit dimensions are left off).
    assert facts["specs"] == {
        "default": [["data", "fsdp"]],
        "data_only": ["data"],
        "split_length": [["data", "fsdp"], "tensor"],
    }
    # Every activation the model pins follows the active table: rows over data only, the rest whole.
    assert facts["model_constraints"] == ['[{"data"}, {}, {}]'], facts["model_constraints"]
    assert facts["sharded_error"] <= 1e-5 * facts["scale"]
    assert facts["data_only_error"] <= 1e-5 * facts["scale"]
