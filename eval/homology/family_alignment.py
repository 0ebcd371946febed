"""Alignment within a family (paper Fig. 3, Table S1): do representations of aligned residues agree?

For each Pfam family, a seeded sample of its sequences is embedded (final layer, per residue). For every
pair of sampled sequences, residue pairs in the same alignment column (aligned) are compared with as many
residue pairs drawn from the other combinations (unaligned), by cosine similarity of their representations
(Rives et al., PNAS 2021, Fig. 3 and Table S1). The AUC of cosine similarity separating aligned from
unaligned pairs is reported per family: over all pairs, over pairs of the same amino acid, and over pairs of
different amino acids (so identity of the residues alone cannot explain the separation). Means over families carry
a 95% bootstrap interval over families.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np

from data_pipeline.readers.alignments import Alignment, read_a3m, read_aligned_fasta, read_stockholm
from esm_jax.inference.embedding import embed_sequences
from eval.common import charts, ranking, statistics
from eval.common.report import write_results
from eval.common.task import Backbone, Result, Task, TaskOptions, option
from eval.homology import alignment_pairs

NAME = "family-alignment"
# each family's AUC over all pairs, which `eval compare` and `eval summary` pair between two runs
PER_FAMILY_AUC = "AUC per family, all pairs"
DEFAULT_SOURCES = (("pfam40_domains_kortemme/alignments", "*.align.80"), ("msa_examples", "*.sto"))
SUBSETS = ("all", "same amino acid", "different amino acid")
TRUNCATION = 1022


@dataclasses.dataclass(frozen=True)
class Options(TaskOptions):
    alignments: tuple[Path, ...] = option(
        (), "alignment files (Stockholm .sto, .a3m, else aligned FASTA); none given: the Pfam alignments in --data"
    )
    sequences_per_family: int = option(16, "sequences sampled per family")
    toks_per_batch: int = option(4096, "tokens per embedding batch")


def read_alignment(path: Path) -> Alignment:
    if path.suffix == ".sto":
        return read_stockholm(path)
    if path.suffix == ".a3m":
        return read_a3m(path)
    return read_aligned_fasta(path)


def default_alignments(data: Path) -> list[Path]:
    paths = [path for folder, pattern in DEFAULT_SOURCES for path in sorted((data / folder).glob(pattern))]
    if not paths:
        raise FileNotFoundError(f"{data}: no alignments found ({', '.join(f'{f}/{p}' for f, p in DEFAULT_SOURCES)})")
    return paths


def sample_rows(alignment: Alignment, count: int, seed: int, family: str) -> list[int]:
    """Row numbers of up to ``count`` distinct non-empty sequences, fixed by ``seed`` and the family name."""
    rows = [i for i, row in enumerate(alignment.rows) if alignment_pairs.ungapped(row)]
    rng = np.random.default_rng([seed, zlib.crc32(family.encode())])
    return sorted(rng.choice(rows, size=min(count, len(rows)), replace=False).tolist())


def _unit(values: np.ndarray) -> np.ndarray:
    return values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)


def family_pairs(rows: list[str], representations: list[np.ndarray], rng: np.random.Generator) -> dict:
    """Cosine similarities and same-amino-acid flags of aligned and unaligned pairs over all row pairs."""
    units = [_unit(r) for r in representations]
    sequences = [alignment_pairs.ungapped(row) for row in rows]
    out = {kind: {"cosine": [], "same": []} for kind in ("aligned", "unaligned")}
    for a in range(len(rows)):
        for b in range(a + 1, len(rows)):
            i, j = alignment_pairs.aligned_pairs(rows[a], rows[b])
            keep = (i < len(units[a])) & (j < len(units[b]))
            aligned = (i[keep], j[keep])
            background = alignment_pairs.unaligned_pairs(len(units[a]), len(units[b]), aligned, keep.sum(), rng)
            for kind, (ii, jj) in (("aligned", aligned), ("unaligned", background)):
                out[kind]["cosine"].append(np.sum(units[a][ii] * units[b][jj], axis=1))
                letters_a = np.frombuffer(sequences[a].encode(), np.uint8)[ii]
                letters_b = np.frombuffer(sequences[b].encode(), np.uint8)[jj]
                out[kind]["same"].append(letters_a == letters_b)
    return {
        kind: {key: np.concatenate(parts) if parts else np.zeros(0) for key, parts in values.items()}
        for kind, values in out.items()
    }


def subset_cosines(pairs: dict, subset: str) -> dict[str, np.ndarray]:
    """Cosine similarities of the aligned and the unaligned pairs that fall in ``subset``."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    chosen = {}
    for kind in ("aligned", "unaligned"):
        same = pairs[kind]["same"].astype(bool)
        mask = {"all": np.ones_like(same), "same amino acid": same, "different amino acid": ~same}[subset]
        chosen[kind] = pairs[kind]["cosine"][mask]
    return chosen


