"""Sharded training gives the same result on any mesh, across processes, and after a change of mesh."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

from tests.train_helpers import REPO, run_python

TRAIN_AND_DUMP = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from flax import nnx
    from tests.train_helpers import tiny_config
    from esm_jax.train.trainer import train

    from jax.experimental import multihost_utils

    def dump(result, path):
        gathered = multihost_utils.process_allgather(nnx.to_pure_dict(result.state), tiled=True)
        if jax.process_index() != 0:
            return
        leaves = jax.tree_util.tree_flatten_with_path(gathered)[0]
        np.savez(path, **{jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves})
        with open(result.workdir / "metrics.jsonl") as handle:
            losses = [json.loads(line)["loss"] for line in handle if '"train"' in line]
        json.dump(losses, open(str(path) + ".losses.json", "w"))
    """
)


def _load(path):
    with np.load(path) as data:
        params = {key: data[key] for key in data.files}
    return params, json.loads(open(str(path) + ".losses.json").read())


def _assert_same(reference, other, rtol=2e-5, atol=1e-6):
    (params_a, losses_a), (params_b, losses_b) = reference, other
    np.testing.assert_allclose(losses_b, losses_a, rtol=rtol)
    assert params_a.keys() == params_b.keys()
    for key in params_a:
        np.testing.assert_allclose(params_b[key], params_a[key], rtol=rtol, atol=atol, err_msg=key)


def test_three_steps_agree_on_every_mesh_and_one_device(tmp_path):
    run_python(TRAIN_AND_DUMP + f"dump(train(tiny_config(), {str(tmp_path / 'one')!r}), {str(tmp_path / 'one.npz')!r})")
    meshes = {"8x1x1": (8, 1, 1), "2x4x1": (2, 4, 1), "2x2x2": (2, 2, 2)}
    script = TRAIN_AND_DUMP + textwrap.dedent(
        f"""
        for name, (data, fsdp, tensor) in {meshes!r}.items():
            config = tiny_config()
            config.mesh.update(data=data, fsdp=fsdp, tensor=tensor)
            result = train(config, {str(tmp_path)!r} + "/" + name)
            kernel = result.state["model"]["layers"]["fc1"]["kernel"][...]
            assert len(kernel.sharding.device_set) == 8
            dump(result, {str(tmp_path)!r} + "/" + name + ".npz")
        """
    )
    run_python(script, devices=8)
    reference = _load(tmp_path / "one.npz")
    assert len(reference[1]) == 3
    for name in meshes:
        _assert_same(reference, _load(tmp_path / f"{name}.npz"))


def test_a_checkpoint_saved_on_one_mesh_restores_onto_another(tmp_path):
    script = TRAIN_AND_DUMP + textwrap.dedent(
        f"""
        workdir = {str(tmp_path / "run")!r}
        config = tiny_config(total_steps=2)
        config.mesh.update(data=2, fsdp=4, tensor=1)
        saved = train(config, workdir)
        config = tiny_config(total_steps=2)
        config.mesh.update(data=8, fsdp=1, tensor=1)
        restored = train(config, workdir)
        assert restored.step == 2
        kernel = restored.state["model"]["layers"]["fc1"]["kernel"][...]
        assert dict(kernel.sharding.mesh.shape) == dict(data=8, fsdp=1, tensor=1), kernel.sharding.mesh
        for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(saved.state)[0], jax.tree.leaves(restored.state)):
            assert np.array_equal(np.asarray(a), np.asarray(b)), jax.tree_util.keystr(path)
        print("ok")
        """
    )
    assert run_python(script, devices=8).stdout.strip().endswith("ok")


def test_two_processes_equal_one_process_with_the_same_devices(tmp_path):
    processes = 2
    run_python(
        TRAIN_AND_DUMP + f"dump(train(tiny_config(), {str(tmp_path / 'single')!r}), {str(tmp_path / 'single.npz')!r})",
        devices=4,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workers = []
    for rank in range(processes):
        script = TRAIN_AND_DUMP + textwrap.dedent(
            f"""
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
            jax.distributed.initialize("127.0.0.1:{port}", num_processes={processes}, process_id={rank})
            assert jax.device_count() == 4 and jax.local_device_count() == 2
            dump(train(tiny_config(), {str(tmp_path / "multi")!r}), {str(tmp_path / "multi.npz")!r})
            """
        )
        env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
        workers.append(
            subprocess.Popen(
                [sys.executable, "-c", script],
                cwd=REPO,
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for worker in workers:
        _, error = worker.communicate(timeout=600)
        assert worker.returncode == 0, error[-4000:]
    _assert_same(_load(tmp_path / "single.npz"), _load(tmp_path / "multi.npz"))
