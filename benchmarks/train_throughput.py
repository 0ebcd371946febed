"""Training throughput of esm-jax against a PyTorch fair-esm training step, and compile times.

CPU part: the same model shape, weights and batch; one step = forward, backward and an AdamW
update, on full rows masked as the input pipeline masks them. esm-jax runs its real jitted train step
(float32, layers scanned, no rematerialisation), told that masking rule, so its last block runs only at the
loss positions (:mod:`esm_jax.train.step`); PyTorch runs fair-esm's model with ``torch.optim.AdamW``.
Compilation and the first step are excluded; steps alternate, one of each per round (for the 650M shape,
whose two optimiser states do not fit in memory together, esm-jax's steps run first, then PyTorch's), and
the table gives median tokens/s and the min–max of the ratios of round i's steps. Compile part: seconds to
compile the 33-layer ESM-1b training step, as the trainer builds it, with ``scan_layers`` on and off
(abstract inputs, nothing executed).

    python benchmarks/train_throughput.py            # t12 and ESM-1b 650M throughput, compile times
    python benchmarks/train_throughput.py --quick    # t12 only, no compile-time part
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.forward_throughput import reference_model  # noqa: E402
from benchmarks.settled import SETTLE_SECONDS, settled_run  # noqa: E402
from data_pipeline.input.masking import mask_batch  # noqa: E402
from data_pipeline.input.tokenization import ResidueTable  # noqa: E402
from esm_jax.checkpoints import fair_esm  # noqa: E402
from esm_jax.checkpoints.tensor_map import build_from_tensors  # noqa: E402
from esm_jax.host_allocator import allocator_setting  # noqa: E402
from esm_jax.masking_rule import MaskingRule  # noqa: E402
from esm_jax.mesh import batch_sharding, build_mesh  # noqa: E402
from esm_jax.model import named_config  # noqa: E402
from esm_jax.sharding import (  # noqa: E402
    DEFAULT_RULES,
    state_shardings,
    with_shardings,  # noqa: E402
)
from esm_jax.train.metrics import train_flops_per_token  # noqa: E402
from esm_jax.train.optimizer import learning_rate_schedule, make_optimizer  # noqa: E402
from esm_jax.train.state import TrainState, abstract_state  # noqa: E402
from esm_jax.train.step import make_train_step  # noqa: E402

CASES = {"esm2_t12_35M_UR50D": (4, 256), "esm1b_t33_650M_UR50S": (1, 512)}
MASKING_RULE = MaskingRule()
SEQUENTIAL = {"esm1b_t33_650M_UR50S"}  # shapes whose two training states do not fit in memory together
OPTIMIZER = ml_collections.ConfigDict(
    dict(peak_learning_rate=1e-4, end_learning_rate=1e-5, warmup_steps=10, schedule="linear",
         b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.01, clip_grad_norm=1.0)
)  # fmt: skip


def _batch(batch: int, length: int) -> dict[str, np.ndarray]:
    """Full rows of random residues, masked as the input pipeline masks training batches (ESM-1b's rule)."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, 24, size=(batch, length)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = 0, 2
    return mask_batch(tokens, np.full(batch, length - 2), np.arange(batch), 0, ResidueTable(), MASKING_RULE)


def _torch_step(reference: torch.nn.Module, batch: dict):
    """fair-esm's model with ``torch.optim.AdamW``: one call is one training step."""
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01)
    tokens = torch.from_numpy(batch["tokens"].astype(np.int64))
    targets = torch.from_numpy(batch["targets"].astype(np.int64))
    selected = torch.from_numpy(batch["loss_mask"] > 0)
    reference.train()

    def step():
        optimizer.zero_grad()
        logits = reference(tokens)["logits"]
        loss = torch.nn.functional.cross_entropy(logits[selected], targets[selected])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        optimizer.step()

    return step


def jax_step_and_hlo(
    reference: torch.nn.Module, name: str, batch: dict, current: dict | None = None
) -> tuple[Callable, Callable]:
    """esm-jax's jitted train step on the reference's weights, as ``step()`` and ``compiled()``.

    ``step()`` runs one step (the state is kept inside); ``compiled()`` is the step compiled for the current
    state (its HLO's layouts settle once the donated state has come back). Steps given the same ``current``
    dict share one state, built by the first: variants of the step then need the memory of one.
    """
    config = named_config(name)
    tx = make_optimizer(OPTIMIZER, 1000)
    current = {} if current is None else current
    if "state" in current:
        graphdef, state = abstract_state(config, tx)[0], current["state"]
    else:
        state_dict = {key: value.detach().numpy() for key, value in reference.state_dict().items()}
        model = build_from_tensors(config, fair_esm.model_slots(config) + fair_esm.CONTACT_SLOTS, state_dict, "bench")
        graphdef, state = nnx.split(TrainState(model, tx))
    mesh = build_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    shardings = state_shardings(state, mesh, DEFAULT_RULES)
    sharding = batch_sharding(mesh)
    schedule = learning_rate_schedule(OPTIMIZER, 1000)
    train_step = make_train_step(graphdef, shardings, sharding, 1, schedule, MASKING_RULE)
    device_batch = {key: jax.device_put(value, sharding) for key, value in batch.items()}
    current["state"] = state

    def step():
        with jax.set_mesh(mesh):
            current["state"], metrics = train_step(current["state"], device_batch)
            jax.block_until_ready(metrics)

    def compiled() -> jax.stages.Compiled:
        with jax.set_mesh(mesh):
            return train_step.lower(current["state"], device_batch).compile()

    return step, compiled


