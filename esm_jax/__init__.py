"""esm-jax: the ESM protein language models (ESM-1b, ESM-1v, ESM-2) in JAX and Flax NNX."""

from esm_jax import pretrained  # esm_jax.pretrained.load_model_and_alphabet(...), as fair-esm's esm.pretrained
from esm_jax.alphabet import Alphabet, BatchConverter
from esm_jax.model import ESM, ModelConfig, build_model, named_config

__version__ = "0.1.0"

__all__ = [
    "Alphabet",
    "BatchConverter",
    "ESM",
    "ModelConfig",
    "build_model",
    "named_config",
    "pretrained",
    "__version__",
]
