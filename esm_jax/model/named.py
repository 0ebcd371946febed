"""Shapes of every released ESM-1b, ESM-1v and ESM-2 model, by their fair-esm names.

Shapes follow the fair-esm model table (facebookresearch/esm README and the checkpoints'
``args``/``cfg``): ESM-1b and ESM-1v use 33 layers of width 1280 with 20 heads, learned
positions for 1024 tokens and an embedding LayerNorm; ESM-2 uses rotary positions and an FFN
four times the width.
"""

from __future__ import annotations

from esm_jax.model.config import ModelConfig


def _esm1b_shape() -> ModelConfig:
    return ModelConfig(
        architecture="esm1b",
        num_layers=33,
        embed_dim=1280,
        attention_heads=20,
        ffn_embed_dim=5120,
        max_positions=1024,
        emb_layer_norm_before=True,
        token_dropout=True,
    )


def _esm2_shape(num_layers: int, embed_dim: int, attention_heads: int) -> ModelConfig:
    return ModelConfig(
        architecture="esm2",
        num_layers=num_layers,
        embed_dim=embed_dim,
        attention_heads=attention_heads,
        ffn_embed_dim=4 * embed_dim,
        token_dropout=True,
    )


NAMED_MODELS: dict[str, ModelConfig] = {
    "esm1b_t33_650M_UR50S": _esm1b_shape(),
    **{f"esm1v_t33_650M_UR90S_{i}": _esm1b_shape() for i in range(1, 6)},
    "esm2_t6_8M_UR50D": _esm2_shape(6, 320, 20),
    "esm2_t12_35M_UR50D": _esm2_shape(12, 480, 20),
    "esm2_t30_150M_UR50D": _esm2_shape(30, 640, 20),
    "esm2_t33_650M_UR50D": _esm2_shape(33, 1280, 20),
    "esm2_t36_3B_UR50D": _esm2_shape(36, 2560, 40),
    "esm2_t48_15B_UR50D": _esm2_shape(48, 5120, 40),
}

# ESM-1v was released without contact-regression weights (fair-esm pretrained.py).
MODELS_WITHOUT_CONTACT_REGRESSION = frozenset(name for name in NAMED_MODELS if name.startswith("esm1v"))


def named_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` of a released model name such as ``esm2_t33_650M_UR50D``."""
    try:
        return NAMED_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model name {name!r}; known names: {', '.join(sorted(NAMED_MODELS))}") from None
