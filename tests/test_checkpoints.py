"""Checkpoint round trips are exact, and every damaged or unsafe checkpoint is refused clearly."""

from __future__ import annotations

import argparse
import os
import zipfile

import numpy as np
import pytest
from flax import nnx

from esm_jax import build_model, pretrained
from esm_jax.checkpoints import native, torch_reader, torch_writer
from esm_jax.errors import CheckpointError, UnsafeCheckpointError
from esm_jax.model import ModelConfig
from tests.fair_esm_reference import (
    esm1b_model,
    esm2_model,
    load_reference,
    reference_tokens,
    run_reference,
    save_official,
    torch,
)


@pytest.mark.parametrize("kind", ["esm2", "esm1b"])
def test_fair_esm_to_esm_jax_to_fair_esm_is_lossless(tmp_path, kind):
    original = esm2_model(2, 32, 2) if kind == "esm2" else esm1b_model(2, 32, 2, 64)
    source = save_official(original, tmp_path / f"{kind}_source.pt")
    ours, _ = pretrained.load_model_and_alphabet_local(source)
    exported = tmp_path / "out" / f"{kind}_exported.pt"
    pretrained.save_fair_esm(ours, exported)
    before, after = load_reference(source), load_reference(exported)
    for (name, a), (_, b) in zip(before.state_dict().items(), after.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    tokens = reference_tokens()
    expected = run_reference(before, tokens, repr_layers=[1], return_contacts=True)
    got = run_reference(after, tokens, repr_layers=[1], return_contacts=True)
    for key in ("logits", "contacts", "attentions"):
        np.testing.assert_array_equal(got[key], expected[key])


def test_export_respects_fair_esm_file_naming(tmp_path):
    model = build_model(ModelConfig("esm2", 1, 32, 2, 128))
    with pytest.raises(ValueError, match="start with 'esm2'"):
        pretrained.save_fair_esm(model, tmp_path / "mymodel.pt")
    model.has_contact_regression = False
    with pytest.raises(ValueError, match="no contact regression"):
        pretrained.save_fair_esm(model, tmp_path / "esm2_mine.pt")


def test_legacy_torch_format_is_read(tmp_path):
    path = tmp_path / "esm2_legacy.pt"
    model = esm2_model(1, 32, 2)
    save_official(model, tmp_path / "esm2_zip.pt")
    data = torch.load(tmp_path / "esm2_zip.pt")
    torch.save(data, path, _use_new_zipfile_serialization=False)
    os.replace(tmp_path / "esm2_zip-contact-regression.pt", tmp_path / "esm2_legacy-contact-regression.pt")
    ours, _ = pretrained.load_model_and_alphabet_local(path)
    expected = run_reference(model, reference_tokens())
    np.testing.assert_allclose(ours(reference_tokens())["logits"], expected["logits"], rtol=1e-4, atol=1e-4)


def test_orbax_save_restore_is_bit_exact(tmp_path):
    model = build_model(ModelConfig("esm1b", 2, 32, 2, 64, emb_layer_norm_before=True, max_positions=100), seed=3)
    native.save(model, tmp_path / "ckpt")
    restored, _ = pretrained.load_model_and_alphabet_local(tmp_path / "ckpt")
    assert restored.config == model.config
    for (path, a), (_, b) in zip(
        nnx.to_flat_state(nnx.state(model)), nnx.to_flat_state(nnx.state(restored)), strict=True
    ):
        assert np.array_equal(np.asarray(a[...]), np.asarray(b[...])), path
    tokens = reference_tokens()
    np.testing.assert_array_equal(model(tokens)["logits"], restored(tokens)["logits"])
    with pytest.raises(FileExistsError):
        native.save(model, tmp_path / "ckpt")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_malicious_pickle_is_refused_without_running(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(
        {"model": {"w": torch.ones(2)}, "args": _RunsCode(marker)}, path, _use_new_zipfile_serialization=not legacy
    )
    with pytest.raises(UnsafeCheckpointError, match="refused to load 'posix.system'"):
        pretrained.load_model_and_alphabet_local(path)
    assert not marker.exists()


def test_a_truncated_file_is_refused(tmp_path):
    path = save_official(esm2_model(1, 32, 2), tmp_path / "esm2_cut.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        pretrained.load_model_and_alphabet_local(path)


def test_a_corrupted_tensor_record_is_refused(tmp_path):
    path = save_official(esm2_model(1, 32, 2), tmp_path / "esm2_flip.pt")
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 1000)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 100
    data[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        pretrained.load_model_and_alphabet_local(path)


def test_a_corrupted_pickle_is_refused(tmp_path):
    path = tmp_path / "esm2_garbage.pt"
    torch_writer.save({"model": {}}, path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content[:-5] if name.endswith("data.pkl") else content)
    with pytest.raises(CheckpointError, match="pickle is truncated or corrupted"):
        torch_reader.load(path)


def test_an_unknown_architecture_is_refused(tmp_path):
    path = tmp_path / "esm1_t6.pt"
    torch_writer.save({"args": argparse.Namespace(arch="protein_bert_base"), "model": {}}, path)
    with pytest.raises(CheckpointError, match="unknown architecture 'protein_bert_base'"):
        pretrained.load_model_and_alphabet_local(path)


def test_a_shape_mismatch_names_the_tensor(tmp_path):
    path = save_official(esm2_model(1, 32, 2), tmp_path / "esm2_shape.pt")
    data = torch.load(path)
    data["cfg"]["model"].encoder_embed_dim = 64
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"'embed_tokens.weight' has shape \(33, 32\).*needs \(33, 64\)"):
        pretrained.load_model_and_alphabet_local(path)


def test_contacts_without_a_regression_file_are_refused(tmp_path):
    path = save_official(esm2_model(1, 32, 2), tmp_path / "esm2_noreg.pt", regression=False)
    with pytest.warns(UserWarning, match="contact-regression"):
        model, _ = pretrained.load_model_and_alphabet_local(path)
    model(reference_tokens())
    with pytest.raises(CheckpointError, match="contact-regression"):
        model(reference_tokens(), return_contacts=True)


def test_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        pretrained.load_model_and_alphabet_local(path)
    with pytest.raises(CheckpointError, match="no such file"):
        pretrained.load_model_and_alphabet_local(tmp_path / "missing.pt")


def test_a_named_model_is_fetched_once_into_the_cache(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    (hub / "models").mkdir(parents=True)
    (hub / "regression").mkdir()
    original = esm2_model(1, 32, 2)
    save_official(original, hub / "models" / "esm2_t6_8M_UR50D.pt")
    os.replace(
        hub / "models" / "esm2_t6_8M_UR50D-contact-regression.pt",
        hub / "regression" / "esm2_t6_8M_UR50D-contact-regression.pt",
    )
    monkeypatch.setenv("ESM_JAX_HUB_URL", hub.as_uri())
    monkeypatch.setenv("ESM_JAX_CACHE", str(tmp_path / "cache"))
    model, _ = pretrained.load_model_and_alphabet("esm2_t6_8M_UR50D")
    assert (tmp_path / "cache" / "esm2_t6_8M_UR50D-contact-regression.pt").is_file()
    expected = run_reference(original, reference_tokens(), return_contacts=True)
    np.testing.assert_allclose(
        model(reference_tokens(), return_contacts=True)["contacts"], expected["contacts"], atol=1e-5
    )
    (hub / "models" / "esm2_t6_8M_UR50D.pt").unlink()
    pretrained.load_model_and_alphabet("esm2_t6_8M_UR50D")


def test_reader_refuses_unlisted_globals_even_when_harmless(tmp_path):
    path = tmp_path / "set.pt"
    torch.save({"model": {1, 2}}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused to load '__builtin__.set'"):
        torch_reader.load(path)


def test_convert_cli_goes_pt_to_orbax_to_pt(tmp_path, capsys):
    from esm_jax.cli.main import main

    source = save_official(esm1b_model(2, 32, 2, 64), tmp_path / "esm1b_small.pt")
    assert main(["convert", str(source), str(tmp_path / "native")]) == 0
    assert main(["convert", str(tmp_path / "native"), str(tmp_path / "esm1b_back.pt")]) == 0
    assert "done" in capsys.readouterr().out
    tokens = reference_tokens()
    expected = run_reference(load_reference(source), tokens, return_contacts=True)
    got = run_reference(load_reference(tmp_path / "esm1b_back.pt"), tokens, return_contacts=True)
    np.testing.assert_array_equal(got["logits"], expected["logits"])
    assert main(["convert", str(source), str(tmp_path / "native")]) == 2
    assert "already exists" in capsys.readouterr().err
