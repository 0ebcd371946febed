"""The host's malloc setting, which decides whether every CPU call page-faults its working memory afresh.

XLA:CPU takes each call's temporary buffer (452 MB for the ESM-2 t12 training step at 4 × 256) from malloc. Under
glibc's defaults a block that large is mapped fresh from the kernel on every call and unmapped after it, so each
call touches every page for the first time: 102,930 page faults of 4 KiB per t12 step on the project's machine
(``benchmarks/train_profile.py`` prints both figures). PyTorch pays the same on its large activations. glibc
keeps freed memory for reuse when its tunables say so; it reads them only when a process starts, so they go in the
environment of the command:

    export GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:\
    glibc.malloc.trim_threshold=68719476736:glibc.malloc.hugetlb=1   (one line, no spaces)

One heap for all threads (``arena_max=1``), never a separate mapping (``mmap_max=0``), never given back to the
kernel below 64 GiB free (``trim_threshold``), and grown in transparent huge pages where the kernel offers them
(``hugetlb=1``, glibc 2.35 or later). The process then keeps its peak memory until it exits, and all its threads
allocate from one heap. Measured on the project's machine (README, "Speed on CPU"): the float32 t12 training step
runs 8–10% faster with it, fair-esm's forward and training much faster still, and esm-jax's bfloat16 forward
slower and erratic; so it is a choice per job, not a default, and ``esm-jax doctor`` says which one is in force.
"""

from __future__ import annotations

import os
import platform

RETAINED_MEMORY_TUNABLES = (
    "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736:glibc.malloc.hugetlb=1"
)


def allocator_setting(environ: dict[str, str] | None = None) -> str:
    """One line: which C library allocates this process's memory and with which tunables."""
    environ = os.environ if environ is None else environ
    library, version = platform.libc_ver()
    if library != "glibc":
        return f"{library or 'not glibc'} (GLIBC_TUNABLES does not apply)"
    tunables = environ.get("GLIBC_TUNABLES", "")
    if tunables == RETAINED_MEMORY_TUNABLES:
        return f"glibc {version}, freed memory kept for reuse (GLIBC_TUNABLES={tunables})"
    if tunables:
        return f"glibc {version}, GLIBC_TUNABLES={tunables}"
    return f"glibc {version} defaults (large blocks mapped afresh on every call; see README, 'Host memory allocator')"
