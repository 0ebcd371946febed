"""A deterministic, resumable stand-in for the data pipeline, for trainer tests that do not need real data.

It honours the trainer's data-source protocol (``next()``, ``get_state()``, ``close()``): batch
``i`` depends only on the seed and ``i``, and the state is the position. With several JAX
processes each one returns its slice of the same global batch. ``packed_batches`` serves the same
sequences two per row, with ``segment_ids``, as the packed input pipeline does.
"""

from __future__ import annotations

import jax
import numpy as np

ROWS, LENGTH = 8, 32


def pack_pairs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows ``2i`` and ``2i + 1`` back to back in one row twice as wide, padding at the end, with segment ids."""
    rows, length = batch["tokens"].shape
    packed = {key: np.full((rows // 2, 2 * length), 1 if key != "loss_mask" else 0, batch[key].dtype)
              for key in ("tokens", "targets", "loss_mask")}  # fmt: skip
    packed["segment_ids"] = np.zeros((rows // 2, 2 * length), np.int32)
    for row in range(rows):
        start = 0 if row % 2 == 0 else int(np.sum(batch["tokens"][row - 1] != 1))
        size = int(np.sum(batch["tokens"][row] != 1))
        for key in ("tokens", "targets", "loss_mask"):
            packed[key][row // 2, start : start + size] = batch[key][row, :size]
        packed["segment_ids"][row // 2, start : start + size] = row % 2 + 1
    return packed


class SyntheticBatches:
    def __init__(self, seed: int, start: int, limit: int | None, packed: bool = False):
        self.seed, self.position, self.limit, self.packed = seed, start, limit, packed

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.limit is not None and self.position >= self.limit:
            raise StopIteration
        rng = np.random.default_rng([self.seed, self.position])
        self.position += 1
        lengths = rng.integers(8, LENGTH - 2, size=ROWS)
        tokens = np.full((ROWS, LENGTH), 1, np.int32)
        targets = np.full((ROWS, LENGTH), 1, np.int32)
        loss_mask = np.zeros((ROWS, LENGTH), np.float32)
        for row, n in enumerate(lengths):
            residues = rng.integers(4, 24, size=n)
            tokens[row, 0], tokens[row, 1 : n + 1], tokens[row, n + 1] = 0, residues, 2
            chosen = 1 + np.flatnonzero(rng.random(n) < 0.15)
            targets[row, chosen] = tokens[row, chosen]
            tokens[row, chosen] = 32
            loss_mask[row, chosen] = 1.0
        batch = {"tokens": tokens, "targets": targets, "loss_mask": loss_mask}
        if self.packed:
            batch = pack_pairs(batch)
        share = len(batch["tokens"]) // jax.process_count()
        rows = slice(jax.process_index() * share, (jax.process_index() + 1) * share)
        return {key: value[rows] for key, value in batch.items()}

    def get_state(self) -> dict:
        return {"position": self.position}

    def close(self) -> None:
        pass


def batches(data, split: str, state: dict | None = None) -> SyntheticBatches:
    """The factory named in test configs as ``tests.synthetic_batches:batches``."""
    if split == "train":
        return SyntheticBatches(data.seed, (state or {}).get("position", 0), None)
    return SyntheticBatches(data.eval_seed, 0, 2)


def packed_batches(data, split: str, state: dict | None = None) -> SyntheticBatches:
    """The same batches as :func:`batches`, two sequences per row (``tests.synthetic_batches:packed_batches``)."""
    start, limit = ((state or {}).get("position", 0), None) if split == "train" else (0, 2)
    return SyntheticBatches(data.seed if split == "train" else data.eval_seed, start, limit, packed=True)
