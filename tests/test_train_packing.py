"""Training and evaluation steps take packed rows: the same sequences packed or one per row give the same step."""

from __future__ import annotations

import json

import jax
import numpy as np
from flax import nnx

from esm_jax.mesh import batch_sharding, build_mesh
from esm_jax.model import ModelConfig
from esm_jax.sharding import state_shardings
from esm_jax.train.metrics import train_flops
from esm_jax.train.optimizer import learning_rate_schedule, make_optimizer
from esm_jax.train.state import abstract_state, initialise
from esm_jax.train.step import make_eval_step, make_train_step
from esm_jax.train.trainer import train
from tests.synthetic_batches import SyntheticBatches, pack_pairs
from tests.train_helpers import tiny_config


def _steps(config):
    run = tiny_config()
    tx = make_optimizer(run.optimizer, 10)
    model_config = ModelConfig.from_dict(run.model.to_dict()).replace(**config)
    graphdef, abstract = abstract_state(model_config, tx)
    mesh = build_mesh({"data": 1, "fsdp": 1, "tensor": 1})
    shardings = state_shardings(abstract, mesh)
    sharding = batch_sharding(mesh)
    step = make_train_step(graphdef, shardings, sharding, 2, learning_rate_schedule(run.optimizer, 10))
    evaluate = make_eval_step(graphdef, shardings, sharding)
    return model_config, tx, shardings, step, evaluate


def test_a_packed_train_step_equals_the_same_sequences_one_per_row():
    one_per_row = next(SyntheticBatches(seed=3, start=0, limit=None))
    packed = pack_pairs(one_per_row)
    assert packed["tokens"].shape == (4, 64)
    results = {}
    for kernel in ("dense", "per_head"):
        model_config, tx, shardings, step, evaluate = _steps({"attention_impl": kernel})
        for name, batch in (("one per row", one_per_row), ("packed", packed)):
            state = initialise(model_config, tx, shardings, seed=0)
            sums = jax.device_get(evaluate(state, batch))
            state, metrics = step(state, batch)
            params = nnx.to_pure_dict(nnx.state(state, nnx.Param))
            results[kernel, name] = (jax.device_get(metrics), sums, jax.device_get(params))
    reference_metrics, reference_sums, reference_params = results["dense", "one per row"]
    lengths = np.sum(one_per_row["tokens"] != 1, axis=1)
    assert reference_metrics["attention_pairs"] == np.sum(lengths**2)
    for key, (metrics, sums, params) in results.items():
        assert metrics["tokens"] == lengths.sum() and metrics["attention_pairs"] == np.sum(lengths**2), key
        assert metrics["padded_tokens"] == one_per_row["tokens"].size, key
        for name in ("loss_sum", "targets", "correct", "grad_norm"):
            np.testing.assert_allclose(metrics[name], reference_metrics[name], rtol=1e-5, err_msg=f"{key} {name}")
        for name in ("loss_sum", "targets", "target_counts"):
            np.testing.assert_allclose(sums[name], reference_sums[name], rtol=1e-5, err_msg=f"{key} {name}")
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, reference_params)


def test_training_on_packed_batches_logs_real_and_padded_throughput(tmp_path):
    config = tiny_config(total_steps=2)
    config.data.factory = "tests.synthetic_batches:packed_batches"
    result = train(config, tmp_path / "run")
    assert result.step == 2 and np.isfinite(result.last_heldout["ece"])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [record for record in records if record["split"] == "train"][-1]
    assert 0 < logged["tokens_per_second"] < logged["padded_tokens_per_second"]
    assert 0 < logged["real_token_fraction"] < 1
    # Attention FLOPs follow each sequence's own length (< 32), not the packed row's width (64).
    flops_per_real_token = logged["model_flops_per_second"] / logged["tokens_per_second"]
    assert flops_per_real_token < train_flops(ModelConfig.from_dict(config.model.to_dict()), 1, 32)
