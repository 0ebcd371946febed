"""`esm-jax extract` writes what fair-esm's extract.py writes, safely and for every sequence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esm_jax import ModelConfig, build_model, pretrained
from esm_jax.cli.main import main
from esm_jax.errors import InvalidSequenceError
from esm_jax.fasta import FastaError, bundled_proteome, read_fasta
from esm_jax.inference import embedding
from esm_jax.inference.batching import bucket_width, plan_batches
from esm_jax.inference.extract import extract, load_extracted, output_names
from tests.eval_tiny_model import save_tiny_checkpoint
from tests.fair_esm_reference import esm, esm2_model, load_reference, relative_error, save_official, torch

PROTEINS = [
    ("sp|P1|first protein", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVV"),
    ("second", "GSHMACDEFGHIKLMNPQRSTVWY"),
    ("third/with slash", "MKTAYIAKQRQISFV"),
    ("fourth", "MKV"),
]


def _write_fasta(path, records):
    path.write_text("".join(f">{label}\n{sequence}\n" for label, sequence in records))
    return path


def _fair_esm_extract(model, fasta, layers, truncation):
    """fair-esm's scripts/extract.py logic, with its own dataset, batching and batch converter."""
    alphabet = esm.Alphabet.from_architecture("ESM-1b")
    dataset = esm.data.FastaBatchedDataset.from_file(str(fasta))
    batches = dataset.get_batch_indices(64, extra_toks_per_seq=1)
    loader = torch.utils.data.DataLoader(
        dataset, collate_fn=alphabet.get_batch_converter(truncation), batch_sampler=batches
    )
    results = {}
    with torch.no_grad():
        for labels, strs, tokens in loader:
            out = model(tokens, repr_layers=layers, return_contacts=True)
            for i, label in enumerate(labels):
                n = min(truncation, len(strs[i]))
                results[label] = {
                    "representations": {k: v[i, 1 : n + 1].numpy() for k, v in out["representations"].items()},
                    "mean_representations": {
                        k: v[i, 1 : n + 1].mean(0).numpy() for k, v in out["representations"].items()
                    },
                    "bos_representations": {k: v[i, 0].numpy() for k, v in out["representations"].items()},
                    "contacts": out["contacts"][i, :n, :n].numpy(),
                }
    return results


@pytest.mark.parametrize("truncation", [1022, 20])
def test_outputs_match_fair_esm_extract(tmp_path, truncation):
    checkpoint = save_official(esm2_model(2, 32, 2, seed=11), tmp_path / "esm2_small.pt")
    fasta = _write_fasta(tmp_path / "in.fasta", PROTEINS)
    expected = _fair_esm_extract(load_reference(checkpoint), fasta, [0, 1, 2], truncation)
    code = main(
        [
            "extract", str(checkpoint), str(fasta), str(tmp_path / "out"),
            "--include", "mean", "per_tok", "bos", "contacts",
            "--repr-layers", "0", "1", "-1", "--toks-per-batch", "128",
            "--truncation-seq-length", str(truncation),
        ]
    )  # fmt: skip
    assert code == 0
    names = dict(zip([label for label, _ in PROTEINS], output_names([label for label, _ in PROTEINS]), strict=True))
    for label, reference in expected.items():
        got = load_extracted(tmp_path / "out" / f"{names[label]}.npz")
        assert got["label"] == label
        for group in ("representations", "mean_representations", "bos_representations"):
            assert sorted(got[group]) == [0, 1, 2]
            for layer in (0, 1, 2):
                np.testing.assert_allclose(got[group][layer], reference[group][layer], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["contacts"], reference["contacts"], rtol=1e-4, atol=1e-5)
    index = (tmp_path / "out" / "index.tsv").read_text().splitlines()
    assert index[0] == "file\tlabel" and len(index) == len(PROTEINS) + 1
    assert not list((tmp_path / "out").glob("*.partial"))


