"""``esm-jax extract``: embeddings and contact maps for every protein of a FASTA file."""

from __future__ import annotations

import argparse
import functools
import shlex
import sys

from esm_jax.cli.models import MODEL_HELP, add_model_options, load_model, model_identity
from esm_jax.cli.processes import add_process_options, process_share_options
from esm_jax.errors import EsmJaxError
from esm_jax.fasta import read_fasta
from esm_jax.inference.extract import INCLUDE_CHOICES, LONG_MODES, OUTPUT_FORMATS, extract, truncation_warning

DESCRIPTION = """\
Compute ESM representations for each protein in a FASTA file and save one .npz file per
protein (named after the first word of its FASTA header; clashes get -N appended) in OUTPUT_DIR,
plus index.tsv pairing each file with the whole header.

What to save (--include, one or more):
  mean      the average of the per-residue vectors: one vector per protein (for clustering, search)
  per_tok   one vector per residue (for per-residue predictions such as secondary structure)
  bos       the vector of the start token
  contacts  the predicted residue-residue contact probabilities (L x L)

Outputs (--format):
  npz       one file per protein, as fair-esm writes them (load one with esm_jax.inference.extract.load_extracted)
  shards    a few large memory-mappable arrays in OUTPUT_DIR/shards (for millions of proteins; read them with
            esm_jax.inference.sharded_outputs.ExtractedShards(OUTPUT_DIR), which gives fair-esm's dict per protein)

Proteins longer than --truncation-seq-length (1022 residues, the ESM-1b limit) are cut to it, as
fair-esm does, with a warning naming how many; --long sliding covers them whole instead: windows of
that many residues, each starting half a window after the last, each residue's vectors averaged over
the windows holding it (the mean is taken from those), each contact averaged over the windows holding
both residues; pairs further apart than any window holds are NaN.

Batches are split over every device of this process (--mesh). On several hosts, or several
processes on one, give each process --num-processes N --process-id I (or --distributed auto on a
TPU pod or a SLURM job): each computes a disjoint share of the proteins into the same OUTPUT_DIR, and
the last to finish writes index.tsv. Every file is written whole; rerunning the same command after a
crash or kill computes only what is missing.

On TPUs and GPUs short proteins are packed several to a batch row (less padding, fewer shapes to
compile); on CPUs each protein has a row of its own, which runs faster there once compiled. --pack and
--no-pack choose either way; contacts are never packed. The saved values are the same either way.

Examples:
  esm-jax extract esm2_t33_650M_UR50D proteins.fasta embeddings/ --include mean per_tok --repr-layers -1
  esm-jax extract esm2_t48_15B_UR50D uniref50.fasta out/ --include mean --format shards --mesh fsdp=8
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
        help="residues kept from the start of longer proteins, or the window of --long sliding; 0 keeps whole "
        "proteins (default: 1022, the ESM-1b maximum)",
    )
    parser.add_argument(
        "--long",
        choices=LONG_MODES,
        default="truncate",
        help="proteins longer than --truncation-seq-length: truncate them, or cover them with overlapping windows "
        "and average (see above) (default: truncate)",
    )
    parser.add_argument(
        "--pack",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="several proteins per batch row, or (--no-pack) one per row (default: pack on TPUs and GPUs; see above)",
    )
    parser.add_argument(
        "--format", dest="output_format", choices=OUTPUT_FORMATS, default="npz", help="how outputs are stored (above)"
    )
    parser.add_argument(
        "--residues-per-shard",
        type=int,
        default=100_000,
        help="residues per shard with --format shards (default: 100000)",
    )
    add_process_options(parser)
    parser.add_argument(
        "--runner",
        choices=("jax", "beam"),
        default="jax",
        help="jax: this process (and its --num-processes peers) does the work; beam: an Apache Beam pipeline "
        "does, writing --format shards (pip install 'esm-jax[beam]'; see README) (default: jax)",
    )
    parser.add_argument("--beam-shards", type=int, default=16, help="output shards of a Beam run (default: 16)")
    parser.add_argument(
        "--beam-options",
        default="--runner=DirectRunner",
        help="Beam pipeline options as one string, e.g. '--runner=DataflowRunner --project=P --region=R "
        "--temp_location=gs://B/tmp' (default: --runner=DirectRunner, on this machine)",
    )
    parser.add_argument("--upper-case", action="store_true", help="accept lower-case residues by upper-casing them")
    parser.add_argument("--strip-stop", action="store_true", help="drop one terminal '*' (stop codon) per sequence")
    add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    if args.runner == "beam":
        return _run_beam(args)
    _check_lengths(args)
    process_id, num_processes = process_share_options(args)
    records = read_fasta(args.fasta_file, strip_stop=args.strip_stop)
    warning = truncation_warning(records, args.truncation_seq_length) if args.long == "truncate" else None
    if warning:
        print(f"esm-jax extract: warning: {warning}", file=sys.stderr)
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
        output_format=args.output_format,
        residues_per_shard=args.residues_per_shard,
        process_id=process_id,
        num_processes=num_processes,
        model_name=model_identity(args),
        long=args.long,
    )
    done = summary.sequences - summary.computed
    print(
        f"process {process_id} of {num_processes}: {summary.sequences} proteins in {summary.output_dir} "
        f"({summary.computed} computed, {done} already there; {summary.residues:,} residues, "
        f"{summary.residues_per_second:,.0f} residues/s)"
    )
    print(f"index: {summary.index}" if summary.index else "index.tsv follows when every process has finished")
    return 0


def _check_lengths(args: argparse.Namespace) -> None:
    """Refuse sizes that would silently change what is computed."""
    if args.truncation_seq_length < 0:
        raise EsmJaxError(
            f"--truncation-seq-length {args.truncation_seq_length}: give a positive number of residues (0 keeps "
            "whole proteins)"
        )
    for option, value in (("--toks-per-batch", args.toks_per_batch), ("--residues-per-shard", args.residues_per_shard)):
        if value <= 0:
            raise EsmJaxError(f"{option} {value}: give a positive number")


def _run_beam(args: argparse.Namespace) -> int:
    """The extraction as an Apache Beam pipeline (:mod:`esm_jax.inference.beam_extract`)."""
    _check_lengths(args)
    if args.output_format != "shards" or args.num_processes or args.process_id or args.distributed:
        raise EsmJaxError("--runner beam writes --format shards and splits the work itself; drop the other options")
    if args.long != "truncate":
        raise EsmJaxError("--long sliding runs with --runner jax only; drop --runner beam or --long")
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from esm_jax.inference.beam_extract import extract_pipeline

    options = {
        "repr_layers": args.repr_layers, "include": args.include, "num_shards": args.beam_shards,
        "toks_per_batch": args.toks_per_batch, "truncation_seq_length": args.truncation_seq_length,
        "upper_case": args.upper_case, "strip_stop": args.strip_stop, "pack": bool(args.pack),
    }  # fmt: skip
    with beam.Pipeline(options=PipelineOptions(shlex.split(args.beam_options))) as pipeline:
        loader = functools.partial(load_model, args.model_location, args)
        extract_pipeline(pipeline, [args.fasta_file], args.output_dir, loader, **options)
    print(f"wrote {args.output_dir}/index.tsv and its shards")
    return 0
