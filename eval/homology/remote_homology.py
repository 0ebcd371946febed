"""Remote homology detection on SCOPe 2.07 ASTRAL 40% (paper Table 2) with a phmmer baseline.

Each domain is embedded as the mean of its final-layer residue representations (Rives et al., PNAS 2021,
"Remote homology": mean-pooled embeddings, nearest neighbours by cosine similarity; Euclidean distance is
reported too). Queries are ranked against every other domain; Hit-10 and ROC AUC are computed at fold and
superfamily level with the pair rules of :mod:`eval.homology.scop_pairs`, after removing the Rossmann-like folds
and beta-propellers the paper excludes. The HMM baseline (:mod:`eval.homology.hmm_baseline`) searches a seeded sample
of the same queries against the same database; the embedding numbers are also given on that sample.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from data_pipeline.readers.scope import EXCLUDED_FOLDS, ScopeDomain, read_astral_fasta
from esm_jax.inference.embedding import embed_sequences
from eval.cli import load_backbone
from eval.common import charts, published
from eval.common.report import write_results
from eval.homology import metrics as homology_metrics
from eval.homology import scop_pairs
from eval.homology.hmm_baseline import phmmer_scores
from eval.homology.nearest_neighbors import METRICS

DESCRIPTION = """Remote homology on SCOPe 2.07 ASTRAL, 40 percent identity set (paper Table 2): Hit-10 and AUC.

