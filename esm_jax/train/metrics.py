"""Training metrics: loss, ECE, masked accuracy, throughput, model FLOPs and MFU.

Step metrics stay on the device until a logging interval ends; then they are fetched in one
transfer, so logging never forces a device synchronisation every step. ECE is the paper's
exponentiated cross-entropy per masked token (Rives et al. 2021, Table 1): ``exp(loss in nats)``.
FLOPs count the model's own arithmetic (forward + backward = 3× forward, attention included
and not causal), not the extra work of rematerialisation, and only for real tokens: padding
and attention between sequences packed in one row are not model FLOPs. Throughput is given
both ways: real tokens per second and padded tokens (the batch's full width) per second.
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

from esm_jax.files import write_text_atomically
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
    """Forward plus backward (twice the forward), as model FLOPs, for a sequence of ``length`` tokens."""
    return 3 * config.forward_flops_per_token(length)


def train_flops(config: AnyModelConfig, tokens: float, attention_pairs: float) -> float:
    """Model FLOPs of a training step over ``tokens`` real tokens whose sequences hold ``attention_pairs``
    (query, key) pairs in all (the sum of squared sequence lengths)."""
    return 3 * (config.forward_flops_per_token(0) * tokens + config.attention_flops_per_pair * attention_pairs)


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


def read_history(path: str | Path, last_step: int) -> list[dict]:
    """The records of ``metrics.jsonl`` up to ``last_step``, skipping a line cut short by a killed process."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= last_step:
            records.append(record)
    return records


def _truncate_history(path: Path, last_step: int) -> list[dict]:
    """Drop (rewriting the file atomically) records logged after the checkpoint a run resumes from."""
    records = read_history(path, last_step)
    if path.is_file() and len(path.read_text().splitlines()) != len(records):
        write_text_atomically(path, "".join(json.dumps(record) + "\n" for record in records))
    return records


class MetricsLog:
    """Collects per-step device metrics; every ``flush`` turns them into numbers and writes them.

    Writes TensorBoard events and ``metrics.jsonl`` in ``workdir`` (process 0 only) and keeps
    the history for the learning-curve plot. A run resumed from ``resume_step`` first drops what was
    logged after that step (it is trained again), so every step is recorded once and the history
    covers the whole run.
    """

    def __init__(
        self,
        workdir: str | Path,
        model_config: AnyModelConfig,
        peak_flops_total: float,
        write: bool = True,
        resume_step: int = 0,
    ):
        self.workdir = Path(workdir)
        self.model_config = model_config
        self.peak_flops_total = peak_flops_total
        self.history: list[dict] = []
        self.writer = self.jsonl = None
        if write:
            self.history = _truncate_history(self.workdir / "metrics.jsonl", resume_step)
            purge = resume_step + 1 if (self.workdir / "tensorboard").is_dir() else None
            self.writer = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=purge)
            self.jsonl = open(self.workdir / "metrics.jsonl", "a")  # noqa: SIM115
        self._pending: list[tuple[int, int, dict]] = []
        self._since = time.perf_counter()

    def add(self, step: int, metrics: dict) -> None:
        """Remember one step's (device-resident) metrics."""
        self._pending.append((step, metrics))

    def flush(self) -> dict | None:
        """Fetch pending metrics in one transfer and write their summary; returns it."""
        if not self._pending:
            return None
        fetched = jax.device_get([metrics for _, metrics in self._pending])
        seconds = time.perf_counter() - self._since
        summary = self._summarise(fetched, seconds)
        step = self._pending[-1][0]
        summary["step"] = step
        self._pending.clear()
        self._since = time.perf_counter()
        self.write("train", step, summary)
        return summary

    def _summarise(self, fetched: Sequence[dict], seconds: float) -> dict:
        def total(key: str) -> float:
            return sum(float(m[key]) for m in fetched)

        loss_sum = total("loss_sum")
        targets = max(total("targets"), 1.0)
        tokens = total("tokens")
        flops = train_flops(self.model_config, tokens, total("attention_pairs"))
        loss = loss_sum / targets
        return {
            "loss": loss,
            "ece": math.exp(min(loss, 50.0)),
            "masked_accuracy": total("correct") / targets,
            "learning_rate": float(fetched[-1]["learning_rate"]),
            "grad_norm": float(np.mean([float(m["grad_norm"]) for m in fetched])),
            "tokens_per_second": tokens / seconds,
            "padded_tokens_per_second": total("padded_tokens") / seconds,
            "real_token_fraction": tokens / max(total("padded_tokens"), 1.0),
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