def subset_auc(pairs: dict, subset: str) -> float:
    """AUC of cosine similarity for aligned (positive) vs unaligned pairs within ``subset``; NaN if a class is empty."""
    chosen = subset_cosines(pairs, subset)
    if not chosen["aligned"].size or not chosen["unaligned"].size:
        return float("nan")
    scores = np.concatenate([chosen["aligned"], chosen["unaligned"]])
    labels = np.concatenate([np.ones(chosen["aligned"].size, bool), np.zeros(chosen["unaligned"].size, bool)])
    return ranking.roc_auc(scores, labels)


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    paths = [Path(p) for p in options.alignments] or default_alignments(Path(data))
    families = []
    for path in paths:
        alignment = read_alignment(path)
        name = path.name.split(".")[0]
        chosen = sample_rows(alignment, options.sequences_per_family, options.seed, name)
        families.append({"name": name, "path": str(path), "rows": [alignment.rows[i] for i in chosen]})
    sequences = [alignment_pairs.ungapped(row) for family in families for row in family["rows"]]
    representations = embed_sequences(
        backbone.model,
        sequences,
        layer=-1,
        per_residue=True,
        toks_per_batch=options.toks_per_batch,
        truncation_seq_length=TRUNCATION,
        show_progress=True,
    )
    for sequence, values in zip(sequences, representations, strict=True):
        if values.shape[0] != min(len(sequence), TRUNCATION):
            raise RuntimeError(f"{values.shape[0]} representations for a sequence of {len(sequence)} residues")
    rows, pooled = [], {kind: {"cosine": [], "same": []} for kind in ("aligned", "unaligned")}
    start = 0
    for family in families:
        count = len(family["rows"])
        reps = representations[start : start + count]
        start += count
        rng = np.random.default_rng([options.seed, zlib.crc32(family["name"].encode()), 1])
        pairs = family_pairs(family["rows"], reps, rng)
        for kind in pooled:
            for key in pooled[kind]:
                pooled[kind][key].append(pairs[kind][key])
        aucs = {subset: subset_auc(pairs, subset) for subset in SUBSETS}
        rows.append(
            {
                "family": family["name"],
                "sequences": count,
                "aligned pairs": int(pairs["aligned"]["cosine"].size),
                "cos aligned": float(np.mean(pairs["aligned"]["cosine"])) if pairs["aligned"]["cosine"].size else "",
                "cos unaligned": float(np.mean(pairs["unaligned"]["cosine"]))
                if pairs["unaligned"]["cosine"].size
                else "",
                **{f"AUC {subset}": aucs[subset] for subset in SUBSETS},
            }
        )
    pooled = {kind: {key: np.concatenate(v) for key, v in values.items()} for kind, values in pooled.items()}
    intervals = {
        subset: statistics.bootstrap_mean([row[f"AUC {subset}"] for row in rows], seed=options.seed)
        for subset in SUBSETS
        if np.isfinite([row[f"AUC {subset}"] for row in rows]).any()
    }
    means = {subset: intervals[subset]["mean"] if subset in intervals else float("nan") for subset in SUBSETS}
    figures = _figures(Path(out), rows, pooled, str(backbone.checkpoint))
    results = {
        **backbone.report_fields(),
        "families": len(rows),
        "sequences_per_family": options.sequences_per_family,
        "mean_auc": means,
        "mean_auc_ci95": {subset: [value["ci95_low"], value["ci95_high"]] for subset, value in intervals.items()},
        "per_family": rows,
        "per_item": {PER_FAMILY_AUC: {row["family"]: row["AUC all"] for row in rows}},
        "pooled_mean_cosine": {kind: float(np.mean(values["cosine"])) for kind, values in pooled.items()},
    }
    mean_row = {"family": "mean over families", **{f"AUC {subset}": means[subset] for subset in SUBSETS}}
    interval_row = {
        "family": "95% interval over families",
        **{f"AUC {s}": f"[{v['ci95_low']:.3f}, {v['ci95_high']:.3f}]" for s, v in intervals.items()},
    }
    summary = [{**dict.fromkeys(rows[0], ""), **row} for row in (mean_row, interval_row)]
    write_results(
        out,
        NAME,
        results,
        summary + rows,
        title="Aligned vs unaligned residue representations within Pfam families (paper Fig. 3, Table S1)",
        notes=(
            f"{len(rows)} families, up to {options.sequences_per_family} sequences each (seed {options.seed}), "
            "every pair of them; unaligned pairs are drawn uniformly from the non-aligned residue combinations of the "
            "same sequence pair, as many as aligned ones. Final-layer representations, cosine similarity."
        ),
        figures=[figure.name for figure in figures],
    )
    return Result({f"mean_auc_{subset.replace(' ', '_')}": value for subset, value in means.items()})


def _figures(out: Path, rows: list[dict], pooled: dict, checkpoint: str) -> list[Path]:
    panels = {subset: subset_cosines(pooled, subset) for subset in SUBSETS}
    ordered = sorted(rows, key=lambda row: row["AUC all"])
    return [
        charts.distributions_png(
            panels,
            out / f"{NAME}-distributions.png",
            title=f"Cosine similarity of residue representations, all families pooled ({checkpoint})",
            xlabel="cosine similarity",
        ),
        charts.grouped_bars_png(
            [row["family"] for row in ordered],
            {f"AUC {subset}": [row[f"AUC {subset}"] for row in ordered] for subset in SUBSETS},
            out / f"{NAME}-auc.png",
            title="Aligned vs unaligned AUC per family",
            ylabel="ROC AUC",
            ylim=(0.0, 1.0),
            rotate=True,
        ),
    ]


TASK = Task(NAME, __doc__, Options, run)
