"""A deterministic, resumable stand-in for the data pipeline, for trainer tests that do not need real data.

It honours the trainer's data-source protocol (``next()``, ``get_state()``, ``close()``): batch
``i`` depends only on the seed and ``i``, and the state is the position. With several JAX
processes each one returns its slice of the same global batch.
"""

from __future__ import annotations

import jax
import numpy as np

ROWS, LENGTH = 8, 32


class SyntheticBatches:
    def __init__(self, seed: int, start: int, limit: int | None):
        self.seed, self.position, self.limit = seed, start, limit

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
        share = ROWS // jax.process_count()
        rows = slice(jax.process_index() * share, (jax.process_index() + 1) * share)
        return {"tokens": tokens[rows], "targets": targets[rows], "loss_mask": loss_mask[rows]}

    def get_state(self) -> dict:
        return {"position": self.position}

    def close(self) -> None:
        pass


def batches(data, split: str, state: dict | None = None) -> SyntheticBatches:
    """The factory named in test configs as ``tests.synthetic_batches:batches``."""
    if split == "train":
        return SyntheticBatches(data.seed, (state or {}).get("position", 0), None)
    return SyntheticBatches(data.eval_seed, 0, 2)
