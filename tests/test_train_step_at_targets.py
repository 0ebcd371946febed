"""A training step told the masking rule runs the last block only at the loss positions, and trains exactly as
the whole step does: on batches the rule masked, and on batches with a row beyond the rule's bound."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from data_pipeline.input.masking import mask_batch
from data_pipeline.input.tokenization import ResidueTable
from esm_jax.masking_rule import MaskingRule
from esm_jax.mesh import batch_sharding, build_mesh
from esm_jax.model import ModelConfig
from esm_jax.sharding import state_shardings
from esm_jax.train import step as train_step
from esm_jax.train.optimizer import learning_rate_schedule, make_optimizer
from esm_jax.train.state import abstract_state, initialise
from tests.train_helpers import tiny_config

ROWS, LENGTH = 4, 40
RULE = MaskingRule()


def _masked_batch(seed: int) -> dict[str, np.ndarray]:
    """Rows of random residues masked by the input pipeline's rule; the first row fills the whole width."""
    rng = np.random.default_rng(seed)
    residues = rng.integers(12, LENGTH - 2, size=ROWS)
    residues[0] = LENGTH - 2
    tokens = np.full((ROWS, LENGTH), 1, np.int32)
    for row, count in enumerate(residues):
        tokens[row, 0], tokens[row, 1 : count + 1], tokens[row, count + 1] = 0, rng.integers(4, 24, count), 2
    return mask_batch(tokens, residues, np.arange(ROWS), seed, ResidueTable(), RULE)


def _overflowing_batch(seed: int) -> dict[str, np.ndarray]:
    """A masked batch whose second row has twice the positions the rule can select in a full row."""
    batch = _masked_batch(seed)
    tokens, targets, mask = (batch[key].copy() for key in ("tokens", "targets", "loss_mask"))
    row = 1
    residues = np.flatnonzero((tokens[row] > 3) & (mask[row] == 0))
    extra = residues[: 2 * RULE.most_selected(LENGTH - 2)]
    targets[row, extra], tokens[row, extra], mask[row, extra] = tokens[row, extra], 32, 1.0
    assert mask[row].sum() > RULE.most_selected(LENGTH - 2)
    return {"tokens": tokens, "targets": targets, "loss_mask": mask}


def _setup(architecture: str, remat_policy: str = "none"):
    """A 3-layer model's config, optimiser, graph, state shardings and mesh."""
    config = ModelConfig(
        architecture, 3, 32, 2, 64, emb_layer_norm_before=architecture == "esm1b", remat_policy=remat_policy
    )
    tx = make_optimizer(tiny_config().optimizer, 10)
    graphdef, abstract = abstract_state(config, tx)
    mesh = build_mesh({"data": 1, "fsdp": 1, "tensor": 1})
    return config, tx, graphdef, state_shardings(abstract, mesh), mesh


def test_the_rule_bounds_the_selected_positions_of_every_masked_row():
    for seed in range(20):
        batch = _masked_batch(seed)
        residues = np.sum(batch["targets"] != 1, axis=1)  # targets hold an id at selected positions only
        assert np.all(residues <= RULE.most_selected(LENGTH - 2))
        assert residues[0] >= RULE.most_selected(LENGTH - 2) - 1


@pytest.mark.parametrize("architecture", ["esm2", "esm1b"])
def test_the_loss_and_gradients_at_the_targets_equal_the_whole_forwards(architecture):
    model_config, tx, graphdef, shardings, _ = _setup(architecture)
    state = initialise(model_config, tx, shardings, seed=0)
    model_graphdef, params, rest = nnx.split(nnx.merge(graphdef, state).model, nnx.Param, ...)
    batch = _masked_batch(seed=1)
    capacity = RULE.most_selected(LENGTH - 2)

    def whole(params):
        return train_step._loss_sums(params, model_graphdef, rest, batch)

    def at_targets(params):
        return train_step._loss_sums_at_targets(params, model_graphdef, rest, batch, capacity)

    (loss, (count, correct)), grads = jax.value_and_grad(whole, has_aux=True)(params)
    (loss_at, (count_at, correct_at)), grads_at = jax.value_and_grad(at_targets, has_aux=True)(params)
    assert count_at == count == batch["loss_mask"].sum() and correct_at == correct
    np.testing.assert_allclose(loss_at, loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads_at, grads)


