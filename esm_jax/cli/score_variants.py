"""``esm-jax score-variants``: zero-shot scores for a deep mutational scan, as fair-esm's variant-prediction script."""

from __future__ import annotations

import argparse
import time

from esm_jax.cli.models import MODEL_HELP, add_model_options, load_model
from esm_jax.inference.dms_table import DmsTableError, read_dms_table, write_dms_table
from esm_jax.inference.mutations import parse_mutants
from esm_jax.inference.rank_correlation import finite_spearman
from esm_jax.inference.variant_scoring import STRATEGIES, score_mutants

DESCRIPTION = """\
Label a deep mutational scan (a CSV with one mutant per row, e.g. H24C or A42G:C50T) with zero-shot
scores from one or more ESM models, as fair-esm's examples/variant-prediction/predict.py does. The output
is the input CSV with one new column per model (named after --model-location, with " (random weights)"
after it for --random-weights); higher scores mean the model finds the mutant more likely than the wild type.

Scoring strategies (Meier et al. 2021, ESM-1v):
  wt-marginals      log p(mutant) - log p(wild type) at each mutated position, one pass over the wild type
  masked-marginals  the same with the mutated positions masked (one pass per distinct set of positions)
  pseudo-ppl        pseudo-log-likelihood of the mutant minus that of the wild type (every position masked
                    in turn: one pass per residue per variant, by far the slowest)

Positions in the mutant strings are residue numbers; --offset-idx is the number of the first residue of
--sequence (default 1: numbered on the full wild type). fair-esm's BLAT_ECOLX example passes a sequence
starting at residue 24 with --offset-idx 24. Note that fair-esm's own default (0) reads numbers as 0-based.

Example (fair-esm's README example; $BLAT is BLAT_ECOLX from residue H24 on):
  esm-jax score-variants --model-location esm1v_t33_650M_UR90S_1 --sequence "$BLAT" \\
    --dms-input BLAT_ECOLX_Ranganathan2015.csv --mutation-col mutant --offset-idx 24 \\
    --scoring-strategy masked-marginals --score-col 2500 --dms-output BLAT_ECOLX_scored.csv
"""


def _option(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """An option under its dashed name and fair-esm's underscore spelling."""
    parser.add_argument(f"--{name}", f"--{name.replace('-', '_')}", dest=name.replace("-", "_"), **kwargs)


def add_parser(subcommands, name: str) -> None:
    parser = subcommands.add_parser(
        name,
        help="zero-shot variant-effect scores for a DMS CSV (as fair-esm's predict.py)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _option(parser, "model-location", nargs="+", required=True, metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("--sequence", required=True, help="the wild-type sequence the mutations were applied to")
    _option(parser, "dms-input", required=True, metavar="CSV", help="CSV file with the deep mutational scan")
    _option(parser, "dms-output", required=True, metavar="CSV", help="where to write the CSV with predictions")
    _option(parser, "mutation-col", default="mutant", help="column holding the mutant strings (default: mutant)")
    _option(
        parser,
        "offset-idx",
        type=int,
        default=1,
        help="residue number of the first residue of --sequence (default: 1)",
    )
    _option(parser, "scoring-strategy", choices=STRATEGIES, default="wt-marginals", help="(default: wt-marginals)")
    _option(parser, "score-col", help="measured fitness column: report Spearman's rho of each model against it")
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help="residues per scored slice for long sequences (default: the model's 1022; see variant_scoring)",
    )
    _option(parser, "toks-per-batch", type=int, help="tokens per batch (default: 1024 on CPUs, 8192 on accelerators)")
    parser.add_argument("--nogpu", action="store_true", help="accepted for fair-esm compatibility; has no effect")
    add_model_options(parser)


def score_column(location: str, args: argparse.Namespace) -> str:
    """The output column of one model: its name, marked when its weights are random rather than the real ones."""
    return f"{location} (random weights)" if args.random_weights else location


def run(args: argparse.Namespace) -> int:
    if len(set(args.model_location)) != len(args.model_location):
        raise DmsTableError(f"--model-location names a model twice: {args.model_location}")
    table = read_dms_table(args.dms_input)
    where = [f"{table.path}: line {line}" for line in table.lines]
    mutants = parse_mutants(table.column(args.mutation_col), args.sequence, offset=args.offset_idx, where=where)
    measured = table.numbers(args.score_col) if args.score_col else None
    print(f"{len(mutants)} variants of a {len(args.sequence)}-residue wild type, strategy {args.scoring_strategy}")
    for location in args.model_location:
        model = load_model(location, args)
        start = time.perf_counter()
        scores = score_mutants(
            model,
            args.sequence,
            mutants,
            args.scoring_strategy,
            window=args.window,
            toks_per_batch=args.toks_per_batch,
            show_progress=True,
        )
        line = f"{location}: scored in {time.perf_counter() - start:.1f} s"
        if measured is not None:
            rho, count = finite_spearman(scores, measured)
            line += f"; Spearman rho = {rho:.4f} against {args.score_col!r} over {count} variants"
        print(line)
        table.set_column(score_column(location, args), [repr(float(score)) for score in scores])
    print(f"wrote {write_dms_table(table, args.dms_output)}")
    return 0
