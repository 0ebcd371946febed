"""A tiny random ESM-2 saved as an official fair-esm checkpoint, for end-to-end runs of ``esm-jax eval`` tasks."""

from __future__ import annotations

from pathlib import Path

from esm_jax import ModelConfig, build_model, pretrained

# ESM-2 checkpoints imply an FFN four times the width
TINY = ModelConfig(architecture="esm2", num_layers=2, embed_dim=32, attention_heads=4, ffn_embed_dim=128)


def save_tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Write ``esm2_tiny.pt`` (and its contact regression) into ``folder`` and return its path."""
    path = Path(folder) / "esm2_tiny.pt"
    pretrained.save_fair_esm(build_model(TINY, seed=seed), path)
    return path
