"""esm-jax loads Hugging Face ESM folders and reproduces transformers' EsmForMaskedLM in float32."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esm_jax import pretrained
from esm_jax.errors import CheckpointError
from tests.fair_esm_reference import reference_tokens, relative_error, torch

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4


def _hf_model(rotary: bool, layers: int, dim: int, heads: int, seed: int):
    config = transformers.EsmConfig(
        vocab_size=33,
        hidden_size=dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * dim if not rotary else 4 * dim,
        position_embedding_type="rotary" if rotary else "absolute",
        emb_layer_norm_before=not rotary,
        token_dropout=True,
        pad_token_id=1,
        mask_token_id=32,
        max_position_embeddings=1026,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = transformers.EsmForMaskedLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


@pytest.fixture(
    scope="module",
    params=[("esm1b_like", False, 2, 64, 4), ("esm2_like", True, 2, 64, 4), ("esm2_like_bin", True, 3, 48, 3)],
    ids=lambda p: p[0],
)
def pair(request, tmp_path_factory):
    name, rotary, layers, dim, heads = request.param
    model = _hf_model(rotary, layers, dim, heads, seed=layers * dim)
    folder = tmp_path_factory.mktemp(name)
    model.save_pretrained(folder, safe_serialization=not name.endswith("_bin"))
    ours, _ = pretrained.load_model_and_alphabet_local(folder)
    return model, ours


def test_outputs_match_transformers(pair):
    reference, ours = pair
    tokens = reference_tokens()
    ids = torch.from_numpy(tokens.astype(np.int64))
    attention_mask = (ids != 1).long()
    with torch.no_grad():
        out = reference(ids, attention_mask=attention_mask, output_hidden_states=True, output_attentions=True)
        contacts = reference.predict_contacts(ids, attention_mask=attention_mask)
    got = ours(tokens, repr_layers=range(ours.num_layers + 1), return_contacts=True)
    assert relative_error(got["logits"], out.logits.numpy()) < TOLERANCE
    for layer in range(ours.num_layers):
        assert relative_error(got["representations"][layer], out.hidden_states[layer].numpy()) < TOLERANCE
    with torch.no_grad():
        last = reference.esm(ids, attention_mask=attention_mask).last_hidden_state.numpy()
    assert relative_error(got["representations"][ours.num_layers], last) < TOLERANCE
    not_pad = (tokens != 1).astype(np.float32)
    pair_mask = not_pad[:, None, :] * not_pad[:, :, None]
    for layer, attention in enumerate(out.attentions):
        expected = attention.numpy() * pair_mask[:, None]
        assert relative_error(got["attentions"][:, layer], expected) < TOLERANCE
    assert relative_error(got["contacts"], contacts.numpy()) < TOLERANCE


def test_folding_checkpoints_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "esm", "is_folding_model": True, "vocab_size": 33}))
    with pytest.raises(CheckpointError, match="ESMFold"):
        pretrained.load_model_and_alphabet_local(tmp_path)


def test_missing_weights_are_reported(tmp_path):
    model = _hf_model(True, 1, 32, 2, seed=0)
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        pretrained.load_model_and_alphabet_local(tmp_path)
