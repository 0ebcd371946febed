"""Fused float32 attention for CPUs, forward and backward (``cpu_attention.cc``), called through the XLA FFI.

XLA:CPU runs attention as a product, a masked softmax and a product, each a separate kernel over the
(T, T) scores; the C++ kernels keep one block of queries' scores in cache from the first product to the
last, and the backward pass rebuilds them from the saved log-sum-exp instead of keeping them. They are
built on first use, on the machine that runs them (``-march=native``), with the system's C++ compiler and
kept under ``$ESM_JAX_CACHE/kernels`` (default ``~/.cache/esm_jax``). Without a compiler, or with
``ESM_JAX_CPU_ATTENTION=0``, attention runs through XLA's loop (:mod:`esm_jax.model.attention_kernels`):
the same results up to rounding, slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp

SOURCE = Path(__file__).with_name("cpu_attention.cc")
TARGET = "esm_jax_cpu_attention"  # the FFI targets are TARGET + "_forward" and TARGET + "_backward"
MAX_HEAD_DIM = 128
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-w")


def enabled() -> bool:
    """Whether the fused kernel may be used (``ESM_JAX_CPU_ATTENTION=0`` turns it off)."""
    return os.environ.get("ESM_JAX_CPU_ATTENTION", "1") != "0"


def compiler() -> str:
    """The C++ compiler the kernel is built with: ``$CXX``, else ``c++``."""
    return os.environ.get("CXX", "c++")


def kernel_dir() -> Path:
    from esm_jax.pretrained import cache_dir  # esm_jax.pretrained imports the model package

    return cache_dir() / "kernels"


def _cpu_identity() -> str:
    """The CPU model and instruction-set flags: a library built with ``-march=native`` runs only on such a CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return os.uname().machine
    wanted = [line for line in lines if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(wanted))


def build_command(compiler: str, output: Path, arch: str = "native", source: Path = SOURCE) -> list[str]:
    """The compiler call that builds ``source`` for ``arch`` (``-march``; esm-jax builds its own for ``native``)."""
    return [compiler, f"-march={arch}", *_FLAGS, f"-I{jax.ffi.include_dir()}", str(source), "-o", str(output)]


def library_path(compiler: str) -> Path:
    """Where the library built from this source, with this compiler, for this CPU and JAX, is kept."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), compiler.encode(), " ".join(build_command(compiler, Path())).encode(),
                 jax.__version__.encode(), _cpu_identity().encode()):  # fmt: skip
        key.update(part + b"\0")
    return kernel_dir() / f"cpu_attention-{key.hexdigest()[:16]}.so"


def build(compiler: str) -> Path:
    """The compiled library, built (atomically: into a temporary file, then renamed) unless already there."""
    path = library_path(compiler)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as folder:
        partial = Path(folder) / path.name
        result = subprocess.run(build_command(compiler, partial), capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(build_command(compiler, partial))} failed:\n{result.stderr[-2000:]}")
        os.replace(partial, path)
    return path


def load(compiler: str) -> ctypes.CDLL | None:
    """The kernel library built with ``compiler``, or None (with a warning saying why) when it cannot be had."""
    if shutil.which(compiler) is None:
        warnings.warn(
            f"no C++ compiler ({compiler!r}) found: CPU attention runs through XLA, which is slower. "
            "Install one (e.g. `apt install g++`) or name it in CXX to use the fused kernel.",
            stacklevel=3,
        )
        return None
    try:
        return ctypes.cdll.LoadLibrary(str(build(compiler)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(f"the fused CPU attention kernel could not be built; attention runs through XLA: {error}",
                      stacklevel=3)  # fmt: skip
        return None


def register(library: ctypes.CDLL, target: str = TARGET) -> None:
    """Register a kernel library's forward and backward as CPU FFI targets ``target`` + ``_forward``/``_backward``.

    A library built from an earlier revision's source (``benchmarks/cpu_attention_builds.py``) may have only
    the forward.
    """
    for suffix, symbol in (("_forward", "EsmJaxAttentionForward"), ("_backward", "EsmJaxAttentionBackward")):
        if hasattr(library, symbol):
            jax.ffi.register_ffi_target(target + suffix, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")


@functools.cache
def registered() -> bool:
    """Build (or reuse) and register the kernel, once per process; False when it cannot be built."""
    library = load(compiler())
    if library is None:
        return False
    register(library)
    return True


def usable(head_dim: int) -> bool:
    """Whether attention with this head size can run through the fused kernel here (in float32, whatever the
    model's compute dtype)."""
    return head_dim <= MAX_HEAD_DIM and enabled() and registered()


def _rotation_tables(rotation: tuple | None) -> tuple[jax.Array, jax.Array]:
    return rotation if rotation is not None else (jnp.zeros((0,), jnp.float32),) * 2


def forward(query, key, value, row_keys, packed: bool, rotation: tuple | None) -> tuple[jax.Array, jax.Array]:
    """Context (B, T, H, D) and each query's log-sum-exp (B, H, T) of float32 queries, keys, values (B, T, H, D).

    ``row_keys`` (B, T), int32: a query attends to the keys with its own row key when ``packed`` (segment ids),
    else to the keys whose row key is 0 (not padding). ``rotation``: the rotary (cos, sin) tables (T, D)
    applied to queries and keys, or None.
    """
    batch, length, heads, head_dim = query.shape
    rows = (batch, length, heads * head_dim)  # the same memory; XLA writes the projections' output as is
    shapes = (jax.ShapeDtypeStruct(rows, jnp.float32), jax.ShapeDtypeStruct((batch, heads, length), jnp.float32))
    call = jax.ffi.ffi_call(TARGET + "_forward", shapes, vmap_method="sequential")
    q, k, v = (x.reshape(rows) for x in (query, key, value))
    context, log_sum_exp = call(q, k, v, row_keys, *_rotation_tables(rotation), packed=packed, heads=heads)
    return context.reshape(query.shape), log_sum_exp


def backward(
    query, key, value, row_keys, packed: bool, rotation: tuple | None, context, log_sum_exp, d_context
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Gradients (B, T, H, D) of the queries, keys and values given the context's gradient ``d_context``.

    Takes :func:`forward`'s arguments and outputs; the gradients are those of the unrotated queries and keys.
    """
    batch, length, heads, head_dim = query.shape
    rows = (batch, length, heads * head_dim)
    shapes = (jax.ShapeDtypeStruct(rows, jnp.float32),) * 3
    call = jax.ffi.ffi_call(TARGET + "_backward", shapes, vmap_method="sequential")
    q, k, v, c, d_c = (x.reshape(rows) for x in (query, key, value, context, d_context))
    grads = call(q, k, v, row_keys, *_rotation_tables(rotation), c, log_sum_exp, d_c, packed=packed, heads=heads)
    return tuple(grad.reshape(query.shape) for grad in grads)


def describe() -> str:
    """Which CPU attention kernel runs here, and why, for ``esm-jax doctor``."""
    if not enabled():
        return "XLA loop (ESM_JAX_CPU_ATTENTION=0)"
    if not registered():
        return "XLA loop (the fused kernel could not be built: see the warning above)"
    return f"fused C++ kernels (forward and backward), float32 ({library_path(compiler())})"
