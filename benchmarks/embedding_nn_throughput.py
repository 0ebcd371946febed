"""Evaluation-path throughput: mean-pooled embeddings against fair-esm, and exact nearest-neighbour search rate.

Embeddings: the same real SCOPe domain sequences, the same weights, in one process. esm-jax runs
``embed_sequences`` (the engine every evaluation uses: shape buckets, jitted, padding dropped); fair-esm
runs what its ``scripts/extract.py`` does (``FastaBatchedDataset`` token batches, ``model(tokens,
repr_layers=[last])``, mean over each sequence's residues). Both are warmed up on the full set once (this
compiles every esm-jax shape) and then timed; the largest difference between the two sets of embeddings is
printed as a check.

Nearest neighbours: exact blocked top-10 cosine search of random queries against 10^5 random embeddings
(the width of the model), warmed up, then timed.

    python benchmarks/embedding_nn_throughput.py                 # esm2_t6_8M shape, 256 domains, 10^5 NN
    python benchmarks/embedding_nn_throughput.py --model esm2_t12_35M_UR50D --domains 512
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import esm
import numpy as np
import torch
from esm.model.esm2 import ESM2

from data_pipeline.layout import data_root
from data_pipeline.readers.scope import read_astral_fasta
from esm_jax.checkpoints import fair_esm
from esm_jax.checkpoints.tensor_map import build_from_tensors
from esm_jax.inference.embedding import embed_sequences
from esm_jax.model import named_config
from eval.homology.nearest_neighbors import top_k_neighbors

ASTRAL = Path("scope_astral40_2.07") / "astral-scopedom-seqres-gd-sel-gs-bib-40-2.07.fa.gz"
TRUNCATION = 1022


def domain_sequences(data: Path, count: int, seed: int) -> list[str]:
    """``count`` real SCOPe domain sequences drawn with ``seed`` (lengths as they come: a realistic mix)."""
    domains = read_astral_fasta(data / ASTRAL)
    chosen = np.random.default_rng(seed).choice(len(domains), size=count, replace=False)
    return [domains[i].sequence[:TRUNCATION] for i in chosen]


def models(name: str):
    """A fair-esm ESM-2 with seeded random weights and the esm-jax model holding exactly those weights."""
    config = named_config(name)
    if config.architecture != "esm2":
        raise SystemExit("this benchmark builds ESM-2 shapes; choose an esm2_* model")
    torch.manual_seed(0)
    reference = ESM2(config.num_layers, config.embed_dim, config.attention_heads).eval()
    state = {key: value.detach().numpy() for key, value in reference.state_dict().items()}
    slots = fair_esm.model_slots(config) + fair_esm.CONTACT_SLOTS
    return reference, build_from_tensors(config, slots, state, "in-memory fair-esm model")


def fair_esm_embeddings(model, sequences: list[str], toks_per_batch: int) -> list[np.ndarray]:
    """fair-esm's extract.py path: token-budget batches, last layer, mean over residues."""
    alphabet = esm.Alphabet.from_architecture("ESM-1b")
    converter = alphabet.get_batch_converter(TRUNCATION)
    dataset = esm.data.FastaBatchedDataset([str(i) for i in range(len(sequences))], sequences)
    out: list[np.ndarray | None] = [None] * len(sequences)
    with torch.no_grad():
        for batch in dataset.get_batch_indices(toks_per_batch, extra_toks_per_seq=1):
            labels, strs, tokens = converter([(str(i), sequences[i]) for i in batch])
            layer = model.num_layers
            hidden = model(tokens, repr_layers=[layer])["representations"][layer]
            for row, index in enumerate(batch):
                out[index] = hidden[row, 1 : len(strs[row]) + 1].mean(0).numpy()
    return out


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def embedding_benchmark(args: argparse.Namespace) -> None:
    sequences = domain_sequences(args.data, args.domains, args.seed)
    residues = sum(len(s) for s in sequences)
    reference, ours = models(args.model)

    def run_ours():
        return embed_sequences(ours, sequences, toks_per_batch=args.toks_per_batch)

    def run_reference():
        return fair_esm_embeddings(reference, sequences, args.toks_per_batch)

    warm_ours, _ = timed(run_ours)
    warm_reference, _ = timed(run_reference)
    ours_seconds, ours_out = timed(run_ours)
    reference_seconds, reference_out = timed(run_reference)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(ours_out, reference_out, strict=True))
    print(
        f"embeddings: {args.model}, {len(sequences)} SCOPe domains, {residues:,} residues, "
        f"{args.toks_per_batch} tokens per batch"
    )
    print(f"  first pass (esm-jax compiles every shape): esm-jax {warm_ours:.1f} s, fair-esm {warm_reference:.1f} s")
    reference_rate, ours_rate = residues / reference_seconds, residues / ours_seconds
    print(
        f"  timed pass: fair-esm {reference_rate:,.0f} res/s, esm-jax {ours_rate:,.0f} res/s, "
        f"ratio {reference_seconds / ours_seconds:.2f}x; max |difference| {difference:.1e}"
    )


def search_benchmark(args: argparse.Namespace) -> None:
    dim = named_config(args.model).embed_dim
    rng = np.random.default_rng(args.seed)
    database = rng.standard_normal((args.nn_database, dim), dtype=np.float32)
    queries = rng.standard_normal((args.nn_queries, dim), dtype=np.float32)
    top_k_neighbors(queries[:256], database, 10)
    seconds, _ = timed(lambda: top_k_neighbors(queries, database, 10))
    print(
        f"nearest neighbours: exact top-10 cosine, {args.nn_queries:,} queries x {args.nn_database:,} embeddings "
        f"(dim {dim}): {args.nn_queries / seconds:,.0f} queries/s ({seconds:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="esm2_t6_8M_UR50D", help="ESM-2 shape (random weights)")
    parser.add_argument("--domains", type=int, default=256, help="SCOPe domains embedded (default: 256)")
    parser.add_argument("--toks-per-batch", type=int, default=4096)
    parser.add_argument("--nn-database", type=int, default=100_000)
    parser.add_argument("--nn-queries", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=data_root())
    args = parser.parse_args()
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    embedding_benchmark(args)
    search_benchmark(args)


if __name__ == "__main__":
    main()
