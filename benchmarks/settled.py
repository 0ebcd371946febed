"""Timing one call in a benchmark that alternates PyTorch and esm-jax in one process.

After a call returns, PyTorch's OpenMP workers and XLA's thread pool keep spinning for a while. Timed straight
after the other framework's call, a call may share the two cores with those threads. So every timed call starts
after the cores have been left idle for a moment; that costs the call the cores' wake-up, a few milliseconds,
which these second-scale calls do not notice. (In the t12 training benchmark the pause changed nothing beyond
its round-to-round noise: ``python benchmarks/train_throughput.py --quick --settle 0`` against the default,
README, "Host memory allocator".)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

SETTLE_SECONDS = 0.5
Result = TypeVar("Result")


def settled_run(call: Callable[[], Result], settle: float = SETTLE_SECONDS) -> tuple[float, Result]:
    """``call()``'s seconds and result, the call started ``settle`` seconds after whatever ran before it."""
    time.sleep(settle)
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result
