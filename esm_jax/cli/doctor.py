"""``esm-jax doctor``: what this installation sees: JAX's platform and devices, the TPU/CUDA runtimes, the attention
kernel ``auto`` picks, the host allocator's setting, and where data and weights are cached. Also keeps libtpu
quiet on machines without TPUs."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
from pathlib import Path

import jax

DESCRIPTION = __doc__.splitlines()[0]


def keep_libtpu_quiet() -> None:
    """On a machine without TPU chips, leave the TPU backend out unless ``$JAX_PLATFORMS`` says otherwise.

    libtpu (installed for ``esm-jax plan`` and by the dev extras) otherwise initialises on every command and prints
    TPU_ACCELERATOR_TYPE / worker-hostname errors; ``esm-jax plan`` loads it separately and still compiles for TPUs.
    """
    if os.environ.get("JAX_PLATFORMS") or _tpu_chips() > 0:
        return
    jax.config.update("jax_platforms", "cuda,cpu" if _has_cuda_plugin() and _has_nvidia_device() else "cpu")


def _tpu_chips() -> int:
    try:
        from jax._src import hardware_utils

        return hardware_utils.num_available_tpu_chips_and_device_id()[0]
    except (ImportError, AttributeError, OSError):
        return 0


def _has_cuda_plugin() -> bool:
    return importlib.util.find_spec("jax_cuda12_plugin") is not None or _version("jax-cuda12-plugin") is not None


def _has_nvidia_device() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*"))


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def add_parser(subcommands, name: str) -> None:
    parser = subcommands.add_parser(name, help="what JAX sees, attention kernel, caches", description=DESCRIPTION)
    parser.add_argument("--data", type=Path, default=None, help="data root to report (default: $ESM_JAX_DATA or cache)")


def report(data: Path | None = None) -> dict[str, str]:
    """The facts ``esm-jax doctor`` prints, by label."""
    from data_pipeline.layout import data_root, offline_mirrors
    from esm_jax.host_allocator import allocator_setting
    from esm_jax.model import cpu_attention
    from esm_jax.model.attention_kernels import resolve
    from esm_jax.pretrained import cache_dir

    devices = jax.devices()
    backend = jax.default_backend()
    return {
        "python": f"{platform.python_version()} on {platform.platform()}",
        "jax": f"{jax.__version__} (jaxlib {_version('jaxlib') or '?'})",
        "platform": backend,
        "devices": f"{len(devices)} ({jax.process_count()} process(es))",
        "device kind": ", ".join(sorted({device.device_kind for device in devices})),
        "libtpu": _version("libtpu") or "not installed",
        "cuda plugin": _version("jax-cuda12-plugin") or "not installed",
        "cuda runtime": _version("nvidia-cuda-runtime-cu12") or "not installed",
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS") or f"(unset; used {jax.config.jax_platforms or 'all'})",
        "attention auto": f"{resolve('auto', backend)} (float32), {resolve('auto', backend, 'bfloat16')} (bfloat16)",
        "cpu attention": cpu_attention.describe() if backend == "cpu" else f"not used on {backend}",
        "host allocator": allocator_setting(),
        "data root": str(data_root(data)),
        "offline mirrors": ", ".join(str(path) for path in offline_mirrors()) or "none",
        "weights cache": str(cache_dir()),
    }


def run(args: argparse.Namespace) -> int:
    for label, value in report(args.data).items():
        print(f"{label + ':':16s} {value}")
    return 0
