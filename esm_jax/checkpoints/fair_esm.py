"""The official fair-esm checkpoint layout: tensor names, model arguments and file pairs.

ESM-1b/ESM-1v files hold ``{"args": Namespace(arch="roberta_large", ...), "model": ...}``;
ESM-2 files hold ``{"cfg": {"model": Namespace(...)}, "model": ...}``. Encoder tensors are
prefixed ``encoder.sentence_encoder.``, LM-head tensors ``encoder.``; the contact regression
lives in a separate ``<name>-contact-regression.pt`` file (fair-esm ``pretrained.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from esm_jax.checkpoints.tensor_map import TensorSlot, layer_norm_slots, linear_slots
from esm_jax.errors import CheckpointError
from esm_jax.model.config import ModelConfig

ENCODER_PREFIX = "encoder.sentence_encoder."
HEAD_PREFIX = "encoder."
CONTACT_SLOTS = [
    TensorSlot(("contact_head", "regression", "kernel"), "contact_head.regression.weight", transpose=True),
    TensorSlot(("contact_head", "regression", "bias"), "contact_head.regression.bias"),
]


def model_slots(config: ModelConfig) -> list[TensorSlot]:
    """Every model tensor except the contact regression, under fair-esm's unprefixed names."""
    slots = [TensorSlot(("embed_tokens", "embedding"), "embed_tokens.weight")]
    if config.architecture == "esm1b":
        slots.append(TensorSlot(("embed_positions", "embedding"), "embed_positions.weight"))
        if config.emb_layer_norm_before:
            slots += layer_norm_slots(("emb_layer_norm_before",), "emb_layer_norm_before")
    block = "layers.{layer}"
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        slots += linear_slots(("layers", "self_attn", proj), f"{block}.self_attn.{proj}")
    if config.uses_rotary:
        slots.append(TensorSlot(("layers", "self_attn", "rotary_frequencies"), f"{block}.self_attn.rot_emb.inv_freq"))
    slots += layer_norm_slots(("layers", "self_attn_layer_norm"), f"{block}.self_attn_layer_norm")
    slots += linear_slots(("layers", "fc1"), f"{block}.fc1")
    slots += linear_slots(("layers", "fc2"), f"{block}.fc2")
    slots += layer_norm_slots(("layers", "final_layer_norm"), f"{block}.final_layer_norm")
    slots += layer_norm_slots(("emb_layer_norm_after",), "emb_layer_norm_after")
    slots += linear_slots(("lm_head", "dense"), "lm_head.dense")
    slots += layer_norm_slots(("lm_head", "layer_norm"), "lm_head.layer_norm")
    slots.append(TensorSlot(("lm_head", "bias"), "lm_head.bias"))
    return slots


def strip_prefix(name: str) -> str:
    """fair-esm's state-dict upgrade: drop ``encoder.sentence_encoder.`` or ``encoder.``."""
    for prefix in (ENCODER_PREFIX, HEAD_PREFIX):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def add_prefix(name: str) -> str:
    return HEAD_PREFIX + name if name.startswith("lm_head") else ENCODER_PREFIX + name


# Bounds no ESM model comes near; a larger value means a corrupted or crafted file (and would allocate absurdly).
_INT_FIELD_LIMIT = 1 << 20


def state_dict(data: Any, source: str) -> dict[str, Any]:
    """The ``model`` entry of a fair-esm checkpoint as ``{unprefixed name: tensor}``, its structure checked."""
    if not isinstance(data, Mapping) or "model" not in data:
        raise CheckpointError(f"{source}: no 'model' entry; this is not a fair-esm model checkpoint")
    model = data["model"]
    if not isinstance(model, Mapping):
        raise CheckpointError(
            f"{source}: 'model' is a {type(model).__name__}, not a mapping of tensor names to tensors; "
            "this is not a fair-esm model checkpoint"
        )
    bad = next((key for key in model if not isinstance(key, str)), None)
    if bad is not None:
        raise CheckpointError(f"{source}: 'model' has the key {bad!r:.60}, not a tensor name; the file is corrupted")
    return {strip_prefix(name): tensor for name, tensor in model.items()}


def _field(values: Any, *names: str, default: Any = None, source: str) -> Any:
    getter = values.get if isinstance(values, Mapping) else lambda key, fallback: getattr(values, key, fallback)
    for name in names:
        value = getter(name, None)
        if value is not None:
            return value
    if default is not None:
        return default
    raise CheckpointError(f"{source}: model arguments lack {names[0]!r}")


