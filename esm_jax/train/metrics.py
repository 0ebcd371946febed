"""Training metrics: loss, ECE, masked accuracy, throughput, model FLOPs and MFU.

Step metrics stay on the device until a logging interval ends; then they are fetched in one
transfer, so logging never forces a device synchronisation every step. ECE is the paper's
exponentiated cross-entropy per masked token (Rives et al. 2021, Table 1): ``exp(loss in nats)``.
FLOPs count the model's own arithmetic (forward + backward = 3× forward, attention included
and not causal), not the extra work of rematerialisation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from tensorboardX import SummaryWriter

from esm_jax.model import AnyModelConfig

# Dense bfloat16 peak FLOP/s per chip, from the vendors' data sheets.
PEAK_FLOPS_BY_DEVICE_KIND = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


def train_flops_per_token(config: AnyModelConfig, length: int) -> float:
    """Forward plus backward (twice the forward), as model FLOPs."""
    return 3 * config.forward_flops_per_token(length)


def peak_flops(device: jax.Device, override: float | None = None) -> float:
    """Peak FLOP/s of one device: ``override``, the data-sheet value, or a measured float32 GEMM rate on CPU."""
    if override:
        return override
    for kind, value in PEAK_FLOPS_BY_DEVICE_KIND.items():
        if device.device_kind.startswith(kind):
            return value
    return _measured_gemm_flops()


def _measured_gemm_flops(size: int = 1024, repeats: int = 5) -> float:
    x = jax.numpy.ones((size, size), jax.numpy.float32)
    product = jax.jit(lambda a: a @ a)
    product(x).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        product(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best * jax.device_count()


class MetricsLog:
    """Collects per-step device metrics; every ``flush`` turns them into numbers and writes them.

    Writes TensorBoard events and ``metrics.jsonl`` in ``workdir`` (process 0 only) and keeps
    the history for the learning-curve plot.
    """

    def __init__(self, workdir: str | Path, model_config: AnyModelConfig, peak_flops_total: float, write: bool = True):
        self.workdir = Path(workdir)
        self.model_config = model_config
        self.peak_flops_total = peak_flops_total
        self.writer = SummaryWriter(str(self.workdir / "tensorboard")) if write else None
        self.jsonl = open(self.workdir / "metrics.jsonl", "a") if write else None  # noqa: SIM115
        self.history: list[dict] = []
        self._pending: list[tuple[int, int, dict]] = []
        self._since = time.perf_counter()

    def add(self, step: int, length: int, metrics: dict) -> None:
        """Remember one step's (device-resident) metrics; ``length`` is the batch's token width."""
        self._pending.append((step, length, metrics))

    def flush(self) -> dict | None:
        """Fetch pending metrics in one transfer and write their summary; returns it."""
        if not self._pending:
            return None
        fetched = jax.device_get([metrics for _, _, metrics in self._pending])
        seconds = time.perf_counter() - self._since
        summary = self._summarise(fetched, [length for _, length, _ in self._pending], seconds)
        step = self._pending[-1][0]
        summary["step"] = step
        self._pending.clear()
        self._since = time.perf_counter()
        self.write("train", step, summary)
        return summary

    def _summarise(self, fetched: Sequence[dict], lengths: Sequence[int], seconds: float) -> dict:
        loss_sum = sum(float(m["loss_sum"]) for m in fetched)
        targets = max(sum(float(m["targets"]) for m in fetched), 1.0)
        tokens = sum(float(m["tokens"]) for m in fetched)
        flops = sum(
            train_flops_per_token(self.model_config, length) * float(m["tokens"])
            for m, length in zip(fetched, lengths, strict=True)
        )
        loss = loss_sum / targets
        return {
            "loss": loss,
            "ece": math.exp(min(loss, 50.0)),
            "masked_accuracy": sum(float(m["correct"]) for m in fetched) / targets,
            "learning_rate": float(fetched[-1]["learning_rate"]),
            "grad_norm": float(np.mean([float(m["grad_norm"]) for m in fetched])),
            "tokens_per_second": tokens / seconds,
            "model_flops_per_second": flops / seconds,
            "mfu": flops / seconds / self.peak_flops_total,
            "nonfinite_steps": int(sum(1 - float(m["finite"]) for m in fetched)),
        }

    def write(self, split: str, step: int, values: dict) -> None:
        record = {"split": split, "step": step, **values}
        self.history.append(record)
        if self.writer is not None:
            for key, value in values.items():
                if key != "step" and isinstance(value, int | float):
                    self.writer.add_scalar(f"{split}/{key}", value, step)
            self.writer.flush()
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.close()
