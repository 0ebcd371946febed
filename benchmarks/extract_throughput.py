"""``esm-jax extract`` packed and unpacked against fair-esm's ``scripts/extract.py``, on a real proteome.

The first ``--proteins`` proteins of the bundled proteome (or ``--fasta``), stops stripped, 1022
residues kept, one released model shape with the same random weights in both. First the batching alone,
no model run: the share of batch positions holding a real token, the number of batch shapes
(one compilation each for esm-jax) and the estimated forward FLOPs (a packed row attends over its
whole width). Then, unless ``--plan-only``, each extraction writes mean and per-token representations
of the last layer (``--include mean per_tok``) to a temporary folder: once to warm up (esm-jax compiles
every shape), then ``--rounds`` rounds in which fair-esm and each esm-jax variant (unpacked and packed,
in each of ``--dtypes``) run once each, alternating. Reported: median residues/s, and the median and
min–max of the per-round ratios to fair-esm (float32).

    python benchmarks/extract_throughput.py --plan-only                  # batching of the first 512 proteins
    python benchmarks/extract_throughput.py --proteins 512               # and the timed extractions
    python benchmarks/extract_throughput.py --proteins 512 --dtypes float32 bfloat16
    python benchmarks/extract_throughput.py --proteins 8 --model esm2_t6_8M_UR50D   # a quick check that it runs
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
from pathlib import Path

import esm
import torch
from forward_throughput import reference_model, same_weights
from settled import settled_run

from esm_jax.fasta import bundled_proteome, read_fasta
from esm_jax.host_allocator import allocator_setting
from esm_jax.inference.batching import default_row_width, plan_batches, plan_packed_batches
from esm_jax.inference.embedding import encode_records
from esm_jax.inference.extract import extract
from esm_jax.model import ModelConfig, named_config

TRUNCATION = 1022


def fair_esm_batches(records: list[tuple[str, str]], toks_per_batch: int) -> list[list[int]]:
    """fair-esm's extract.py batches: sorted by full length, each padded to its longest sequence."""
    dataset = esm.data.FastaBatchedDataset([label for label, _ in records], [sequence for _, sequence in records])
    return dataset.get_batch_indices(toks_per_batch, extra_toks_per_seq=1)


def batching_report(records: list[tuple[str, str]], config: ModelConfig, toks_per_batch: int) -> None:
    """Real-token share, shape count and estimated FLOPs of fair-esm's, bucketed and packed batches."""
    encoded = encode_records(records, TRUNCATION)
    width = default_row_width(encoded, config.max_batch_width)
    reference = [(len(batch), max(min(len(records[i][1]), TRUNCATION) for i in batch) + 2) for batch in
                 fair_esm_batches(records, toks_per_batch)]  # fmt: skip
    plans = {
        "fair-esm extract.py": reference,
        "esm-jax bucketed": [b.tokens.shape for b in plan_batches(encoded, toks_per_batch, config.max_batch_width)],
        f"esm-jax packed ({width}-token rows)": [
            b.tokens.shape for b in plan_packed_batches(encoded, toks_per_batch, width, config.max_batch_width)
        ],
    }
    real = sum(len(ids) + 2 for ids in encoded)
    for name, shapes in plans.items():
        positions = sum(rows * columns for rows, columns in shapes)
        flops = sum(rows * columns * config.forward_flops_per_token(columns) for rows, columns in shapes)
        print(
            f"  {name}: real-token share {real / positions:.3f}, {len(shapes)} batches, {len(set(shapes))} shapes, "
            f"{flops / 1e12:.2f} TFLOP estimated"
        )


def fair_esm_extract(model, records: list[tuple[str, str]], toks_per_batch: int, folder: Path) -> None:
    """fair-esm's extract.py with ``--include mean per_tok``: its batches, last layer, one file per protein."""
    converter = esm.Alphabet.from_architecture("ESM-1b").get_batch_converter(TRUNCATION)
    layer = model.num_layers
    with torch.no_grad():
        for batch in fair_esm_batches(records, toks_per_batch):
            labels, strs, tokens = converter([records[i] for i in batch])
            hidden = model(tokens, repr_layers=[layer])["representations"][layer]
            for row, (index, label) in enumerate(zip(batch, labels, strict=True)):
                per_token = hidden[row, 1 : min(len(strs[row]), TRUNCATION) + 1].clone()
                result = {"label": label, "representations": {layer: per_token},
                          "mean_representations": {layer: per_token.mean(0)}}  # fmt: skip
                torch.save(result, folder / f"{index}.pt")


def timed_extractions(
    records: list[tuple[str, str]], model_name: str, toks_per_batch: int, rounds: int, options: dict
) -> None:
    """A warm-up run of every variant, then ``rounds`` alternating rounds; residues/s and ratios to fair-esm."""
    reference = reference_model(model_name)
    runs = {"fair-esm extract.py": lambda folder: fair_esm_extract(reference, records, toks_per_batch, folder)}
    for dtype in options["dtypes"]:
        ours = same_weights(reference, model_name, dtype)
        for pack in (False, True):
            runs[f"esm-jax {'packed' if pack else 'unpacked'} {dtype}"] = functools.partial(
                extract, ours, records, include=("mean", "per_tok"), toks_per_batch=toks_per_batch, pack=pack,
                row_width=options["row_width"], show_progress=False,
            )  # fmt: skip
    residues = sum(min(len(sequence), TRUNCATION) for _, sequence in records)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(1 + rounds):
        for name, run in runs.items():
            with tempfile.TemporaryDirectory() as folder:
                seconds[name].append(settled_run(functools.partial(run, Path(folder)))[0])
    print("| run | first pass s | median residues/s | ratio to fair-esm (min–max) |")
    print("|---|---|---|---|")
    for name, times in seconds.items():
        summary = rounds_summary(times, seconds["fair-esm extract.py"], residues)
        print(f"| {name} | {times[0]:.1f} | {summary} |", flush=True)


def rounds_summary(times: list[float], baseline: list[float], residues: int) -> str:
    """``median residues/s | median ratio× (min–max)`` table cells of the timed rounds (every time but the first,
    the warm-up), each ratio being ``baseline``'s time over ``times``' in the same round."""
    ratios = [theirs / mine for theirs, mine in zip(baseline[1:], times[1:], strict=True)]
    return (
        f"{residues / statistics.median(times[1:]):,.0f} | "
        f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="esm2_t6_8M_UR50D", help="released model shape (random weights)")
    parser.add_argument("--fasta", type=Path, help="proteins to extract (default: the bundled proteome)")
    parser.add_argument("--proteins", type=int, default=512, help="the first N proteins of the file (default: 512)")
    parser.add_argument("--toks-per-batch", type=int, default=4096)
    parser.add_argument("--plan-only", action="store_true", help="report the batching only, run no model")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds after the warm-up (default: 3)")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--row-width", type=int, help="packed row width (default: esm-jax's default_row_width)")
    args = parser.parse_args()
    records = read_fasta(args.fasta or bundled_proteome(), strip_stop=True, limit=args.proteins)
    residues = sum(min(len(sequence), TRUNCATION) for _, sequence in records)
    print(f"{len(records)} proteins, {residues:,} residues, {args.model}, {args.toks_per_batch} tokens per batch")
    batching_report(records, named_config(args.model), args.toks_per_batch)
    if not args.plan_only:
        print(
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), load {os.getloadavg()[0]:.2f}; "
            f"malloc: {allocator_setting()}"
        )
        options = {"dtypes": args.dtypes, "row_width": args.row_width}
        timed_extractions(records, args.model, args.toks_per_batch, args.rounds, options)


if __name__ == "__main__":
    main()
