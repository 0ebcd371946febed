"""Reference models from fair-esm and Hugging Face transformers, written in their official formats.

Tests build small randomly initialised PyTorch models here, save them exactly as the official
checkpoints are laid out, and compare esm-jax against the PyTorch outputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from esm_jax.checkpoints import fair_esm
from esm_jax.checkpoints.tensor_map import export_from
from esm_jax.model import ESM, ModelConfig

torch = pytest.importorskip("torch")
esm = pytest.importorskip("esm")

from esm.model.esm1 import ProteinBertModel  # noqa: E402
from esm.model.esm2 import ESM2  # noqa: E402

# fair-esm 2.0.0's loader calls torch.load with weights_only (the default since torch 2.6), which
# refuses the pickled argparse.Namespace of official checkpoints unless it is allow-listed.
torch.serialization.add_safe_globals([argparse.Namespace])

SEQUENCES = [
    ("long", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVV"),
    ("masked", "MKTA<mask>IAKQRQ<mask>SFVKSH"),
    ("short", "GSHMAC"),
    ("odd", "XBUZO.-LAG"),
]


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Replace every parameter (LayerNorms included) with N(0, 0.2) noise so no weight is trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name == "lm_head.weight":
                continue
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
            if name.endswith("layer_norm.weight") or name.endswith("norm_after.weight") or "norm_before.weight" in name:
                parameter.add_(1.0)


def fair_esm_model(config: ModelConfig) -> ESM2 | ProteinBertModel:
    """fair-esm's module of ``config``'s shape, with fair-esm's own initialisation, written out independently of
    esm-jax's checkpoint code so the tests check that code against fair-esm."""
    if config.architecture == "esm2":
        return ESM2(config.num_layers, config.embed_dim, config.attention_heads, token_dropout=config.token_dropout)
    args = argparse.Namespace(
        arch="roberta_large",
        layers=config.num_layers,
        embed_dim=config.embed_dim,
        ffn_embed_dim=config.ffn_embed_dim,
        attention_heads=config.attention_heads,
        max_positions=config.max_positions,
        token_dropout=config.token_dropout,
        emb_layer_norm_before=config.emb_layer_norm_before,
    )
    return ProteinBertModel(args, esm.Alphabet.from_architecture("ESM-1b"))


def esm2_model(num_layers: int, embed_dim: int, heads: int, *, seed: int = 0, fp16_inv_freq: bool = True) -> ESM2:
    model = fair_esm_model(ModelConfig("esm2", num_layers, embed_dim, heads, 4 * embed_dim))
    _randomise(model, seed)
    if fp16_inv_freq:
        for layer in model.layers:
            rot = layer.self_attn.rot_emb
            rot.inv_freq.copy_(rot.inv_freq.half().float())
    return model.eval()


def esm1b_model(
    num_layers: int,
    embed_dim: int,
    heads: int,
    ffn: int,
    *,
    before: bool = True,
    max_positions: int = 128,
    seed: int = 0,
) -> ProteinBertModel:
    config = ModelConfig(
        "esm1b", num_layers, embed_dim, heads, ffn, max_positions=max_positions, emb_layer_norm_before=before
    )
    model = fair_esm_model(config)
    _randomise(model, seed)
    with torch.no_grad():
        model.embed_tokens.weight[model.mask_idx].zero_()  # fair-esm zeroes it when loading ESM-1b
    return model.eval()


