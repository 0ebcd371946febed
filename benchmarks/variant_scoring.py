"""Masked-marginal scoring of every single mutant of BLAT_ECOLX: esm-jax against fair-esm's script logic.

The workload of fair-esm's ``examples/variant-prediction/predict.py --scoring-strategy masked-marginals``
on all 19 × 286 single mutants of TEM-1 β-lactamase (BLAT_ECOLX, the wild type of the shared data folder):
fair-esm masks each token of the wild type in turn (one batch-1 forward pass per token, BOS and EOS
included, as the script does), keeps the log-softmax row of the masked token, then labels every mutant.
esm-jax parses the same mutant strings and runs :func:`esm_jax.inference.variant_scoring.score_mutants`.
Both models hold the same random weights of a released shape, in float32 on the CPU, in one process. The
esm-jax time is reported without compilation (warm, the usual case: the ``esm-jax`` command keeps compiled
programs on disk) and with it (cold, first call in a fresh process). ``--positions N`` restricts both sides
to the mutants of the first N positions (for shapes too slow to run whole; the work per position is the same).

    python benchmarks/variant_scoring.py                                   # esm2_t12_35M_UR50D
    python benchmarks/variant_scoring.py --models esm2_t33_650M_UR50D --positions 32
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import esm
import numpy as np
import torch
from forward_throughput import reference_model, same_weights

from esm_jax.alphabet import STANDARD_AMINO_ACIDS
from esm_jax.inference.mutations import parse_mutants
from esm_jax.inference.variant_scoring import score_mutants
from eval.mutational_effect.assays import load_assay


def all_single_mutants(wild_type: str, positions: int) -> list[str]:
    return [f"{wt}{i + 1}{mt}" for i, wt in enumerate(wild_type[:positions]) for mt in STANDARD_AMINO_ACIDS if mt != wt]


def fair_esm_script(model: torch.nn.Module, wild_type: str, mutants: list[str], positions: int) -> np.ndarray:
    """predict.py's masked-marginals: one pass per token (BOS/EOS included), then a label per mutant."""
    alphabet = esm.Alphabet.from_architecture("ESM-1b")
    _, _, tokens = alphabet.get_batch_converter()([("protein1", wild_type)])
    rows = []
    with torch.no_grad():
        for i in range(min(tokens.size(1), positions + 1)):  # all tokens, or BOS and the first N residues
            masked = tokens.clone()
            masked[0, i] = alphabet.mask_idx
            rows.append(torch.log_softmax(model(masked)["logits"], dim=-1)[:, i])
    token_probs = torch.cat(rows, dim=0).unsqueeze(0)
    scores = []
    for text in mutants:
        wt, index, mt = text[0], int(text[1:-1]) - 1, text[-1]
        assert wild_type[index] == wt
        score = token_probs[0, 1 + index, alphabet.get_idx(mt)] - token_probs[0, 1 + index, alphabet.get_idx(wt)]
        scores.append(score.item())
    return np.array(scores)


def run(name: str, wild_type: str, positions: int, toks_per_batch: int) -> dict:
    reference = reference_model(name)
    ours = same_weights(reference, name)
    texts = all_single_mutants(wild_type, positions)

    def run_ours() -> np.ndarray:
        return score_mutants(
            ours, wild_type, parse_mutants(texts, wild_type), "masked-marginals", toks_per_batch=toks_per_batch
        )

    start = time.perf_counter()
    run_ours()
    cold = time.perf_counter() - start
    start = time.perf_counter()
    got = run_ours()
    warm = time.perf_counter() - start
    start = time.perf_counter()
    expected = fair_esm_script(reference, wild_type, texts, positions)
    reference_seconds = time.perf_counter() - start
    return {
        "model": name,
        "mutants": len(texts),
        "fair_esm_s": reference_seconds,
        "esm_jax_warm_s": warm,
        "esm_jax_cold_s": cold,
        "ratio_warm": reference_seconds / warm,
        "ratio_cold": reference_seconds / cold,
        "max_abs_diff": float(np.max(np.abs(got - expected))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["esm2_t12_35M_UR50D"], help="released shapes, random weights")
    parser.add_argument("--positions", type=int, default=0, help="score only the first N positions (0: all 286)")
    parser.add_argument("--toks-per-batch", type=int, default=8192, help="esm-jax tokens per batch (default: 8192)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("ESM_JAX_SHARED_DATA", "../shared/data")))
    args = parser.parse_args()
    wild_type = load_assay(args.data, "BLAT_ECOLX").wild_type
    positions = args.positions or len(wild_type)
    print(f"BLAT_ECOLX, {len(wild_type)} residues; torch threads: {torch.get_num_threads()}, CPUs: {os.cpu_count()}")
    print("| model | mutants | fair-esm s | esm-jax s (warm) | ratio | esm-jax s (cold) | ratio cold | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        r = run(name, wild_type, positions, args.toks_per_batch)
        print(
            f"| {r['model']} | {r['mutants']} | {r['fair_esm_s']:.1f} | {r['esm_jax_warm_s']:.1f} | "
            f"{r['ratio_warm']:.2f}x | {r['esm_jax_cold_s']:.1f} | {r['ratio_cold']:.2f}x | {r['max_abs_diff']:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
