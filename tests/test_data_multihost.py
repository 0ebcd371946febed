"""Two real JAX processes (gloo collectives on CPU) read disjoint shards and agree on every batch shape."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from collections import Counter

from data_pipeline.input.shard_reader import read_split

WORKER = textwrap.dedent(
    """
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    import jax
    import numpy as np
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    data_dir, port, process_id, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from data_pipeline.input.input_pipeline import MlmBatchIterator, PipelineConfig
    config = PipelineConfig(split="validation", token_budget=4096, block_records=256, repeat=False, include_ids=True)
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))
    ids, shapes, global_shapes = [], [], []
    with MlmBatchIterator(data_dir, config) as iterator:
        for batch in iterator:
            ids += [i.decode() for i in batch["ids"][batch["residues"] > 0]]
            shapes.append(list(batch["tokens"].shape))
            arrays = {k: jax.make_array_from_process_local_data(sharding, batch[k]) for k in ("tokens", "loss_mask")}
            global_shapes.append(list(arrays["tokens"].shape))
    json.dump({"ids": ids, "shapes": shapes, "global_shapes": global_shapes}, open(out, "w"))
    jax.distributed.shutdown()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_read_disjoint_shards_covering_the_split_with_equal_shapes(uniref_sample_datasets, tmp_path):
    data_dir, port = uniref_sample_datasets["ur100"], _free_port()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(data_dir), str(port), str(i), str(tmp_path / f"{i}.json")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    logs = [worker.communicate(timeout=240)[0].decode(errors="replace") for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    results = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]
    first, second = (set(r["ids"]) for r in results)
    assert first and second and not first & second
    expected = Counter(e["id"] for e in read_split(data_dir, "validation"))
    assert Counter(results[0]["ids"]) + Counter(results[1]["ids"]) == expected
    assert results[0]["shapes"] == results[1]["shapes"]
    assert results[0]["global_shapes"] == [[2 * rows, length] for rows, length in results[0]["shapes"]]
