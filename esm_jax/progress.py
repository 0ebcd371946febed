"""Progress bars that suit terminals and log files alike: the one way esm-jax shows progress.

On a terminal a tqdm bar redraws itself in place. Written to a file or a pipe (a batch job's log), those redraws
would pile up as carriage returns on one endless line, so there the bar prints a plain line instead, at most every
``LOG_INTERVAL_S`` seconds, and one when it finishes; work shorter than that prints none (nor does a command that
fails early, whose error stays the only line).
"""

from __future__ import annotations

import re
import sys
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


def progress_bar(*args: Any, file: IO[str] | None = None, **options: Any) -> tqdm:
    """A ``tqdm`` bar on ``file`` (default stderr): redrawn in place on a terminal, periodic lines elsewhere."""
    stream = sys.stderr if file is None else file
    if _is_terminal(stream):
        return tqdm(*args, file=stream, **options)
    for option in ("delay", "mininterval", "maxinterval"):
        options.setdefault(option, LOG_INTERVAL_S)
    return tqdm(*args, file=LineStream(stream), **options)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineStream:
    """A stream for tqdm that writes each redraw of a bar as a line of its own, without repeating a line."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.pending = ""
        self.last = ""

    @property
    def encoding(self) -> str | None:
        return getattr(self.stream, "encoding", None)

    def write(self, text: str) -> int:
        *finished, self.pending = re.split(r"[\r\n]", self.pending + text)
        for line in finished:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        """tqdm flushes after each redraw: that redraw becomes a line."""
        self._emit(self.pending)
        self.pending = ""
        self.stream.flush()

    def _emit(self, line: str) -> None:
        line = line.rstrip()
        if line and line != self.last:
            self.stream.write(line + "\n")
            self.last = line
