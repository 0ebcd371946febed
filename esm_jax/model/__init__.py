"""The ESM model family as Flax NNX modules."""

from __future__ import annotations

from flax import nnx

from esm_jax.model.config import ModelConfig
from esm_jax.model.esm import ESM
from esm_jax.model.named import NAMED_MODELS, named_config


def build_model(config: ModelConfig | str, *, seed: int = 0) -> ESM:
    """An ESM model with fresh random weights; ``config`` may be a released model name."""
    if isinstance(config, str):
        config = named_config(config)
    return ESM(config, rngs=nnx.Rngs(seed))


def abstract_model(config: ModelConfig) -> ESM:
    """The model's structure with shape-only placeholders, for filling from a checkpoint."""
    return nnx.eval_shape(lambda: ESM(config, rngs=nnx.Rngs(0)))


__all__ = ["ESM", "ModelConfig", "NAMED_MODELS", "abstract_model", "build_model", "named_config"]