def save_official(model: torch.nn.Module, path: Path, *, fp16: bool = False, regression: bool = True) -> Path:
    """Write ``model`` as fair-esm's released files: the model .pt and its contact regression."""
    state = model.state_dict()
    weights = {}
    for name, tensor in state.items():
        if name.startswith("contact_head"):
            continue
        prefix = "encoder." if name.startswith("lm_head") else "encoder.sentence_encoder."
        weights[prefix + name] = tensor.half() if fp16 and tensor.is_floating_point() else tensor
    if isinstance(model, ESM2):
        cfg = argparse.Namespace(
            encoder_layers=model.num_layers,
            encoder_embed_dim=model.embed_dim,
            encoder_attention_heads=model.attention_heads,
            token_dropout=model.token_dropout,
        )
        header = {"cfg": {"model": cfg}}
    else:
        a = model.args
        header = {
            "args": argparse.Namespace(
                arch="roberta_large",
                encoder_layers=a.layers,
                encoder_embed_dim=a.embed_dim,
                encoder_ffn_embed_dim=a.ffn_embed_dim,
                encoder_attention_heads=a.attention_heads,
                max_positions=a.max_positions,
                token_dropout=a.token_dropout,
            )
        }
    torch.save({**header, "model": weights}, path)
    if regression:
        contact = {name: tensor for name, tensor in state.items() if name.startswith("contact_head")}
        torch.save({"model": contact}, path.with_name(path.stem + "-contact-regression.pt"))
    return path


def load_reference(path: Path) -> torch.nn.Module:
    """Load ``path`` with fair-esm's own loader, as its users do."""
    model, _ = esm.pretrained.load_model_and_alphabet_local(str(path))
    return model.eval()


def reference_tokens(sequences=SEQUENCES) -> np.ndarray:
    _, _, tokens = esm.Alphabet.from_architecture("ESM-1b").get_batch_converter()(sequences)
    return tokens.numpy()


def run_reference(model: torch.nn.Module, tokens: np.ndarray, **kwargs) -> dict:
    with torch.no_grad():
        out = model(torch.from_numpy(np.asarray(tokens, dtype=np.int64)), **kwargs)
    return {
        key: ({k: v.numpy() for k, v in value.items()} if isinstance(value, dict) else value.numpy())
        for key, value in out.items()
    }


def relative_error(ours, reference) -> float:
    """max |ours - reference| / max |reference|: the parity measure used across the test suite."""
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    return float(np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), 1e-30))


def masked_lm_inputs(tokens: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``tokens`` with about 30% of the residues replaced by <mask>, and where: the inputs of a masked-LM loss."""
    rng = np.random.default_rng(seed)
    selected = (tokens >= 4) & (tokens <= 30) & (rng.random(tokens.shape) < 0.3)
    return np.where(selected, 32, tokens), selected


def reference_mlm_gradients(
    model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, selected: np.ndarray, reduction: str = "mean"
) -> tuple[float, dict[str, np.ndarray]]:
    """fair-esm's cross-entropy of ``targets`` at the ``selected`` positions, and the gradient of each parameter."""
    model.zero_grad()
    logits = model(torch.from_numpy(inputs.astype(np.int64)))["logits"]
    picked = torch.from_numpy(selected)
    loss = torch.nn.functional.cross_entropy(
        logits[picked], torch.from_numpy(targets.astype(np.int64))[picked], reduction=reduction
    )
    loss.backward()
    return loss.item(), {name: p.grad.numpy() for name, p in model.named_parameters() if p.grad is not None}


def exported_gradients(model: ESM, grads: nnx.State) -> dict[str, np.ndarray]:
    """``grads`` of ``model``'s parameters under fair-esm's tensor names (the contact head excluded)."""
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    return export_from(nnx.merge(graphdef, grads, rest), fair_esm.model_slots(model.config), model.num_layers)


def gradient_errors(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Per tensor of both: max |ours - reference| over the tensor's largest reference value.

    Some gradients are zero in exact arithmetic (a key bias shifts every score of a query equally) and hold only
    rounding noise, so each scale is at least 1e-2 of the model's largest reference gradient.
    """
    floor = 1e-2 * max(np.abs(g).max() for g in reference.values())
    return {
        name: float(np.abs(value - reference[name]).max() / max(np.abs(reference[name]).max(), floor))
        for name, value in ours.items()
        if name in reference
    }
