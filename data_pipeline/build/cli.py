"""``esm-jax build-data``: protein FASTA files -> TFRecord shards ready for ESM pretraining, in one command."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from data_pipeline.layout import CONFIG_NAMES, DATASET_NAME, VERSION, BuildOptions, CorpusFiles

DESCRIPTION = """\
Turn UniRef-style protein FASTA files into a training dataset for ESM masked-language-model pretraining.

You give the UniRef50 FASTA (cluster representatives) and, for the UR50/D and UR100 sets, the member FASTA
(UniRef90 or UniRef100 sequences) plus a table saying which UniRef50 cluster each member belongs to. The tool
checks every record, holds out a fixed share of UniRef50 clusters for evaluation (all their members too), and
writes sharded TFRecord files that the esm-jax input pipeline reads.

Training sets (Rives et al., PNAS 2021):
  ur50_s   one sequence per UniRef50 cluster (its representative)
  ur50_d   members sampled evenly across clusters: a cluster at random, then one of its members
  ur100    every member sequence
"""

EPILOG = """\
examples:
  esm-jax build-data --uniref50 uniref50.fasta.gz --out data/
  esm-jax build-data --config all --uniref50 uniref50_train_filt.fasta \\
      --members ur90_ur50_sampler.fasta.gz --mapping mapping.tsv --hosts 8 --out data/ --preview 3

Records that break the rules (empty sequence, a character that is not an amino-acid letter, a repeated id, a
member missing from the mapping or a mapping entry without a sequence) are listed with file and record number in
bad_records.json next to the data and skipped; pass --on-bad-record fail to stop at the first one instead.
A finished dataset is never overwritten unless you pass --overwrite, and then only once the new one is complete.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esm-jax build-data",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inputs = parser.add_argument_group("input files (FASTA may be gzipped)")
    inputs.add_argument(
        "--uniref50",
        action="append",
        default=[],
        metavar="FASTA",
        help="UniRef50 representatives; repeat for several files",
    )
    inputs.add_argument(
        "--members",
        action="append",
        default=[],
        metavar="FASTA",
        help="member sequences (UniRef90/UniRef100); repeat for several files",
    )
    inputs.add_argument(
        "--mapping",
        metavar="TSV",
        help="cluster table: a header line, then 'UniRef50 id<TAB>member,member,...' per cluster",
    )
    output = parser.add_argument_group("what to build")
    output.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help=f"output folder; the data goes to DIR/{DATASET_NAME}/<config>/{VERSION}",
    )
    output.add_argument(
        "--config", default="ur50_s", choices=[*CONFIG_NAMES, "all"], help="training set to build (default: ur50_s)"
    )
    output.add_argument(
        "--heldout-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="share of UniRef50 clusters held out for evaluation (default: 0.1)",
    )
    output.add_argument(
        "--draws-per-cluster",
        type=float,
        default=1.0,
        metavar="N",
        help="ur50_d: average sampled members per cluster, e.g. the number of passes you plan (default: 1)",
    )
    output.add_argument(
        "--sampling-seed", type=int, default=0, metavar="S", help="ur50_d: seed of the cluster sampling (default: 0)"
    )
    output.add_argument(
        "--upper-case", action="store_true", help="accept lower-case residues and store them upper-cased"
    )
    output.add_argument(
        "--on-bad-record",
        choices=["skip", "fail"],
        default="skip",
        help="skip and report bad records (default) or stop at the first",
    )
    output.add_argument(
        "--overwrite", action="store_true", help="replace an existing dataset once the new one is complete"
    )
    scale = parser.add_argument_group("sharding and scale-out")
    scale.add_argument(
        "--hosts",
        type=int,
        metavar="N",
        help="training hosts that will read the data: shard count becomes a multiple of N",
    )
    scale.add_argument("--shards", type=int, metavar="N", help="shards per split (default: by size, or --hosts)")
    scale.add_argument(
        "--beam",
        action="store_true",
        help="generate with Apache Beam (local DirectRunner unless --beam-options names a runner)",
    )
    scale.add_argument(
        "--beam-options",
        default="",
        metavar="'--runner=... ...'",
        help="Beam pipeline options, e.g. for Dataflow or Flink",
    )
    parser.add_argument(
        "--preview",
        type=int,
        default=0,
        metavar="N",
        help="after building, read N training batches and print their shapes and speed",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 success, 2 for a data or usage error, as every esm-jax command)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    from data_pipeline.errors import DataPipelineError

    try:
        _check_inputs(args)
        for config in CONFIG_NAMES if args.config == "all" else (args.config,):
            _build_one(args, config)
    except (DataPipelineError, ValueError, OSError) as error:
        print(f"esm-jax build-data: error: {error}", file=sys.stderr)
        return 2
    return 0


def _check_inputs(args: argparse.Namespace) -> None:
    named = [("--uniref50", p) for p in args.uniref50] + [("--members", p) for p in args.members]
    named += [("--mapping", args.mapping)] if args.mapping else []
    for option, path in named:
        if not Path(path).is_file():
            raise ValueError(f"input file {path} (given with {option}) does not exist or is not a file")


def _build_one(args: argparse.Namespace, config: str) -> None:
    from data_pipeline.build.dataset import build_dataset

    files = CorpusFiles(tuple(args.uniref50), tuple(args.members), args.mapping)
    options = BuildOptions(
        heldout_fraction=args.heldout_fraction,
        on_bad_record=args.on_bad_record,
        upper_case=args.upper_case,
        draws_per_cluster=args.draws_per_cluster,
        sampling_seed=args.sampling_seed,
    )
    runner, beam_options = _beam(args)
    result = build_dataset(
        config,
        files,
        args.out,
        options,
        num_shards=args.shards,
        host_count=args.hosts,
        beam_runner=runner,
        beam_options=beam_options,
        overwrite=args.overwrite,
    )
    counts = ", ".join(
        f"{split}: {n:,} sequences in {result.shards[split]} shards" for split, n in result.examples.items()
    )
    print(f"{config}: {result.data_dir} ({counts}; {result.bad_records['total']} bad records skipped)")
    if args.preview:
        _preview(result.data_dir, args.preview)


def _beam(args: argparse.Namespace):
    if not args.beam:
        return None, None
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners import DirectRunner

    flags = shlex.split(args.beam_options)
    runner = None if any(flag.startswith("--runner") for flag in flags) else DirectRunner()
    return runner, PipelineOptions(flags=flags)


def _preview(data_dir, count: int) -> None:
    from data_pipeline.input.input_pipeline import MlmBatchIterator, PipelineConfig

    started, tokens = time.monotonic(), 0
    with MlmBatchIterator(data_dir, PipelineConfig(), process_index=0, process_count=1) as batches:
        for number in range(1, count + 1):
            batch = next(batches)
            tokens += batch["tokens"].size
            shapes = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in batch.items())
            print(f"batch {number}: {shapes}; {int(batch['loss_mask'].sum())} masked positions")
    print(f"read {count} batches ({tokens:,} tokens) in {time.monotonic() - started:.1f} s")
