"""``esm-jax demo``: the main job on a bundled default, ending in a report folder with plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from esm_jax.cli.models import load_model
from esm_jax.fasta import bundled_proteome, read_fasta
from esm_jax.inference.extract import extract, load_extracted
from esm_jax.plots import contact_map_png, projection_png

DESCRIPTION = """\
Run esm-jax end to end on a real protein set and write a report (Markdown summary, JSON metrics,
PNG contact map and embedding projection). With no arguments it uses the 2,100-protein bacterial
proteome that ships with pyhmmer and the ESM-2 8M shape with random weights.
"""


def add_parser(subcommands, name: str) -> None:
    parser = subcommands.add_parser(
        name, help="run the main job on a bundled default and write a report", description=DESCRIPTION
    )
    parser.add_argument("--fasta", help="protein FASTA to use instead of the bundled proteome")
    parser.add_argument("--workdir", default="esm_jax_demo", help="output folder (default: ./esm_jax_demo)")
    parser.add_argument("--model", default="esm2_t6_8M_UR50D", help="checkpoint or released name")
    parser.add_argument(
        "--pretrained", action="store_true", help="load --model's weights instead of using random weights"
    )
    parser.add_argument("--num-sequences", type=int, default=64, help="proteins to embed (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")


def run(args: argparse.Namespace) -> int:
    fasta = Path(args.fasta) if args.fasta else bundled_proteome()
    records = read_fasta(fasta, strip_stop=True, limit=args.num_sequences)
    options = argparse.Namespace(random_weights=not args.pretrained, seed=args.seed, dtype="float32")
    model = load_model(args.model, options)
    report = Path(args.workdir) / "report"
    summary = extract(model, records, Path(args.workdir) / "embeddings", include=("mean", "contacts"), repr_layers=[-1])
    extracted = [load_extracted(summary.files[label]) for label, _ in records]
    last = model.num_layers
    means = np.stack([item["mean_representations"][last] for item in extracted])
    lengths = np.array([len(sequence) for _, sequence in records])
    contact_map_png(extracted[0]["contacts"], report / "contact_map.png", f"predicted contacts: {records[0][0][:60]}")
    projection_png(means, report / "embedding_projection.png", "mean embeddings (PCA)", lengths, "length")
    metrics = {
        "fasta": str(fasta),
        "model": args.model,
        "weights": "pretrained" if args.pretrained else f"random (seed {args.seed})",
        "sequences": summary.sequences,
        "residues": summary.residues,
        "residues_per_second": round(summary.residues_per_second, 1),
    }
    (report / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (report / "summary.md").write_text(_summary_markdown(metrics))
    print(f"report written to {report.resolve()}")
    return 0


def _summary_markdown(metrics: dict) -> str:
    rows = "\n".join(f"| {key} | {value} |" for key, value in metrics.items())
    return (
        "# esm-jax demo report\n\n| item | value |\n|---|---|\n"
        f"{rows}\n\n![contact map](contact_map.png)\n\n![embedding projection](embedding_projection.png)\n"
    )