def _int_field(values: Any, *names: str, source: str) -> int:
    value = _field(values, *names, source=source)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _INT_FIELD_LIMIT:
        raise CheckpointError(f"{source}: model argument {names[0]!r} is {value!r:.40}, not a positive model size")
    return value


def _bool_field(values: Any, name: str, source: str) -> bool:
    value = _field(values, name, default=False, source=source)
    if not isinstance(value, bool | int):
        raise CheckpointError(f"{source}: model argument {name!r} is {value!r:.40}, not true or false")
    return bool(value)


def config_from_checkpoint(data: Mapping, state_names: set[str], source: str) -> ModelConfig:
    """Build the :class:`ModelConfig` described by a fair-esm checkpoint's ``args`` or ``cfg``."""
    try:
        return _config_from_checkpoint(data, state_names, source)
    except (ValueError, ZeroDivisionError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{source}: the checkpoint's model arguments describe no valid model ({exc})") from None


def _config_from_checkpoint(data: Mapping, state_names: set[str], source: str) -> ModelConfig:
    if "cfg" in data:
        cfg = data["cfg"]
        args = cfg.get("model") if isinstance(cfg, Mapping) else getattr(cfg, "model", None)
        if args is None:
            raise CheckpointError(f"{source}: 'cfg' has no 'model' section")
        embed_dim = _int_field(args, "encoder_embed_dim", source=source)
        return ModelConfig(
            architecture="esm2",
            num_layers=_int_field(args, "encoder_layers", source=source),
            embed_dim=embed_dim,
            attention_heads=_int_field(args, "encoder_attention_heads", source=source),
            ffn_embed_dim=4 * embed_dim,
            token_dropout=_bool_field(args, "token_dropout", source),
        )
    if "args" in data:
        args = data["args"]
        arch = _field(args, "arch", source=source)
        if arch != "roberta_large":
            raise CheckpointError(
                f"{source}: unknown architecture {arch!r}; esm-jax reads ESM-1b/ESM-1v ('roberta_large') "
                "and ESM-2 checkpoints (ESM-1, the MSA Transformer and ESM-IF are not supported)"
            )
        return ModelConfig(
            architecture="esm1b",
            num_layers=_int_field(args, "encoder_layers", "layers", source=source),
            embed_dim=_int_field(args, "encoder_embed_dim", "embed_dim", source=source),
            attention_heads=_int_field(args, "encoder_attention_heads", "attention_heads", source=source),
            ffn_embed_dim=_int_field(args, "encoder_ffn_embed_dim", "ffn_embed_dim", source=source),
            max_positions=_int_field(args, "max_positions", source=source),
            emb_layer_norm_before=any(name.startswith("emb_layer_norm_before") for name in state_names),
            token_dropout=_bool_field(args, "token_dropout", source),
        )
    raise CheckpointError(
        f"{source}: neither 'args' (ESM-1b/1v) nor 'cfg' (ESM-2) found; this is not a fair-esm model checkpoint"
    )


def checkpoint_header(config: ModelConfig) -> dict:
    """The ``args``/``cfg`` entry fair-esm needs to rebuild ``config``."""
    if config.architecture == "esm2":
        model = argparse.Namespace(
            encoder_layers=config.num_layers,
            encoder_embed_dim=config.embed_dim,
            encoder_ffn_embed_dim=config.ffn_embed_dim,
            encoder_attention_heads=config.attention_heads,
            token_dropout=config.token_dropout,
        )
        return {"cfg": {"model": model}}
    args = argparse.Namespace(
        arch="roberta_large",
        encoder_layers=config.num_layers,
        encoder_embed_dim=config.embed_dim,
        encoder_ffn_embed_dim=config.ffn_embed_dim,
        encoder_attention_heads=config.attention_heads,
        max_positions=config.max_positions,
        token_dropout=config.token_dropout,
    )
    return {"args": args}


def regression_path(model_path: Path) -> Path:
    """Where fair-esm looks for the contact regression of ``model_path``."""
    return model_path.with_name(model_path.stem + "-contact-regression.pt")


def expects_regression(model_path: Path) -> bool:
    """fair-esm ships contact regressions for every model except ESM-1v (by file name)."""
    return "esm1v" not in model_path.stem
