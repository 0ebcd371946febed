"""esm-jax: the ESM protein language models in JAX/Flax, for TPU and GPU pods."""

from pathlib import Path

from setuptools import find_packages, setup

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml-collections==1.1.0",
    "numpy>=2.0",
    "biopython>=1.85",
    "tqdm>=4.66",
    "matplotlib>=3.9",
    "pyhmmer==0.12.3",
]
TORCH = [
    "torch==2.13.0",  # the CPU build already on these machines; an unpinned torch pulls CUDA
    "fair-esm==2.0.0",
    "transformers==5.24.0",
]
DEV = TORCH + [
    "pytest>=8",
    "ruff>=0.15",
]

setup(
    name="esm-jax",
    version="0.1.0",
    description="ESM-1b, ESM-1v and ESM-2 protein language models in JAX/Flax: exact to fair-esm, built for pods",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["esm_jax*", "configs*", "data_pipeline*", "eval*"]),
    install_requires=CORE,
    extras_require={"torch": TORCH, "dev": DEV},
    entry_points={"console_scripts": ["esm-jax=esm_jax.cli.main:main"]},
    license="MIT",
)
