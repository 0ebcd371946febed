"""Atomic output files: written next to their destination and renamed into place when complete.

A reader (or a rerun after a crash) sees either the previous file or the whole new one, never a
partial write; a failed write leaves no temporary file behind. The file gets the permissions ``open`` would give
it (the replaced file's, or 0666 less the umask), not the 0600 of a temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w", **open_options: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        os.fchmod(descriptor, _mode_for(path))
        with os.fdopen(descriptor, mode, **open_options) as handle:
            yield handle
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.filename in (None, temporary):  # a failed write or rename: name the destination, not the temporary
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    """The permissions ``open(path, "w")`` would leave: the existing file's, else 0666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_output(path, encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def write_json_atomically(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically (NumPy scalars become floats)."""
    return write_text_atomically(path, json.dumps(payload, indent=2, default=float) + "\n")
