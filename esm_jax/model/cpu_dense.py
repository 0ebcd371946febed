"""Float32 matrix products for CPUs through OpenBLAS (``cpu_dense.cc``), called through the XLA FFI.

The dense layers' products (forward and both gradients) run here instead of XLA:CPU's own GEMM, which
reaches less of the cores' multiply-add peak on their shapes (``python benchmarks/gemm_peak.py``). OpenBLAS
comes from the ``scipy-openblas32`` package; the kernel is built on first use like the attention kernel
(:mod:`esm_jax.model.cpu_attention`) and kept beside it. Without a compiler or the package, on a device
mesh (XLA partitions its own products; this call would be gathered onto every device), or with
``ESM_JAX_CPU_GEMM=0``, the products run through XLA: the same results up to rounding. The setting is read
when a model is traced, and JAX reuses traces within a process: set it before the first call.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp

from esm_jax.model import cpu_attention

SOURCE = Path(__file__).with_name("cpu_dense.cc")
TARGET = "esm_jax_cpu_dense_product"


def enabled() -> bool:
    """Whether the OpenBLAS products may be used (``ESM_JAX_CPU_GEMM=0`` turns them off)."""
    return os.environ.get("ESM_JAX_CPU_GEMM", "1") != "0"


def openblas_flags() -> tuple[str, ...] | None:
    """Compiler flags that include and link scipy-openblas32's OpenBLAS, or None when it is not installed."""
    try:
        import scipy_openblas32
    except ImportError:
        return None
    library = scipy_openblas32.get_lib_dir()
    return (f"-I{scipy_openblas32.get_include_dir()}", f"-L{library}", f"-l{scipy_openblas32.get_library()}",
            f"-Wl,-rpath,{library}")  # fmt: skip


def load(compiler: str) -> ctypes.CDLL | None:
    """The product library built with ``compiler``, or None (with a warning saying why) when it cannot be had."""
    flags = openblas_flags()
    if flags is None or shutil.which(compiler) is None:
        reason = "scipy-openblas32 is not installed" if flags is None else f"no C++ compiler ({compiler!r}) found"
        warnings.warn(f"{reason}: dense layers on CPUs multiply through XLA, which is slower", stacklevel=3)
        return None
    try:
        return ctypes.cdll.LoadLibrary(str(cpu_attention.build(compiler, SOURCE, flags)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(f"the OpenBLAS product kernel could not be built; dense layers use XLA: {error}", stacklevel=3)
        return None


@functools.cache
def registered() -> bool:
    """Build (or reuse) and register the kernel, once per process; False when it cannot be built."""
    library = load(cpu_attention.compiler())
    if library is None:
        return False
    product = jax.ffi.pycapsule(library.EsmJaxDenseProduct)
    jax.ffi.register_ffi_target(TARGET, product, platform="cpu")
    return True


def usable(*dtypes) -> bool:
    """Whether a product of these operand and result dtypes runs through OpenBLAS where it is being traced."""
    from esm_jax.model.attention_kernels import target_platform  # attention_kernels imports cpu_attention

    return (
        all(dtype is None or jnp.dtype(dtype) == jnp.float32 for dtype in dtypes)
        and target_platform() == "cpu"
        and jax.sharding.get_abstract_mesh().empty
        and enabled()
        and registered()
    )


def product(a: jax.Array, b: jax.Array, transpose_a: bool = False, transpose_b: bool = False) -> jax.Array:
    """``op(a) @ op(b)`` of float32 matrices, op transposing where asked: a (m, k) or (k, m), b (k, n) or (n, k)."""
    rows = a.shape[1] if transpose_a else a.shape[0]
    columns = b.shape[0] if transpose_b else b.shape[1]
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((rows, columns), jnp.float32), vmap_method="sequential")
    return call(a, b, transpose_a=transpose_a, transpose_b=transpose_b)


def describe() -> str:
    """Which CPU GEMM the dense layers use here, and why, for ``esm-jax doctor``."""
    if not enabled():
        return "XLA (ESM_JAX_CPU_GEMM=0)"
    if not registered():
        return "XLA (the OpenBLAS kernel could not be built: see the warning above)"
    flags = openblas_flags() or ()
    return f"OpenBLAS, float32 ({cpu_attention.library_path(cpu_attention.compiler(), SOURCE, flags)})"
