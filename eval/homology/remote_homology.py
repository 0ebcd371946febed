"""Remote homology detection on SCOPe 2.07 ASTRAL 40% (paper Table 2) with a phmmer baseline.

Each domain is embedded as the mean of its final-layer residue representations (Rives et al., PNAS 2021,
"Remote homology": mean-pooled embeddings, nearest neighbours by cosine similarity; Euclidean distance is
reported too). Queries are ranked against every other domain; Hit-10 and ROC AUC are computed at fold and
superfamily level with the pair rules of :mod:`eval.homology.scop_pairs`, after removing the Rossmann-like folds
and beta-propellers the paper excludes. The HMM baseline (:mod:`eval.homology.hmm_baseline`) searches a seeded sample
of the same queries against the same database; the embedding numbers are also given on that sample, with each
embedding metric's paired difference from phmmer over those queries. AUC is given per query (averaged) and pooled
over all query-candidate pairs; every number carries a 95% bootstrap interval over queries.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_pipeline.layout import dataset_file
from data_pipeline.readers.scope import EXCLUDED_FOLDS, ScopeDomain, read_astral_fasta
from esm_jax.inference.embedding import embed_sequences
from eval.common import charts, published, statistics
from eval.common.report import per_item, write_results
from eval.common.task import Backbone, Result, Task, TaskOptions, option
from eval.homology import metrics as homology_metrics
from eval.homology import scop_pairs
from eval.homology.hmm_baseline import phmmer_scores
from eval.homology.nearest_neighbors import METRICS

NAME = "remote-homology"
ASTRAL_FILE = Path("scope_astral40_2.07") / "astral-scopedom-seqres-gd-sel-gs-bib-40-2.07.fa.gz"
TRUNCATION = 1022
LOGGER = logging.getLogger("eval")


@dataclasses.dataclass(frozen=True)
class Options(TaskOptions):
    astral: Path | None = option(None, f"ASTRAL FASTA (none: --data/{ASTRAL_FILE})")
    limit: int = option(0, "keep whole folds, drawn with --seed, until at least this many domains (0: all)")
    metrics: tuple[str, ...] = option(METRICS, "embedding similarities to rank by", choices=METRICS)
    hmm_queries: int = option(1000, "queries searched with phmmer, drawn with --seed (-1: all; 0: no baseline)")
    hmm_evalue: float = option(10.0, "phmmer reporting E-value")
    cpus: int = option(0, "phmmer threads (0: all cores)")
    toks_per_batch: int = option(4096, "tokens per embedding batch")


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


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    path = Path(options.astral) if options.astral else dataset_file(ASTRAL_FILE, data)
    domains = load_domains(path, options.limit, options.seed)
    labels = scop_pairs.parse_sccs([d.sccs for d in domains], [d.sid for d in domains])
    model = backbone.model
    started = time.monotonic()
    embeddings = np.stack(
        embed_sequences(
            model,
            [d.sequence for d in domains],
            layer=-1,
            toks_per_batch=options.toks_per_batch,
            truncation_seq_length=TRUNCATION,
            show_progress=True,
        )
    )
    embed_seconds = time.monotonic() - started
    LOGGER.info("embedded %d domains in %.0f s", len(domains), embed_seconds)
    searches = {
        (level, metric): homology_metrics.embedding_search(embeddings, labels, level, metric, show_progress=True)
        for level in scop_pairs.LEVELS
        for metric in options.metrics
    }
    hmm = _hmm_baseline(options, domains, labels)
    summary = _summaries(searches, options.metrics, hmm, options.seed)
    summary |= _shuffled_labels(embeddings, labels, options)
    results = {
        **backbone.report_fields(),
        "astral": str(path),
        "domains": len(domains),
        "excluded_folds": sorted(EXCLUDED_FOLDS),
        "truncated_domains": sum(len(d.sequence) > TRUNCATION for d in domains),
        "queries": {level: int(homology_metrics.query_indices(level, labels).size) for level in scop_pairs.LEVELS},
        "embed_seconds": embed_seconds,
        "hmm_seconds": hmm["seconds"] if hmm else None,
        "hmm_searched": hmm["searched"].size if hmm else 0,
        "summary": summary,
        "differences_from_phmmer": _differences_from_phmmer(searches, options, hmm),
        "per_item": _per_query(searches, domains),
    }
    rows = [_row(method, values) for method, values in summary.items()]
    figure = _figure(out, summary)
    write_results(
        out,
        NAME,
        results,
        rows,
        title="Remote homology, SCOPe 2.07 ASTRAL 40% (paper Table 2)",
        notes=_notes(results),
        figures=[figure.name],
        published=(published.REMOTE_HOMOLOGY, published.RELATED_MODELS),
    )
    first = next(iter(summary.values()))
    return Result(
        {
            "hit10_fold": first["fold"]["hit10"],
            "hit10_superfamily": first["superfamily"]["hit10"],
            "auc_fold": first["fold"]["auc"],
            "auc_superfamily": first["superfamily"]["auc"],
            "auc_pooled_fold": first["fold"]["auc_pooled"],
            "auc_pooled_superfamily": first["superfamily"]["auc_pooled"],
        }
    )


COLUMNS = {"Hit-10": "hit10", "AUC": "auc", "AUC pooled": "auc_pooled"}


def _with_interval(values: dict, key: str) -> str:
    """``0.512 [0.48, 0.55]``: the value and its 95% interval (the value alone where there is none)."""
    low, high = values.get(f"{key}_ci95", (None, None))
    value = values.get(key, float("nan"))
    return f"{value:.3f}" if low is None else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _row(method: str, values: dict) -> dict:
    """One report row: each metric at fold and superfamily level with its interval, and the query counts."""
    cells = {
        f"{column} {level}": _with_interval(values[level], key)
        for column, key in COLUMNS.items()
        for level in scop_pairs.LEVELS
    }
    return {
        "method": method,
        **cells,
        "queries (fold / sf)": f"{values['fold']['queries']} / {values['superfamily']['queries']}",
    }


def _summaries(searches: dict, metrics: Sequence[str], hmm: dict | None, seed: int) -> dict[str, dict]:
    """Method -> level -> Hit-10 / AUCs: each metric on all queries and on the phmmer sample, then phmmer."""
    levels = scop_pairs.LEVELS
    summary = {}
    for metric in metrics:
        summary[f"{metric} (all queries)"] = {level: searches[level, metric].summary(seed=seed) for level in levels}
        if hmm:
            sample = hmm["searched"]
            summary[f"{metric} (phmmer queries)"] = {
                level: searches[level, metric].summary(sample, seed=seed) for level in levels
            }
    if hmm:
        summary["phmmer (phmmer queries)"] = {level: hmm["scores"][level].summary(seed=seed) for level in levels}
    return summary


def _differences_from_phmmer(searches: dict, options: Options, hmm: dict | None) -> dict[str, dict]:
    """Each metric minus phmmer on the phmmer queries, paired over queries: Hit-10 and per-query AUC."""
    if not hmm:
        return {}
    differences = {}
    for metric in options.metrics:
        for level in scop_pairs.LEVELS:
            baseline = hmm["scores"][level]
            ours = searches[level, metric]
            position = np.searchsorted(ours.queries, baseline.queries)
            pairs = {
                name: (getattr(ours, field)[position].astype(np.float64), getattr(baseline, field).astype(np.float64))
                for name, field in (("hit10", "hits"), ("auc", "aucs"))
            }
            differences.setdefault(f"{metric} - phmmer", {})[level] = {
                name: statistics.paired_difference(first, second, seed=options.seed)
                for name, (first, second) in pairs.items()
                if np.isfinite(first - second).any()
            }
    return differences


def _per_query(searches: dict, domains: list[ScopeDomain]) -> dict[str, dict[str, float]]:
    """Each query's Hit-10 and AUC by domain id, per metric and level: what ``compare`` pairs between two runs."""
    table = {}
    for (level, metric), scores in searches.items():
        ids = [domains[int(query)].sid for query in scores.queries]
        for column, values in (("Hit-10", scores.hits), ("AUC", scores.aucs)):
            table[f"{metric} {level} {column}"] = per_item(ids, values.astype(np.float64))
    return table


