"""The shape and options of an ESM model, independent of its weights."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import jax.numpy as jnp

Architecture = Literal["esm1b", "esm2"]
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# What a rematerialised (jax.checkpoint) Transformer block keeps from its forward pass for the
# backward pass: "none" = no rematerialisation, "full" = nothing (recompute the whole block),
# "dots" = matrix-multiplication outputs, "dots_no_batch" = those without batch dimensions.
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
# How attention is computed when its weights are not returned (esm_jax.model.attention_kernels):
# "per_head" (CPUs), "dense" (plain XLA), "splash" (TPU flash kernel), "cudnn" (GPU fused
# attention); "auto" picks per_head on CPUs, splash on TPUs, and on GPUs cudnn for 16-bit compute, dense for float32.
ATTENTION_IMPLEMENTATIONS = ("auto", "dense", "per_head", "splash", "cudnn")


class FrozenConfig:
    """``replace``, ``to_dict`` and a strict ``from_dict`` for the frozen dataclasses that describe models."""

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class ModelConfig(FrozenConfig):
    """Everything needed to build an ESM model with random weights.

    ``architecture`` selects the family: ``esm1b`` (ESM-1b and ESM-1v: learned absolute
    positions with fairseq offsets) or ``esm2`` (rotary positions). ``compute_dtype``,
    ``scan_layers``, ``remat_policy`` and ``attention_impl`` change how the model runs, never what its parameters are.
    """

    architecture: Architecture
    num_layers: int
    embed_dim: int
    attention_heads: int
    ffn_embed_dim: int
    vocab_size: int = 33
    max_positions: int = 1024
    emb_layer_norm_before: bool = False
    token_dropout: bool = True
    layer_norm_eps: float = 1e-5
    compute_dtype: str = "float32"
    scan_layers: bool = True
    remat_policy: str = "none"
    attention_impl: str = "auto"

    # Fields that determine the parameters: a checkpoint only fits a config that agrees on them.
    SHAPE_FIELDS: ClassVar[tuple[str, ...]] = (
        "architecture", "num_layers", "embed_dim", "attention_heads", "ffn_embed_dim", "max_positions",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.architecture not in ("esm1b", "esm2"):
            raise ValueError(f"architecture must be 'esm1b' or 'esm2', got {self.architecture!r}")
        if self.embed_dim % self.attention_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by attention_heads {self.attention_heads}")
        if self.architecture == "esm2" and (self.embed_dim // self.attention_heads) % 2:
            raise ValueError("rotary embeddings need an even head dimension")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got {self.compute_dtype!r}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy must be one of {REMAT_POLICIES}, got {self.remat_policy!r}")
        if self.attention_impl not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLEMENTATIONS}, got {self.attention_impl!r}")
        if self.architecture == "esm2" and self.emb_layer_norm_before:
            raise ValueError("ESM-2 has no embedding LayerNorm before the encoder")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.attention_heads

    @property
    def dtype(self) -> jnp.dtype:
        """The dtype matrix multiplications run in."""
        return COMPUTE_DTYPES[self.compute_dtype]

    @property
    def uses_rotary(self) -> bool:
        return self.architecture == "esm2"

    @property
    def max_batch_width(self) -> int | None:
        """Widest padded row (tokens, BOS and EOS included): ``max_positions`` for learned positions, else no limit."""
        return None if self.uses_rotary else self.max_positions

    def forward_flops_per_token(self, length: int) -> float:
        """2 FLOPs per weight of every matrix multiplication, plus 4·T·D per layer for attention over ``length``."""
        d, f, v = self.embed_dim, self.ffn_embed_dim, self.vocab_size
        per_layer = 2 * (4 * d * d + 2 * d * f)
        return self.num_layers * per_layer + 2 * (d * d + d * v) + length * self.attention_flops_per_pair

    @property
    def attention_flops_per_pair(self) -> float:
        """Forward FLOPs of one (query, key) pair over all layers: 2·D for the score, 2·D for the weighted value."""
        return 4 * self.embed_dim * self.num_layers

    def num_parameters(self) -> int:
        """Trainable parameters, counted as fair-esm counts them (tied LM head counted once)."""
        d, f, v, layers = self.embed_dim, self.ffn_embed_dim, self.vocab_size, self.num_layers
        per_layer = 4 * (d * d + d) + 2 * d * f + f + d + 4 * d
        total = v * d + layers * per_layer + 2 * d  # tokens, blocks, final LayerNorm
        total += d * d + d + 2 * d + v  # LM head dense, LayerNorm, bias
        total += layers * self.attention_heads + 1  # contact regression
        if self.architecture == "esm1b":
            total += (self.max_positions + 2) * d
            if self.emb_layer_norm_before:
                total += 2 * d
        return total
