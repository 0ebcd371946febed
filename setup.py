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
    "tensorboardX==2.6.5",  # training metrics as TensorBoard events, without TensorFlow in the trainer
    # Data pipeline (TFRecords via TFDS, tf.data input); imported only by data_pipeline/.
    "tensorflow-cpu==2.21.0",
    "tensorflow-datasets==4.9.10",
    "importlib_resources==7.1.0",  # used by tensorflow-datasets for builders outside its package, undeclared
    "protobuf==6.33.6",  # what tensorflow-cpu 2.21 resolves to; orbax-checkpoint works with it
]
BEAM = ["apache-beam==2.77.0"]  # building corpora too large for one machine
CUDA12 = ["jax[cuda12]==0.10.2"]  # GPU hosts: the CUDA 12 plugin and runtime wheels at the pinned JAX version
TPU = ["libtpu==0.0.42.1"]  # the TPU runtime jax 0.10.2 pins; also lets `esm-jax plan` compile for TPU slices anywhere
TORCH = [
    "torch==2.13.0",  # the CPU build already on these machines; an unpinned torch pulls CUDA
    "fair-esm==2.0.0",
    "transformers==5.24.0",
]
DEV = (
    TORCH
    + BEAM
    + TPU  # so CI runs the `esm-jax plan` compile tests
    + [
        "pytest==9.2.0",
        "ruff==0.17.5",
        "scipy>=1.13",  # reference implementations the metric tests compare against
        "scikit-learn==1.9.1",
        # running the Colab notebooks as tests
        "nbformat==5.11.1",
        "nbclient==0.11.0",
        "ipykernel==7.4.0",
    ]
)

setup(
    name="esm-jax",
    version="0.1.0",
    description="ESM-1b, ESM-1v and ESM-2 protein language models in JAX/Flax: exact to fair-esm, built for pods",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["esm_jax*", "configs*", "data_pipeline*", "eval*"]),
    install_requires=CORE,
    extras_require={"torch": TORCH, "beam": BEAM, "tpu": TPU, "cuda12": CUDA12, "dev": DEV},
    package_data={"data_pipeline": ["datasets.toml"], "esm_jax.model": ["cpu_attention.cc"]},
    entry_points={"console_scripts": ["esm-jax=esm_jax.cli.main:main"]},
    license="MIT",
)