def test_batching_covers_every_sequence_once_in_few_shapes():
    lengths = [5, 70, 71, 300, 1000, 62, 63, 64, 200, 1, 1022] * 3
    encoded = [[4] * n for n in lengths]
    batches = list(plan_batches(encoded, toks_per_batch=1024))
    seen = sorted(i for batch in batches for i in batch.indices)
    assert seen == list(range(len(lengths)))
    for batch in batches:
        assert batch.tokens.shape[1] == bucket_width(max(lengths[i] for i in batch.indices) + 2)
        assert batch.tokens.shape[0] >= len(batch.indices)
        assert batch.tokens.shape[0] * batch.tokens.shape[1] <= max(1024, batch.tokens.shape[1])
    assert len({batch.tokens.shape for batch in batches}) <= 12
    assert [bucket_width(n) for n in (2, 64, 65, 81, 97, 129, 1024, 1025)] == [64, 64, 80, 96, 128, 160, 1024, 1280]


def test_padding_rows_do_not_change_a_sequence(tmp_path):
    model, _ = pretrained.random_model_and_alphabet("esm2_t6_8M_UR50D", seed=1)
    summary = extract(
        model, PROTEINS, tmp_path, include=("per_tok", "contacts"), toks_per_batch=2048, show_progress=False
    )
    for label, sequence in PROTEINS:
        alone = model.embed(
            np.array([[0] + model.alphabet.encode(sequence) + [2]], np.int32), repr_layers=[-1], return_contacts=True
        )
        got = load_extracted(summary.files[label])
        np.testing.assert_allclose(
            got["representations"][6], alone["representations"][6][0, 1:-1], rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(got["contacts"], alone["contacts"][0], rtol=1e-5, atol=1e-5)


def _random_protein(length: int) -> str:
    return "".join(np.random.default_rng(length).choice(list("ACDEFGHIKLMNPQRSTVWY"), size=length))


# Lengths around a 64-token packed row: a single residue, one that fills a row exactly (62) and two that do not fit.
VARIED = [(f"v{n}", _random_protein(n)) for n in (1, 3, 17, 30, 45, 62, 100, 7, 150, 12)]


@pytest.mark.parametrize(
    "config",
    [ModelConfig("esm2", 2, 32, 4, 64), ModelConfig("esm1b", 2, 32, 4, 64, emb_layer_norm_before=True)],
    ids=["esm2", "esm1b"],
)
def test_packed_extraction_equals_unpacked_extraction(tmp_path, config):
    model = build_model(config, seed=5)
    runs = {
        pack: extract(
            model, VARIED, tmp_path / str(pack), repr_layers=[0, 1, 2], include=("per_tok", "mean", "bos"),
            toks_per_batch=128, pack=pack, row_width=64, show_progress=False,
        )
        for pack in (False, True)
    }  # fmt: skip
    for label, sequence in VARIED:
        packed, unpacked = (load_extracted(runs[pack].files[label]) for pack in (True, False))
        assert packed.keys() == unpacked.keys() and packed["label"] == label
        assert packed["representations"][2].shape == (len(sequence), 32)
        for group in ("representations", "mean_representations", "bos_representations"):
            for layer in (0, 1, 2):
                assert relative_error(packed[group][layer], unpacked[group][layer]) < 1e-5, (label, group, layer)


def test_cli_packs_with_pack_and_not_by_default_on_cpus(tmp_path, monkeypatch):
    checkpoint = save_tiny_checkpoint(tmp_path)
    fasta = _write_fasta(tmp_path / "in.fasta", PROTEINS + VARIED)
    packed_plans = []
    planner = embedding.plan_packed_batches

    def counted_planner(*args, **kwargs):
        packed_plans.append(args)
        return planner(*args, **kwargs)

    monkeypatch.setattr(embedding, "plan_packed_batches", counted_planner)
    for flags, folder in ((["--pack"], "packed"), ([], "unpacked"), (["--no-pack"], "unpacked")):
        command = ["extract", str(checkpoint), str(fasta), str(tmp_path / folder), "--include", "mean", "bos"]
        assert main([*command, "--toks-per-batch", "512", *flags]) == 0
        assert len(packed_plans) == 1, "only the --pack run packs on a CPU"
    for name in output_names([label for label, _ in PROTEINS + VARIED]):
        packed, unpacked = (load_extracted(tmp_path / folder / f"{name}.npz") for folder in ("packed", "unpacked"))
        assert packed.keys() == unpacked.keys()
        for group in ("mean_representations", "bos_representations"):
            assert relative_error(packed[group][2], unpacked[group][2]) < 1e-5
    index = (tmp_path / "packed" / "index.tsv").read_text()
    assert index == (tmp_path / "unpacked" / "index.tsv").read_text()


def test_a_bad_sequence_stops_before_anything_is_written(tmp_path):
    model, _ = pretrained.random_model_and_alphabet("esm2_t6_8M_UR50D")
    records = PROTEINS + [("broken", "MKTJ")]
    with pytest.raises(InvalidSequenceError, match="'broken': character 'J' at position 4"):
        extract(model, records, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    fasta = _write_fasta(tmp_path / "bad.fasta", [("x", "MK*")])
    code = main(
        ["extract", "esm2_t6_8M_UR50D", str(fasta), str(tmp_path / "o"), "--include", "mean", "--random-weights"]
    )
    assert code == 2
    assert "'x': character '*' at position 3" in capsys.readouterr().err


def test_fasta_reader_refuses_text_before_the_first_header(tmp_path):
    (tmp_path / "notes.fasta").write_text("sequences from the lab\n>a\nMKV\n")
    with pytest.raises(FastaError, match=r"notes.fasta: line 1 comes before the first '>' header"):
        read_fasta(tmp_path / "notes.fasta")
    (tmp_path / "blank_first.fasta").write_text("\n>a\nMKV\n")
    assert read_fasta(tmp_path / "blank_first.fasta") == [("a", "MKV")]


def test_fasta_reader_refuses_duplicates_and_empty_records(tmp_path):
    with pytest.raises(FastaError, match="record 2 repeats the label 'a' of record 1"):
        read_fasta(_write_fasta(tmp_path / "dup.fasta", [("a", "MK"), ("a", "MV")]))
    (tmp_path / "empty.fasta").write_text(">a\n\n>b\nMK\n")
    with pytest.raises(FastaError, match="record 1 .'a'. has an empty sequence"):
        read_fasta(tmp_path / "empty.fasta")


def test_bundled_proteome_is_available_and_clean_after_stripping_stops():
    records = read_fasta(bundled_proteome(), strip_stop=True)
    assert len(records) == 2100
    assert all("*" not in sequence for _, sequence in records)


def test_embed_sequences_keeps_input_order_and_drops_padding():
    from esm_jax.inference.embedding import embed_sequences

    model, _ = pretrained.random_model_and_alphabet("esm2_t6_8M_UR50D", seed=2)
    sequences = [sequence for _, sequence in PROTEINS]
    per_residue = embed_sequences(model, sequences, per_residue=True, toks_per_batch=256)
    means = embed_sequences(model, sequences)
    for sequence, residues, mean in zip(sequences, per_residue, means, strict=True):
        assert residues.shape == (len(sequence), 320)
        np.testing.assert_allclose(mean, residues.mean(axis=0), rtol=1e-6)


def test_files_are_named_after_the_first_word_and_index_keeps_the_whole_header(tmp_path):
    records = [
        ("contig_1 # 2 # 181 # 1 # ID=1_1;partial=00", "MKTAYIAKQRQ"),
        ("contig_1 # 190 # 400 # -1 # ID=1_2", "MKV"),
        ("Contig_1", "MKVL"),
        ("contig_1-2 already taken", "MKL"),
        ("", "MK"),
    ]
    assert output_names([label for label, _ in records]) == [
        "contig_1", "contig_1-2", "Contig_1-3", "contig_1-2-4", "unnamed",
    ]  # fmt: skip
    model = build_model(ModelConfig("esm2", 1, 32, 4, 64), seed=0)
    summary = extract(model, records, tmp_path, show_progress=False)
    index = (tmp_path / "index.tsv").read_text().splitlines()
    assert index[1:] == [f"{path.name}\t{label}" for label, path in summary.files.items()]
    assert index[1] == "contig_1.npz\tcontig_1 # 2 # 181 # 1 # ID=1_1;partial=00"
    assert load_extracted(tmp_path / "contig_1-2.npz")["label"] == "contig_1 # 190 # 400 # -1 # ID=1_2"


def test_window_starts_cover_every_residue_with_half_window_steps():
    from esm_jax.inference.extract import window_starts

    assert window_starts(50, 62) == [0] and window_starts(50, None) == [0]
    assert window_starts(150, 62) == [0, 31, 62, 88]
    for length in range(1, 300, 7):
        starts = window_starts(length, 20)
        covered = np.zeros(length, int)
        for start in starts:
            covered[start : start + 20] += 1
        assert covered.min() >= 1 and starts[-1] + min(20, length) == length


def _window_outputs(model, sequence):
    tokens = np.array([[0] + model.alphabet.encode(sequence) + [2]], np.int32)
    out = model.embed(tokens, repr_layers=[0, 2], return_contacts=True)
    return {layer: np.asarray(out["representations"][layer][0]) for layer in (0, 2)}, np.asarray(out["contacts"][0])


def test_sliding_windows_equal_the_whole_model_on_a_protein_shorter_than_a_window(tmp_path):
    model = build_model(ModelConfig("esm2", 2, 32, 4, 64), seed=3)
    records = [("short", _random_protein(40))]
    include = ("per_tok", "mean", "bos", "contacts")
    runs = {
        long: load_extracted(
            extract(model, records, tmp_path / long, repr_layers=[0, 2], include=include, long=long,
                    show_progress=False).files["short"]
        )
        for long in ("truncate", "sliding")
    }  # fmt: skip
    representations, contacts = _window_outputs(model, records[0][1])
    np.testing.assert_allclose(runs["sliding"]["representations"][2], representations[2][1:-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(runs["sliding"]["contacts"], contacts, rtol=1e-5, atol=1e-5)
    for group in ("representations", "mean_representations", "bos_representations"):
        np.testing.assert_array_equal(runs["sliding"][group][2], runs["truncate"][group][2])


def test_sliding_windows_average_overlapping_windows_on_a_long_protein(tmp_path):
    config = ModelConfig("esm1b", 2, 32, 4, 64, emb_layer_norm_before=True, max_positions=40)
    model = build_model(config, seed=4)
    sequence = _random_protein(100)
    window, starts = 38, [0, 19, 38, 57, 62]  # the model takes 40 tokens: 38 residues and BOS and EOS
    summary = extract(
        model, [("long", sequence)], tmp_path, repr_layers=[0, 2], include=("per_tok", "mean", "bos", "contacts"),
        long="sliding", toks_per_batch=128, show_progress=False,
    )  # fmt: skip
    got = load_extracted(summary.files["long"])
    total, cover = np.zeros((100, 32)), np.zeros(100)
    contacts, pairs, bos = np.zeros((100, 100)), np.zeros((100, 100)), []
    for start in starts:
        representations, window_contacts = _window_outputs(model, sequence[start : start + window])
        total[start : start + window] += representations[2][1:-1]
        cover[start : start + window] += 1
        contacts[start : start + window, start : start + window] += window_contacts
        pairs[start : start + window, start : start + window] += 1
        bos.append(representations[2][0])
    expected = total / cover[:, None]
    assert got["representations"][2].shape == (100, 32) and got["contacts"].shape == (100, 100)
    np.testing.assert_allclose(got["representations"][2], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["mean_representations"][2], expected.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["bos_representations"][2], np.mean(bos, axis=0), rtol=1e-4, atol=1e-5)
    held = pairs > 0
    np.testing.assert_allclose(got["contacts"][held], (contacts / np.where(held, pairs, 1))[held], rtol=1e-4, atol=1e-5)
    assert np.isnan(got["contacts"][0, 99]) and np.isnan(got["contacts"][~held]).all()
    assert json.loads((tmp_path / "extract.json").read_text())["long"] == "sliding"


def test_negative_truncation_is_refused(tmp_path):
    model = build_model(ModelConfig("esm2", 1, 32, 4, 64), seed=0)
    with pytest.raises(ValueError, match="truncation_seq_length must be positive"):
        extract(model, PROTEINS, tmp_path / "out", truncation_seq_length=-5, show_progress=False)
    assert not (tmp_path / "out").exists()