Mean-pooled final-layer embeddings searched by exact (blocked, jitted) cosine and Euclidean nearest
neighbours, against a phmmer (pyhmmer) baseline on the same queries."""
TASK = "remote-homology"
ASTRAL_FILE = Path("scope_astral40_2.07") / "astral-scopedom-seqres-gd-sel-gs-bib-40-2.07.fa.gz"
TRUNCATION = 1022
LOGGER = logging.getLogger("eval")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--astral", type=Path, default=None, help=f"ASTRAL FASTA (default: --data/{ASTRAL_FILE})")
    parser.add_argument(
        "--limit",
        type=int,
        default=0,
        help="keep whole folds, drawn with --seed, until at least this many domains (default: 0 = all)",
    )
    parser.add_argument(
        "--metrics", nargs="+", choices=METRICS, default=list(METRICS), help="embedding similarities to rank by"
    )
    parser.add_argument(
        "--hmm-queries",
        type=int,
        default=1000,
        help="queries searched with phmmer, drawn with --seed (default: 1000; -1 = all; 0 = no baseline)",
    )
    parser.add_argument("--hmm-evalue", type=float, default=10.0, help="phmmer reporting E-value (default: 10)")
    parser.add_argument("--cpus", type=int, default=0, help="phmmer threads (default: 0 = all cores)")
    parser.add_argument("--toks-per-batch", type=int, default=4096, help="tokens per embedding batch (default: 4096)")


def load_domains(path: Path, limit: int, seed: int) -> list[ScopeDomain]:
    """Domains outside the excluded folds; with ``limit``, whole folds drawn at random until ``limit`` domains."""
    domains = [d for d in read_astral_fasta(path) if not d.excluded_from_remote_homology]
    if limit <= 0 or limit >= len(domains):
        return domains
    folds = sorted({d.fold for d in domains})
    chosen: set[str] = set()
    count = 0
    for index in np.random.default_rng(seed).permutation(len(folds)):
        chosen.add(folds[index])
        count += sum(d.fold == folds[index] for d in domains)
        if count >= limit:
            break
    return [d for d in domains if d.fold in chosen]


def run(args: argparse.Namespace) -> dict:
    path = args.astral or Path(args.data) / ASTRAL_FILE
    domains = load_domains(path, args.limit, args.seed)
    labels = scop_pairs.parse_sccs([d.sccs for d in domains], [d.sid for d in domains])
    model = load_backbone(args)
    started = time.monotonic()
    embeddings = np.stack(
        embed_sequences(
            model,
            [d.sequence for d in domains],
            layer=-1,
            toks_per_batch=args.toks_per_batch,
            truncation_seq_length=TRUNCATION,
            show_progress=True,
        )
    )
    embed_seconds = time.monotonic() - started
    LOGGER.info("embedded %d domains in %.0f s", len(domains), embed_seconds)
    searches = {
        (level, metric): homology_metrics.embedding_search(embeddings, labels, level, metric, show_progress=True)
        for level in scop_pairs.LEVELS
        for metric in args.metrics
    }
    hmm = _hmm_baseline(args, domains, labels)
    summary = _summaries(searches, args.metrics, hmm)
    results = {
        "checkpoint": str(args.checkpoint),
        "random_weights": bool(args.random_weights),
        "astral": str(path),
        "domains": len(domains),
        "excluded_folds": sorted(EXCLUDED_FOLDS),
        "truncated_domains": sum(len(d.sequence) > TRUNCATION for d in domains),
        "queries": {level: int(homology_metrics.query_indices(level, labels).size) for level in scop_pairs.LEVELS},
        "embed_seconds": embed_seconds,
        "hmm_seconds": hmm["seconds"] if hmm else None,
        "hmm_searched": hmm["searched"].size if hmm else 0,
        "summary": summary,
    }
    rows = [
        {
            "method": method,
            "Hit-10 fold": values["fold"]["hit10"],
            "Hit-10 superfamily": values["superfamily"]["hit10"],
            "AUC fold": values["fold"]["auc"],
            "AUC superfamily": values["superfamily"]["auc"],
            "queries (fold / sf)": f"{values['fold']['queries']} / {values['superfamily']['queries']}",
        }
        for method, values in summary.items()
    ]
    figure = _figure(args.out, rows)
    write_results(
        args.out,
        TASK,
        results,
        rows,
        title="Remote homology, SCOPe 2.07 ASTRAL 40% (paper Table 2)",
        notes=_notes(results),
        figures=[figure.name],
        published=published.REMOTE_HOMOLOGY,
    )
    first = next(iter(summary.values()))
    return {
        "hit10_fold": first["fold"]["hit10"],
        "hit10_superfamily": first["superfamily"]["hit10"],
        "auc_fold": first["fold"]["auc"],
        "auc_superfamily": first["superfamily"]["auc"],
    }


def _summaries(searches: dict, metrics: list[str], hmm: dict | None) -> dict[str, dict]:
    """Method -> level -> mean Hit-10 / AUC: each metric on all queries and on the phmmer sample, then phmmer."""
    levels = scop_pairs.LEVELS
    summary = {}
    for metric in metrics:
        summary[f"{metric} (all queries)"] = {level: searches[level, metric].summary() for level in levels}
        if hmm:
            sample = hmm["searched"]
            summary[f"{metric} (phmmer queries)"] = {level: searches[level, metric].summary(sample) for level in levels}
    if hmm:
        summary["phmmer (phmmer queries)"] = {level: hmm["scores"][level].summary() for level in levels}
    return summary


def _hmm_baseline(args: argparse.Namespace, domains: list[ScopeDomain], labels: scop_pairs.ScopLabels) -> dict | None:
    if args.hmm_queries == 0:
        return None
    candidates = np.union1d(*(homology_metrics.query_indices(level, labels) for level in scop_pairs.LEVELS))
    count = candidates.size if args.hmm_queries < 0 else min(args.hmm_queries, candidates.size)
    searched = np.sort(np.random.default_rng(args.seed).choice(candidates, size=count, replace=False))
    matrix, seconds = phmmer_scores(
        searched,
        [d.sid for d in domains],
        [d.sequence for d in domains],
        evalue=args.hmm_evalue,
        cpus=args.cpus,
        show_progress=True,
    )
    LOGGER.info("phmmer: %d queries in %.0f s", count, seconds)
    scores = {level: homology_metrics.dense_search(matrix, searched, labels, level) for level in scop_pairs.LEVELS}
    return {"searched": searched, "scores": scores, "seconds": seconds}


def _notes(results: dict) -> str:
    hmm = (
        f" phmmer searched {results['hmm_searched']} queries in {results['hmm_seconds']:.0f} s."
        if results["hmm_searched"]
        else ""
    )
    return (
        f"{results['domains']:,} domains after excluding folds {', '.join(results['excluded_folds'])}; queries "
        f"with a positive: {results['queries']['fold']:,} (fold), {results['queries']['superfamily']:,} "
        f"(superfamily). Fold level: positive = same fold, other superfamily; negative = other fold; same "
        f"superfamily ignored. Superfamily level: positive = same superfamily, other family; negative = other "
        f"fold; same family and same fold/other superfamily ignored. AUC is per query, averaged. Embedding "
        f"took {results['embed_seconds']:.0f} s ({results['truncated_domains']} domains truncated to "
        f"{TRUNCATION} residues).{hmm} The paper's Table 2 used HHblits as its alignment baseline; its "
        "fold-level Hit-10 values are listed below."
    )


def _figure(out: Path, rows: list[dict]) -> Path:
    columns = ["Hit-10 fold", "Hit-10 superfamily", "AUC fold", "AUC superfamily"]
    return charts.grouped_bars_png(
        columns,
        {row["method"]: [row[c] for c in columns] for row in rows},
        Path(out) / f"{TASK}.png",
        title="Remote homology (SCOPe 2.07, 40%)",
        ylabel="score",
        ylim=(0.0, 1.0),
    )
