"""Periodic progress lines (count, rate, percent, ETA) for long passes over large files."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

LOGGER = logging.getLogger("data_pipeline")


class ProgressLog:
    """Logs ``label: N items, X items/s, P% of input, ETA`` at most every ``interval_s`` seconds."""

    def __init__(
        self,
        label: str,
        fraction_done: Callable[[], float] | None = None,
        interval_s: float = 10.0,
        unit: str = "records",
    ) -> None:
        self.label = label
        self.unit = unit
        self._fraction_done = fraction_done
        self._interval_s = interval_s
        self._start = time.monotonic()
        self._last = self._start
        self.count = 0

    def step(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._last = now
            LOGGER.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self._start, 1e-9)
        text = f"{self.label}: {self.count:,} {self.unit}, {self.count / elapsed:,.0f} {self.unit}/s"
        if self._fraction_done is not None:
            fraction = min(max(self._fraction_done(), 0.0), 1.0)
            if fraction > 0:
                eta = elapsed * (1.0 - fraction) / fraction
                text += f", {100 * fraction:.1f}% of input, ETA {eta:,.0f} s"
        return text

    def finish(self) -> None:
        LOGGER.info("%s (done)", self.line())
