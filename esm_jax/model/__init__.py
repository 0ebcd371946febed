"""The ESM model family and the bidirectional LSTM baselines as Flax NNX modules."""

from __future__ import annotations

from flax import nnx

from esm_jax.model.config import ModelConfig
from esm_jax.model.esm import ESM
from esm_jax.model.lstm import BiLSTMLM, LSTMConfig
from esm_jax.model.named import NAMED_MODELS, named_config

# Any trainable language model's config; its class selects the module (see ``model_class``).
AnyModelConfig = ModelConfig | LSTMConfig


def config_from_dict(values: dict) -> AnyModelConfig:
    """The config a dict describes: ``kind="lstm"`` is an LSTM baseline, no ``kind`` an ESM Transformer."""
    return LSTMConfig.from_dict(values) if values.get("kind") == "lstm" else ModelConfig.from_dict(values)


def model_class(config: AnyModelConfig) -> type[ESM] | type[BiLSTMLM]:
    return BiLSTMLM if isinstance(config, LSTMConfig) else ESM


def build_model(config: AnyModelConfig | str, *, seed: int = 0) -> ESM | BiLSTMLM:
    """A model with fresh random weights; ``config`` may be a released model name."""
    if isinstance(config, str):
        config = named_config(config)
    return model_class(config)(config, rngs=nnx.Rngs(seed))


def abstract_model(config: AnyModelConfig) -> ESM | BiLSTMLM:
    """The model's structure with shape-only placeholders, for filling from a checkpoint."""
    return nnx.eval_shape(lambda: model_class(config)(config, rngs=nnx.Rngs(0)))


__all__ = [
    "AnyModelConfig",
    "BiLSTMLM",
    "ESM",
    "LSTMConfig",
    "ModelConfig",
    "NAMED_MODELS",
    "abstract_model",
    "build_model",
    "config_from_dict",
    "model_class",
    "named_config",
]
