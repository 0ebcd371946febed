"""``esm-jax extract``: embeddings and contact maps for every protein of a FASTA file."""

from __future__ import annotations

import argparse

from esm_jax.cli.models import MODEL_HELP, add_model_options, load_model
from esm_jax.fasta import read_fasta
from esm_jax.inference.extract import INCLUDE_CHOICES, extract

DESCRIPTION = """\
Compute ESM representations for each protein in a FASTA file and save one .npz file per
protein (named after its FASTA header) in OUTPUT_DIR, plus index.tsv listing them.

What to save (--include, one or more):
  mean      the average of the per-residue vectors: one vector per protein (for clustering, search)
  per_tok   one vector per residue (for per-residue predictions such as secondary structure)
  bos       the vector of the start token
  contacts  the predicted residue-residue contact probabilities (L x L)

On TPUs and GPUs short proteins are packed several to a batch row (less padding, fewer shapes to
compile); on CPUs each protein has a row of its own, which runs faster there once compiled. --pack and
--no-pack choose either way; contacts are never packed. The saved values are the same either way.

Example:
  esm-jax extract esm2_t33_650M_UR50D proteins.fasta embeddings/ --include mean per_tok --repr-layers -1
"""


def add_parser(subcommands, name: str) -> None:
    parser = subcommands.add_parser(
        name,
        help="embeddings and contacts for a FASTA file (as fair-esm's extract.py)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_location", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("fasta_file", metavar="FASTA", help="protein sequences (plain or .gz FASTA)")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder for the .npz files (created if needed)")
    parser.add_argument("--include", nargs="+", choices=INCLUDE_CHOICES, required=True, help="what to save (see above)")
    parser.add_argument(
        "--repr-layers",
        "--repr_layers",
        dest="repr_layers",
        type=int,
        nargs="+",
        default=[-1],
        help="layers to save, 0 = embeddings, negative counts from the last (default: -1, the last layer)",
    )
    parser.add_argument(
        "--toks-per-batch",
        "--toks_per_batch",
        dest="toks_per_batch",
        type=int,
        default=4096,
        help="tokens per batch; lower it if memory runs out (default: 4096)",
    )
    parser.add_argument(
        "--truncation-seq-length",
        "--truncation_seq_length",
        dest="truncation_seq_length",
        type=int,
        default=1022,
        help="residues kept from the start of longer proteins (default: 1022, the ESM-1b maximum)",
    )
    parser.add_argument(
        "--pack",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="several proteins per batch row, or (--no-pack) one per row (default: pack on TPUs and GPUs; see above)",
    )
    parser.add_argument("--upper-case", action="store_true", help="accept lower-case residues by upper-casing them")
    parser.add_argument("--strip-stop", action="store_true", help="drop one terminal '*' (stop codon) per sequence")
    add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    records = read_fasta(args.fasta_file, strip_stop=args.strip_stop)
    model = load_model(args.model_location, args)
    summary = extract(
        model,
        records,
        args.output_dir,
        repr_layers=args.repr_layers,
        include=args.include,
        toks_per_batch=args.toks_per_batch,
        truncation_seq_length=args.truncation_seq_length,
        upper_case=args.upper_case,
        pack=args.pack,
    )
    print(
        f"wrote {summary.sequences} files to {summary.output_dir} "
        f"({summary.residues} residues, {summary.residues_per_second:,.0f} residues/s)"
    )
    return 0
