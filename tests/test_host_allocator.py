"""The allocator setting README recommends for CPU runs keeps XLA's per-call buffers mapped between calls."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from esm_jax.host_allocator import RETAINED_MEMORY_TUNABLES, allocator_setting

# A jitted call whose 64 MiB product is a temporary buffer (its output is one column), past glibc's largest
# threshold for serving blocks from its heaps; prints the page faults of eight calls made once the heap has
# settled (while it settles, a kept heap still grows: a freed block can be a little short of the aligned next one).
FAULTS_PER_CALL = """
import resource
import jax
import jax.numpy as jnp

@jax.jit
def call(x, w):
    return (x @ w) @ w[0]

x, w = jnp.ones((4096, 256)), jnp.ones((256, 4096))
for _ in range(12):
    call(x, w).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    call(x, w).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
TEMPORARY_PAGES = 4096 * 4096 * 4 // os.sysconf("SC_PAGE_SIZE")


def _faults_in_eight_calls(tunables: str | None) -> int:
    env = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    env["JAX_PLATFORMS"] = "cpu"
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    result = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_CALL], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="GLIBC_TUNABLES is glibc's")
def test_kept_memory_stops_xla_faulting_its_temporary_buffer_on_every_call():
    default = _faults_in_eight_calls(None)
    kept = _faults_in_eight_calls(RETAINED_MEMORY_TUNABLES)
    assert default > 4 * TEMPORARY_PAGES, (default, TEMPORARY_PAGES)  # every call faults its buffer anew
    assert kept <= TEMPORARY_PAGES, (kept, TEMPORARY_PAGES)  # at most one call of eight


def test_allocator_setting_names_the_tunables_in_force():
    if platform.libc_ver()[0] != "glibc":
        assert "does not apply" in allocator_setting({})
        return
    assert "defaults" in allocator_setting({})
    assert "kept for reuse" in allocator_setting({"GLIBC_TUNABLES": RETAINED_MEMORY_TUNABLES})
    assert "glibc.malloc.hugetlb=1" in allocator_setting({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