def _jax_step(reference: torch.nn.Module, name: str, batch: dict, current: dict | None = None) -> Callable:
    """esm-jax's train step as a call: one call is one step (state kept inside, or in ``current``)."""
    return jax_step_and_hlo(reference, name, batch, current)[0]


def step_times(
    reference: torch.nn.Module,
    name: str,
    batch: dict,
    rounds: int,
    settle: float = SETTLE_SECONDS,
    alone: bool = False,
) -> tuple[list, list]:
    """Seconds per step of PyTorch and esm-jax after warm-up steps, each step started ``settle`` s after the last.

    Where both optimiser states fit in memory beside each other the steps alternate, one of each per
    round; for the 650M shape (two AdamW states of ~10 GB each would not fit in 24 GB) esm-jax's rounds run
    first and its state is freed before PyTorch's rounds. With ``alone``, alternating shapes then run
    ``rounds`` more steps of each framework back to back and print their medians, to compare with the rounds.
    """

    def timed(step: Callable) -> float:
        return settled_run(step, settle)[0]

    ours = _jax_step(reference, name, batch)
    ours(), ours()  # esm-jax compiles again once the donated state comes back with its own layout
    if name in SEQUENTIAL:
        jax_times = [timed(ours) for _ in range(rounds)]
        del ours
        gc.collect()
        theirs = _torch_step(reference, batch)
        theirs()
        return [timed(theirs) for _ in range(rounds)], jax_times
    theirs = _torch_step(reference, batch)
    theirs()
    torch_times, jax_times = [], []
    for _ in range(rounds):
        torch_times.append(timed(theirs))
        jax_times.append(timed(ours))
    if alone:
        jax_alone = [timed(ours) for _ in range(rounds)]
        torch_alone = [timed(theirs) for _ in range(rounds)]
        print(f"{name} back to back, not alternating, median ms: fair-esm {statistics.median(torch_alone) * 1e3:,.0f}"
              f", esm-jax {statistics.median(jax_alone) * 1e3:,.0f}", flush=True)  # fmt: skip
    return torch_times, jax_times


def compile_seconds(scan: bool) -> float:
    """Seconds to compile the ESM-1b (33 layers) training step for one CPU device, from abstract inputs."""
    config = named_config("esm1b_t33_650M_UR50S").replace(scan_layers=scan)
    tx = make_optimizer(OPTIMIZER, 1000)
    graphdef, abstract = abstract_state(config, tx)
    mesh = build_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    shardings = state_shardings(abstract, mesh, DEFAULT_RULES)
    sharding = batch_sharding(mesh)
    step = make_train_step(graphdef, shardings, sharding, 1, learning_rate_schedule(OPTIMIZER, 1000), MASKING_RULE)
    batch = {key: jax.ShapeDtypeStruct((2, 512), jnp.float32 if key == "loss_mask" else jnp.int32, sharding=sharding)
             for key in ("tokens", "targets", "loss_mask")}  # fmt: skip
    start = time.perf_counter()
    with jax.set_mesh(mesh):
        step.lower(with_shardings(abstract, shardings), batch).compile()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed steps of each (default: 3)")
    parser.add_argument(
        "--settle", type=float, default=SETTLE_SECONDS, help=f"idle seconds before each step (default {SETTLE_SECONDS})"
    )
    parser.add_argument("--alone", action="store_true", help="also time each framework's steps back to back")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load {os.getloadavg()[0]:.2f}; "
          f"malloc: {allocator_setting()}")  # fmt: skip
    print("| model | batch | PyTorch tok/s | esm-jax tok/s | ratio (min–max) | esm-jax GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for name, (rows, length) in CASES.items():
        if args.quick and name != "esm2_t12_35M_UR50D":
            continue
        batch = _batch(rows, length)
        torch_times, jax_times = step_times(reference_model(name), name, batch, args.rounds, args.settle, args.alone)
        ratios = [theirs / ours for theirs, ours in zip(torch_times, jax_times, strict=True)]
        tokens = rows * length
        ours, theirs = statistics.median(jax_times), statistics.median(torch_times)
        flops = train_flops_per_token(named_config(name), length) * tokens
        print(f"| {name} | {rows} × {length} | {tokens / theirs:,.0f} | {tokens / ours:,.0f} | "
              f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) | {flops / ours / 1e9:.0f} |",
              flush=True)  # fmt: skip
    if not args.quick:
        print(f"compile ESM-1b train step: scan {compile_seconds(True):.1f} s, unrolled {compile_seconds(False):.1f} s")


if __name__ == "__main__":
    main()
