"""Against fair-esm with the same random weights: identical wt-marginal and masked-marginal scores on real BLAT_ECOLX.

The reference follows fair-esm's examples/variant-prediction/predict.py with fair-esm's own model and batch
converter: one forward pass over the wild type (wt-marginals) or one per token with that token masked
(masked-marginals), then ``log p(mutant) − log p(wild type)`` at token ``1 + position − offset``.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from esm_jax import pretrained
from esm_jax.cli.main import main
from esm_jax.inference.mutations import parse_mutants
from esm_jax.inference.variant_scoring import score_mutants
from eval.variants.assays import ASSAYS, load_assay
from tests.fair_esm_reference import esm, esm1b_model, esm2_model, load_reference, relative_error, save_official, torch

OFFSET = 24  # fair-esm's README example scores BLAT_ECOLX from residue H24 with --offset-idx 24
TOLERANCE = 1e-4  # the project's parity bound with fair-esm, relative to the largest score
STRATEGIES = ("wt-marginals", "masked-marginals")


_REFERENCE: dict = {}


def _fair_esm_scores(checkpoint, sequence: str, mutants: list[str], strategy: str) -> np.ndarray:
    """fair-esm's predict.py logic on fair-esm's model read from ``checkpoint`` (computed once per input)."""
    key = (str(checkpoint), sequence, tuple(mutants), strategy)
    if key not in _REFERENCE:
        _REFERENCE[key] = _predict_py(load_reference(checkpoint), sequence, mutants, strategy)
    return _REFERENCE[key]


def _predict_py(model, sequence: str, mutants: list[str], strategy: str) -> np.ndarray:
    """predict.py's scoring; for masked-marginals only the tokens some mutant reads are masked (one pass each)."""
    alphabet = esm.Alphabet.from_architecture("ESM-1b")
    _, _, tokens = alphabet.get_batch_converter()([("protein1", sequence)])
    parsed = [(text[0], int(text[1:-1]) - OFFSET, text[-1]) for text in mutants]
    with torch.no_grad():
        if strategy == "wt-marginals":
            token_probs = torch.log_softmax(model(tokens)["logits"], dim=-1)[0]
        else:
            token_probs = torch.zeros(tokens.size(1), len(alphabet.all_toks))
            for i in sorted({1 + index for _, index, _ in parsed}):
                masked = tokens.clone()
                masked[0, i] = alphabet.mask_idx
                token_probs[i] = torch.log_softmax(model(masked)["logits"], dim=-1)[0, i]
    scores = []
    for wt, index, mt in parsed:
        assert sequence[index] == wt
        scores.append(
            float(token_probs[1 + index, alphabet.get_idx(mt)] - token_probs[1 + index, alphabet.get_idx(wt)])
        )
    return np.array(scores)


@pytest.fixture(scope="module")
def blat(shared_data, tmp_path_factory):
    """BLAT_ECOLX from residue 24 on, and a CSV of every 100th row of the real assay with all its columns."""
    sequence = load_assay(shared_data, "BLAT_ECOLX").wild_type[OFFSET - 1 :]
    with open(shared_data / ASSAYS["BLAT_ECOLX"].csv, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    subset = [rows[0]] + rows[1::100]
    path = tmp_path_factory.mktemp("blat") / "blat_subset.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(subset)
    mutants = [row[rows[0].index("mutant")] for row in subset[1:]]
    return sequence, path, mutants


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """One official fair-esm file per architecture, read by fair-esm and by esm-jax."""
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "esm2": save_official(esm2_model(2, 32, 2, seed=21), folder / "esm2_variants.pt"),
        "esm1b": save_official(esm1b_model(2, 32, 2, 64, max_positions=300, seed=22), folder / "esm1b_variants.pt"),
    }


@pytest.mark.parametrize("architecture", ["esm2", "esm1b"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_library_scores_equal_fair_esm(checkpoints, blat, architecture, strategy):
    sequence, _, texts = blat
    ours_model, _ = pretrained.load_model_and_alphabet_local(checkpoints[architecture])
    mutants = parse_mutants(texts, sequence, offset=OFFSET)
    ours = score_mutants(ours_model, sequence, mutants, strategy, toks_per_batch=16384)  # one batch
    expected = _fair_esm_scores(checkpoints[architecture], sequence, texts, strategy)
    assert relative_error(ours, expected) < TOLERANCE


def test_cli_column_equals_fair_esm_for_both_strategies(checkpoints, blat, tmp_path, capsys):
    sequence, csv_path, texts = blat
    checkpoint = checkpoints["esm2"]
    for strategy, spelling in zip(STRATEGIES, ("dashes", "underscores"), strict=True):
        out = tmp_path / f"{strategy}.csv"
        options = {
            "model-location": str(checkpoint),
            "dms-input": str(csv_path),
            "mutation-col": "mutant",
            "offset-idx": str(OFFSET),
            "scoring-strategy": strategy,
            "score-col": "2500",
            "dms-output": str(out),
        }
        argv = ["score-variants", "--sequence", sequence]
        for name, value in options.items():
            argv += [f"--{name if spelling == 'dashes' else name.replace('-', '_')}", value]
        assert main(argv) == 0
        with open(out, newline="") as handle:
            written = list(csv.DictReader(handle))
        assert [row["mutant"] for row in written] == texts
        ours = np.array([float(row[str(checkpoint)]) for row in written])
        assert relative_error(ours, _fair_esm_scores(checkpoint, sequence, texts, strategy)) < TOLERANCE
        assert "Spearman rho = " in capsys.readouterr().out