def _shuffled_labels(embeddings, labels: scop_pairs.ScopLabels, options: Options) -> dict[str, dict]:
    """Chance level: the first metric's search with every domain's SCOP labels given to another (seeded)."""
    metric = options.metrics[0]
    shuffled = labels.subset(np.random.default_rng(options.seed).permutation(len(labels)))
    return {
        f"chance: {metric}, SCOP labels shuffled": {
            level: homology_metrics.embedding_search(embeddings, shuffled, level, metric).summary(seed=options.seed)
            for level in scop_pairs.LEVELS
        }
    }


def _hmm_baseline(options: Options, domains: list[ScopeDomain], labels: scop_pairs.ScopLabels) -> dict | None:
    if options.hmm_queries == 0:
        return None
    candidates = np.union1d(*(homology_metrics.query_indices(level, labels) for level in scop_pairs.LEVELS))
    count = candidates.size if options.hmm_queries < 0 else min(options.hmm_queries, candidates.size)
    searched = np.sort(np.random.default_rng(options.seed).choice(candidates, size=count, replace=False))
    matrix, seconds = phmmer_scores(
        searched,
        [d.sid for d in domains],
        [d.sequence for d in domains],
        evalue=options.hmm_evalue,
        cpus=options.cpus,
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
        f"superfamily ignored. Superfamily level: positive = same superfamily, other family; negative = any other "
        f"superfamily; same family ignored (Rives et al. 2021). 'AUC' is each query's ROC AUC, averaged over "
        "queries; 'AUC pooled' is one ROC AUC over every query's pairs together. The paper does not say which it "
        "reports; its classifier is defined per query ('for each domain, a vector similarity query ... ranking "
        "them by distance to the query'), so 'AUC' is the column compared with Table 2's AUC. Brackets: 95% "
        "bootstrap interval over queries (pooled AUC: queries resampled and the AUC recomputed; the JSON gives "
        "its binning error bound as auc_pooled_max_error). The chance row shuffles the SCOP labels among the "
        "domains; the JSON's differences_from_phmmer pairs each metric with phmmer over the phmmer queries, and its "
        "per_item gives each query's Hit-10 and AUC (`esm-jax eval compare` pairs them between runs). Embedding "
        f"took {results['embed_seconds']:.0f} s ({results['truncated_domains']} domains truncated to "
        f"{TRUNCATION} residues).{hmm} The paper's Table 2 used HHblits as its alignment baseline; its "
        "fold-level Hit-10 values are listed below."
    )


def _figure(out: Path, summary: dict[str, dict]) -> Path:
    columns = {f"{name} {level}": (level, key) for name, key in COLUMNS.items() for level in scop_pairs.LEVELS}
    return charts.grouped_bars_png(
        list(columns),
        {method: [values[level][key] for level, key in columns.values()] for method, values in summary.items()},
        Path(out) / f"{NAME}.png",
        title="Remote homology (SCOPe 2.07, 40%)",
        ylabel="score",
        ylim=(0.0, 1.0),
    )


TASK = Task(NAME, __doc__, Options, run)
