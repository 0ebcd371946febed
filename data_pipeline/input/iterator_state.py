"""The input pipeline's resumable state: a few integers plus the settings they are valid for, as JSON.

Why counters and not a serialised tf.data iterator: the stream is a pure function of (seed, settings, host count,
position) -- shard order per epoch, crops and masks come from counter-based random numbers -- so ``block`` and
``batch_in_block`` pin the next batch exactly. The state is ~1 KB of JSON, identical on every host, portable
across machines and library versions, and restoring re-reads at most one block. A tf.data checkpoint would be
opaque, per host, tied to the TensorFlow version and as large as the shuffle buffers it holds.

Host-count change: the restored iterator starts at the first block boundary at or after the same number of
records consumed over all hosts (``ceil(blocks_started * old_count / new_count)``). From there the stream is
deterministic for the new host count, but it is not the continuation of any uninterrupted run: shards are dealt
to hosts differently, so some records of the interrupted epoch are seen again and others not at all.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from data_pipeline.errors import IteratorStateError

STATE_FORMAT = "esm-jax/mlm-batch-iterator/v1"
LOGGER = logging.getLogger("data_pipeline")


def make_state(block: int, batch_in_block: int, process_count: int, settings: dict, dataset: dict) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "block": block,
        "batch_in_block": batch_in_block,
        "process_count": process_count,
        "settings": settings,
        "dataset": dataset,
    }


def to_json(state: dict[str, Any]) -> str:
    return json.dumps(state, sort_keys=True)


def from_json(text: str | bytes) -> dict[str, Any]:
    try:
        state = json.loads(text)
    except json.JSONDecodeError as error:
        raise IteratorStateError(f"the saved iterator state is not valid JSON ({error})") from error
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise IteratorStateError(f"not an esm-jax iterator state (expected format {STATE_FORMAT!r})")
    return state


def resume_point(state: dict[str, Any], settings: dict, dataset: dict, process_count: int) -> tuple[int, int]:
    """``(block, batch_in_block)`` to continue from, after checking the state fits these settings and data."""
    if state.get("format") != STATE_FORMAT:
        raise IteratorStateError(f"not an esm-jax iterator state (expected format {STATE_FORMAT!r})")
    for name, expected in (("settings", settings), ("dataset", dataset)):
        saved = state[name]
        if saved != expected:
            changed = sorted(k for k in set(saved) | set(expected) if saved.get(k) != expected.get(k))
            raise IteratorStateError(
                f"the saved iterator state was made with different {name} ({', '.join(changed)}); restore it with "
                "the same dataset and pipeline settings, or start a fresh iterator"
            )
    block, batch = int(state["block"]), int(state["batch_in_block"])
    old_count = int(state["process_count"])
    if old_count == process_count:
        return block, batch
    started = block + (1 if batch else 0)
    new_block = math.ceil(started * old_count / process_count)
    LOGGER.warning(
        "host count changed from %d to %d: resuming at block %d (same amount of data consumed over all hosts, "
        "rounded up to a block); batches will differ from the interrupted run",
        old_count,
        process_count,
        new_block,
    )
    return new_block, 0
