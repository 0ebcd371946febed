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
``--dtypes float32 bfloat16`` also times esm-jax with bfloat16 matrix multiplications (against fair-esm in
float32); several ``--toks-per-batch`` values time each batch size as its own variant in the same rounds;
``--rounds`` alternates fair-esm and esm-jax runs and reports the median and min–max ratio. Each variant's
scores are compared with fair-esm's: their largest difference in nats and their Spearman rank correlation
(what a deep-mutational-scan evaluation reads).

    python benchmarks/variant_scoring.py                                   # esm2_t12_35M_UR50D
    python benchmarks/variant_scoring.py --models esm2_t33_650M_UR50D --positions 32
    python benchmarks/variant_scoring.py --dtypes bfloat16 --toks-per-batch 1024 2048 4096 --rounds 3
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from pathlib import Path

import esm
import numpy as np
import torch
from forward_throughput import reference_model, same_weights
from settled import settled_run

from data_pipeline.layout import data_root
from esm_jax.alphabet import STANDARD_AMINO_ACIDS
from esm_jax.host_allocator import allocator_setting
from esm_jax.inference.mutations import parse_mutants
from esm_jax.inference.rank_correlation import spearman
from esm_jax.inference.variant_scoring import default_tokens_per_batch, score_mutants
from eval.variants.assays import load_assay


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


def run(
    name: str, wild_type: str, positions: int, batch_sizes: list[int], dtypes: list[str], rounds: int
) -> list[dict]:
    """One row per (dtype, tokens per batch) variant; every round times fair-esm once and each variant once."""
    reference = reference_model(name)
    texts = all_single_mutants(wild_type, positions)
    mutants = parse_mutants(texts, wild_type)
    variants = [(dtype, tokens) for dtype in dtypes for tokens in batch_sizes]
    models = {dtype: same_weights(reference, name, dtype) for dtype in dtypes}
    scorers, cold, results = {}, {}, {}
    for dtype, tokens in variants:
        scorers[dtype, tokens] = functools.partial(
            score_mutants, models[dtype], wild_type, mutants, "masked-marginals",
            toks_per_batch=tokens, show_progress=False,
        )  # fmt: skip
        start = time.perf_counter()
        results[dtype, tokens] = scorers[dtype, tokens]()
        cold[dtype, tokens] = time.perf_counter() - start
    reference_times, warm = [], {variant: [] for variant in variants}
    for _ in range(rounds):
        seconds, expected = settled_run(lambda: fair_esm_script(reference, wild_type, texts, positions))
        reference_times.append(seconds)
        for variant, scorer in scorers.items():
            warm[variant].append(settled_run(scorer)[0])
    rows = []
    for variant in variants:
        ratios = [theirs / mine for theirs, mine in zip(reference_times, warm[variant], strict=True)]
        rows.append({
            "model": name, "dtype": variant[0], "toks_per_batch": variant[1], "mutants": len(texts),
            "fair_esm_s": statistics.median(reference_times), "esm_jax_warm_s": statistics.median(warm[variant]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "esm_jax_cold_s": cold[variant], "ratio_cold": statistics.median(reference_times) / cold[variant],
            "max_abs_diff": float(np.max(np.abs(results[variant] - expected))),
            "spearman": spearman(results[variant], expected),
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["esm2_t12_35M_UR50D"], help="released shapes, random weights")
    parser.add_argument("--positions", type=int, default=0, help="score only the first N positions (0: all 286)")
    parser.add_argument(
        "--toks-per-batch", type=int, nargs="+", help="esm-jax tokens per batch, one variant each (default: its own)"
    )
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=1, help="alternating timed rounds (default: 1)")
    parser.add_argument("--data", type=Path, default=data_root())
    args = parser.parse_args()
    wild_type = load_assay(args.data, "BLAT_ECOLX").wild_type
    positions = args.positions or len(wild_type)
    print(f"BLAT_ECOLX, {len(wild_type)} residues; torch threads: {torch.get_num_threads()}, CPUs: {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.2f}; malloc: {allocator_setting()}")  # fmt: skip
    batch_sizes = args.toks_per_batch or [default_tokens_per_batch()]
    print("| model | esm-jax dtype | tokens per batch | mutants | fair-esm s | esm-jax s (warm) | ratio (min–max) "
          "| esm-jax s (cold) | ratio cold | max abs diff | Spearman ρ |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for r in run(name, wild_type, positions, batch_sizes, args.dtypes, args.rounds):
            print(
                f"| {r['model']} | {r['dtype']} | {r['toks_per_batch']} | {r['mutants']} | {r['fair_esm_s']:.1f} | "
                f"{r['esm_jax_warm_s']:.1f} | "
                f"{r['ratio']:.2f}× ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) | {r['esm_jax_cold_s']:.1f} | "
                f"{r['ratio_cold']:.2f}× | {r['max_abs_diff']:.1e} | {r['spearman']:.5f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