@pytest.mark.parametrize(
    "architecture, accumulation, remat_policy", [("esm2", 1, "none"), ("esm1b", 2, "none"), ("esm2", 2, "full")]
)
def test_a_step_told_the_masking_rule_trains_as_the_whole_step(architecture, accumulation, remat_policy):
    model_config, tx, graphdef, shardings, mesh = _setup(architecture, remat_policy)
    schedule = learning_rate_schedule(tiny_config().optimizer, 10)
    steps = {
        rule: train_step.make_train_step(graphdef, shardings, batch_sharding(mesh), accumulation, schedule, rule)
        for rule in (None, RULE)
    }
    for batch in (_masked_batch(seed=2), _overflowing_batch(seed=3)):
        assert train_step._target_capacity(batch, RULE) == RULE.most_selected(LENGTH - 2)
        results = {}
        for rule, step in steps.items():
            state, metrics = step(initialise(model_config, tx, shardings, seed=0), batch)
            results[rule] = jax.device_get(metrics), jax.device_get(nnx.to_pure_dict(nnx.state(state, nnx.Param)))
        (metrics, params), (reference_metrics, reference_params) = results[RULE], results[None]
        assert metrics["targets"] == reference_metrics["targets"] == batch["loss_mask"].sum()
        for name in ("loss_sum", "correct", "grad_norm", "finite"):
            np.testing.assert_allclose(metrics[name], reference_metrics[name], rtol=1e-5, err_msg=name)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, reference_params)


def _equations(jaxpr):
    """Every equation of ``jaxpr`` and of the jaxprs inside it (loop bodies, branches, custom gradients)."""
    for equation in jaxpr.eqns:
        yield equation
        for value in equation.params.values():
            for inner in value if isinstance(value, tuple) else (value,):
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def _at_targets_gradient():
    """The jaxpr of a 3-layer ESM-2's at-targets loss gradient, with the model's config and parameters."""
    model_config, tx, graphdef, shardings, _ = _setup("esm2")
    state = initialise(model_config, tx, shardings, seed=0)
    model_graphdef, params, rest = nnx.split(nnx.merge(graphdef, state).model, nnx.Param, ...)
    batch = _masked_batch(seed=1)
    capacity = RULE.most_selected(LENGTH - 2)

    def at_targets(params):
        return train_step._loss_sums_at_targets(params, model_graphdef, rest, batch, capacity)[0]

    return jax.make_jaxpr(jax.grad(at_targets))(params).jaxpr, model_config, params


def test_the_gradient_at_the_targets_slices_each_layers_weights_again_instead_of_keeping_them():
    jaxpr, model_config, params = _at_targets_gradient()
    scanned = [tuple(out.aval.shape) for eq in _equations(jaxpr) if eq.primitive.name == "scan" for out in eq.outvars]
    layers = model_config.num_layers
    weights = {tuple(leaf.shape[1:]) for leaf in jax.tree.leaves(params["layers"])}
    assert any(shape[:2] == (layers - 1, ROWS) for shape in scanned)  # but the forward does keep activations
    assert not [shape for shape in scanned if shape[0] == layers - 1 and shape[1:] in weights]


def test_the_last_layers_weight_gradient_goes_into_the_stacks_in_place_not_as_a_padded_stack():
    jaxpr, _, params = _at_targets_gradient()
    stacked = {tuple(leaf.shape) for leaf in jax.tree.leaves(params["layers"])}
    padded = [
        eq.outvars[0].aval.shape
        for eq in _equations(jaxpr)
        if eq.primitive.name == "pad" and tuple(eq.outvars[0].aval.shape) in stacked
    ]
    assert not padded
