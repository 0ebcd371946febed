"""Hugging Face ``transformers`` ESM checkpoints (``EsmForMaskedLM`` folders).

A folder holds ``config.json`` and weights as ``model.safetensors`` or ``pytorch_model.bin``,
either whole or sharded with an ``*.index.json``. Weights are read without PyTorch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from jax.sharding import Mesh

from esm_jax.alphabet import Alphabet
from esm_jax.checkpoints import safetensors_reader, torch_reader
from esm_jax.checkpoints.tensor_map import (
    TensorSlot,
    as_numpy,
    blank_contact_regression,
    build_from_tensors,
    layer_norm_slots,
    linear_slots,
    tensor_shape,
)
from esm_jax.errors import CheckpointError
from esm_jax.model import ESM, ModelConfig
from esm_jax.model.rotary import default_inverse_frequencies

_LAYER = "esm.encoder.layer.{layer}"
_ROTARY_PER_LAYER = f"{_LAYER}.attention.self.rotary_embeddings.inv_freq"
# transformers ≥ 5 keeps one shared copy, saved under either name.
_ROTARY_SHARED = ("esm.rotary_embeddings.inv_freq", "esm.encoder.layer.*.attention.self.rotary_embeddings.inv_freq")
# Old BERT-style names that transformers still writes on save.
_LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}
# Present in some exports but not used by the masked-LM model.
_IGNORED = ("esm.embeddings.position_ids", "esm.pooler.", "lm_head.decoder.weight")
CONTACT_SLOTS = [
    TensorSlot(("contact_head", "regression", "kernel"), "esm.contact_head.regression.weight", transpose=True),
    TensorSlot(("contact_head", "regression", "bias"), "esm.contact_head.regression.bias"),
]


def model_slots(config: ModelConfig) -> list[TensorSlot]:
    """Every model tensor except the contact regression, under ``EsmForMaskedLM`` names."""
    slots = [TensorSlot(("embed_tokens", "embedding"), "esm.embeddings.word_embeddings.weight")]
    if config.architecture == "esm1b":
        slots.append(TensorSlot(("embed_positions", "embedding"), "esm.embeddings.position_embeddings.weight"))
        if config.emb_layer_norm_before:
            slots += layer_norm_slots(("emb_layer_norm_before",), "esm.embeddings.layer_norm")
    for ours, theirs in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
        slots += linear_slots(("layers", "self_attn", ours), f"{_LAYER}.attention.self.{theirs}")
    slots += linear_slots(("layers", "self_attn", "out_proj"), f"{_LAYER}.attention.output.dense")
    if config.uses_rotary:
        slots.append(TensorSlot(("layers", "self_attn", "rotary_frequencies"), _ROTARY_PER_LAYER))
    slots += layer_norm_slots(("layers", "self_attn_layer_norm"), f"{_LAYER}.attention.LayerNorm")
    slots += linear_slots(("layers", "fc1"), f"{_LAYER}.intermediate.dense")
    slots += linear_slots(("layers", "fc2"), f"{_LAYER}.output.dense")
    slots += layer_norm_slots(("layers", "final_layer_norm"), f"{_LAYER}.LayerNorm")
    slots += layer_norm_slots(("emb_layer_norm_after",), "esm.encoder.emb_layer_norm_after")
    slots += linear_slots(("lm_head", "dense"), "lm_head.dense")
    slots += layer_norm_slots(("lm_head", "layer_norm"), "lm_head.layer_norm")
    slots.append(TensorSlot(("lm_head", "bias"), "lm_head.bias"))
    return slots


def config_from_json(values: dict, source: str) -> ModelConfig:
    """Translate an ``EsmConfig`` into a :class:`ModelConfig`, refusing what esm-jax cannot run."""
    if values.get("model_type") not in (None, "esm"):
        raise CheckpointError(f"{source}: model_type {values.get('model_type')!r} is not an ESM model")
    if values.get("is_folding_model"):
        raise CheckpointError(f"{source}: ESMFold checkpoints are not supported, only ESM language models")
    alphabet = Alphabet()
    vocab = values.get("vocab_list")
    if values.get("vocab_size") != len(alphabet) or (vocab and list(vocab) != alphabet.all_toks):
        raise CheckpointError(f"{source}: the vocabulary differs from the ESM-1b/ESM-2 alphabet")
    if values.get("pad_token_id", 1) != alphabet.padding_idx or values.get("mask_token_id", 32) != alphabet.mask_idx:
        raise CheckpointError(f"{source}: pad/mask token ids differ from the ESM alphabet")
    kind = values.get("position_embedding_type", "absolute")
    if kind not in ("absolute", "rotary"):
        raise CheckpointError(f"{source}: position_embedding_type {kind!r} is not supported")
    try:
        return ModelConfig(
            architecture="esm1b" if kind == "absolute" else "esm2",
            num_layers=int(values["num_hidden_layers"]),
            embed_dim=int(values["hidden_size"]),
            attention_heads=int(values["num_attention_heads"]),
            ffn_embed_dim=int(values["intermediate_size"]),
            max_positions=int(values.get("max_position_embeddings", 1026)) - alphabet.padding_idx - 1,
            emb_layer_norm_before=bool(values.get("emb_layer_norm_before", False)),
            token_dropout=bool(values.get("token_dropout", False)),
            layer_norm_eps=float(values.get("layer_norm_eps", 1e-5)),
        )
    except KeyError as exc:
        raise CheckpointError(f"{source}: config.json lacks {exc.args[0]!r}") from None
    except ValueError as exc:
        raise CheckpointError(f"{source}: unsupported configuration ({exc})") from None


def _weight_files(folder: Path) -> list[Path]:
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = folder / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            return [folder / name for name in sorted(set(weight_map.values()))]
        if (folder / single).is_file():
            return [folder / single]
    raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin weights found")


def read_tensors(folder: Path) -> dict[str, Any]:
    """Lazy tensors of every weight file in ``folder``, by name."""
    tensors: dict[str, Any] = {}
    for file in _weight_files(folder):
        if not file.is_file():
            raise CheckpointError(f"{file}: weight shard listed in the index is missing")
        if file.suffix == ".safetensors":
            tensors.update(safetensors_reader.read_header(file))
        else:
            state = torch_reader.load(file)
            if not isinstance(state, dict):
                raise CheckpointError(f"{file}: expected a state dict of tensors")
            tensors.update(state)
    return {_modern_name(name): tensor for name, tensor in tensors.items()}


def _modern_name(name: str) -> str:
    for legacy, modern in _LEGACY_SUFFIXES.items():
        if name.endswith(legacy):
            return name[: -len(legacy)] + modern
    return name


def _rotary_per_layer(tensors: dict[str, Any], config: ModelConfig) -> None:
    """Give every layer its inverse frequencies: stored per layer, shared, or (if absent) default."""
    if _ROTARY_PER_LAYER.format(layer=0) in tensors:
        return
    shared = next((tensors.pop(name) for name in _ROTARY_SHARED if name in tensors), None)
    value = np.asarray(default_inverse_frequencies(config.head_dim)) if shared is None else shared
    for layer in range(config.num_layers):
        tensors[_ROTARY_PER_LAYER.format(layer=layer)] = value


def _check_tied_decoder(tensors: dict[str, Any], source: str) -> None:
    """ESM ties the LM decoder to the token embeddings; an untied decoder cannot be represented."""
    decoder = tensors.get("lm_head.decoder.weight")
    embeddings = tensors.get("esm.embeddings.word_embeddings.weight")
    if decoder is None or embeddings is None:
        return
    if tensor_shape(decoder) != tensor_shape(embeddings) or not np.array_equal(as_numpy(decoder), as_numpy(embeddings)):
        raise CheckpointError(f"{source}: lm_head.decoder.weight is not tied to the token embeddings")


def load(
    folder: str | os.PathLike,
    *,
    on_tensor: Callable[[str], None] = lambda name: None,
    mesh: Mesh | None = None,
    **runtime_options,
) -> ESM:
    """Load an ``EsmForMaskedLM`` checkpoint folder; ``runtime_options`` are ModelConfig fields (``compute_dtype``…).

    With a ``mesh`` each tensor is read straight into its shards.
    """
    folder = Path(folder)
    try:
        values = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{folder / 'config.json'}: not valid JSON ({exc})") from None
    config = config_from_json(values, str(folder)).replace(**runtime_options)
    tensors = read_tensors(folder)
    if config.uses_rotary:
        _rotary_per_layer(tensors, config)
    slots = model_slots(config)
    has_regression = CONTACT_SLOTS[0].name in tensors
    if not has_regression:
        tensors.update(blank_contact_regression(config, CONTACT_SLOTS))
    slots = slots + CONTACT_SLOTS
    known = {name for slot in slots for name in slot.names(config.num_layers)}
    unexpected = sorted(n for n in tensors if n not in known and not n.startswith(_IGNORED))
    if unexpected:
        raise CheckpointError(f"{folder}: unexpected tensors {unexpected[:5]}; not an EsmForMaskedLM checkpoint?")
    _check_tied_decoder(tensors, str(folder))
    model = build_from_tensors(config, slots, tensors, str(folder), on_tensor, mesh)
    model.has_contact_regression = has_regression
    return model
