"""Structure vs language modelling over training (paper Fig. 6): probe quality against held-out ECE, per checkpoint.

For every saved checkpoint of a training run (an ``esm-jax train`` workdir) three numbers, all from the final
layer: held-out ECE (as ``language-model``: the UniRef50 sample's held-out clusters, fixed masking), Q8 of an
8-class linear secondary-structure probe (as ``secondary-structure-linear``: trained on NetSurfP-2.0 proteins,
scored on CB513) and long-range top-L precision of the bilinear contact probe (as ``contacts-linear``,
cross-validated on one contact set). Rives et al. (PNAS 2021) find both probes improve as ECE falls. The
defaults are small (subsets, short probe fits) so a tiny run evaluates quickly; raise them for a real run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from esm_jax.checkpoints import training_run
from esm_jax.errors import CheckpointError, EsmJaxError
from esm_jax.model import ESM
from eval.common import charts
from eval.common.report import write_results
from eval.language_model import heldout_data
from eval.language_model import task as language_model
from eval.language_model.masked_lm import ece
from eval.structure.contacts.linear import probe_precisions
from eval.structure.contacts.metrics import mean_precisions
from eval.structure.contacts.plans import Plan, build_plans, embed_all
from eval.structure.secondary.data import SecondaryStructureSets, load_ss8_sets
from eval.structure.secondary.linear import embed, fit_probe, predict
from eval.structure.secondary.metrics import accuracy

DESCRIPTION = __doc__
TASK = "structure-vs-lm"
# the input is a training run (--run, or --checkpoint when it names one), not a single checkpoint
CHECKPOINT_REQUIRED = False
SS_TEST_SET = "CB513"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", type=Path, default=None, help="training run folder (esm-jax train --workdir; default: --checkpoint)"
    )
    parser.add_argument("--steps", type=_step_list, default=None, help="comma-separated saved steps (default: all)")
    language_model.add_heldout_arguments(parser)
    parser.add_argument("--ss-train", type=int, default=100, help="first N SS8 training proteins (default: 100)")
    parser.add_argument("--ss-test", type=int, default=100, help="first N CB513 proteins scored (default: 100)")
    parser.add_argument("--l2", type=float, default=1e-4, help="L2 penalty of the SS8 probe (default: 1e-4)")
    parser.add_argument("--iterations", type=int, default=100, help="L-BFGS iterations of the SS8 probe (default: 100)")
    parser.add_argument(
        "--contact-set", default="kortemme", help="contact set: kortemme, pdb-chains or casp12 (default: kortemme)"
    )
    parser.add_argument("--contact-proteins", type=int, default=None, help="first N contact proteins (default: all)")
    parser.add_argument("--rank", type=int, default=64, help="projection size of the contact probe (default: 64)")
    parser.add_argument("--contact-steps", type=int, default=100, help="Adam steps per contact probe (default: 100)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="contact probe learning rate (default: 1e-3)")
    parser.add_argument("--folds", type=int, default=5, help="folds for contact sets without labels (default: 5)")
    parser.add_argument("--toks-per-batch", type=int, default=4096, help="tokens per backbone batch (default: 4096)")


def _step_list(text: str) -> list[int]:
    try:
        return [int(step) for step in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated step numbers") from None


def run_and_steps(args: argparse.Namespace) -> tuple[Path, list[int]]:
    """The training run and the checkpoint steps to evaluate; raises when fewer than two would be scored."""
    if args.random_weights:
        raise EsmJaxError(f"{TASK} scores a run's trained checkpoints; --random-weights does not apply")
    workdir = args.run or args.checkpoint
    if workdir is None:
        raise EsmJaxError(f"{TASK} needs --run: a training run folder written by esm-jax train")
    if not training_run.is_training_run(workdir):
        raise CheckpointError(f"{workdir}: not a training run (esm-jax train writes config.json and checkpoints/)")
    saved = training_run.saved_steps(workdir)
    steps = saved if args.steps is None else args.steps
    missing = sorted(set(steps) - set(saved))
    if missing:
        raise CheckpointError(f"{workdir}: no checkpoint at steps {missing}; saved steps: {saved}")
    if len(steps) < 2:
        raise CheckpointError(
            f"{workdir}: {TASK} compares checkpoints and needs at least 2; chosen steps {steps}, saved {saved}"
        )
    return Path(workdir), sorted(set(steps))


def skip_reason(args: argparse.Namespace) -> str | None:
    """Why ``esm-jax eval all`` skips this task (``None``: it runs), e.g. when --checkpoint is no training run."""
    try:
        run_and_steps(args)
    except EsmJaxError as error:
        return str(error)
    return None


def heldout_ece(model: ESM, dataset: Path, args: argparse.Namespace) -> tuple[float, int]:
    """ECE over the held-out split's masked tokens, and how many there were."""
    scored = language_model.score_heldout(model, dataset, args.mask_seed, args.token_budget, context=0)
    return ece(scored["total_nll"], scored["masked_tokens"]), scored["masked_tokens"]


def ss8_accuracy(model: ESM, sets: SecondaryStructureSets, args: argparse.Namespace) -> float:
    """Q8 on the test set of a final-layer softmax probe fitted on the training proteins."""
    layer = model.config.num_layers
    train_x, train = embed(model, sets.train, [layer], "ss8 train")
    probe = fit_probe(train_x[layer], train.ss8, train.mask, 8, args)
    test_x, test = embed(model, sets.tests[SS_TEST_SET], [layer], SS_TEST_SET)
    return accuracy(predict(probe, test_x[layer]), test.ss8, test.mask)


def contact_precision(model: ESM, plan: Plan, args: argparse.Namespace) -> float:
    """Cross-validated long-range top-L precision of the bilinear probe on final-layer features."""
    layer = model.config.num_layers
    embeddings = embed_all(model, [plan], [layer], args.toks_per_batch)
    features = [embeddings[protein.name][layer] for protein in plan.proteins]
    probe_args = argparse.Namespace(
        rank=args.rank, steps=args.contact_steps, learning_rate=args.learning_rate, seed=args.seed
    )
    return mean_precisions(probe_precisions(plan, features, probe_args))["long P@L"]


def evaluate_step(workdir: Path, step: int, inputs: dict, args: argparse.Namespace) -> dict:
    """The three numbers of one checkpoint."""
    model = training_run.load_trained_model(workdir, step)
    model_ece, masked = heldout_ece(model, inputs["dataset"], args)
    return {
        "step": step,
        "ece": model_ece,
        "masked_tokens": masked,
        "ss8_accuracy": ss8_accuracy(model, inputs["ss"], args),
        "contact_long_p_at_l": contact_precision(model, inputs["plan"], args),
    }


def run(args: argparse.Namespace) -> dict:
    workdir, steps = run_and_steps(args)
    data = Path(args.data)
    ss = load_ss8_sets(data, args.ss_train, args.ss_test, (SS_TEST_SET,))
    (plan,) = build_plans([args.contact_set], data, args.contact_proteins, args.folds, args.seed)
    inputs = {"dataset": language_model.heldout_dataset(args), "ss": ss, "plan": plan}
    if heldout_data.split_size(inputs["dataset"], "validation") == 0:
        raise EsmJaxError(f"{inputs['dataset']}: the held-out (validation) split is empty")
    checkpoints, started = [], time.perf_counter()
    for count, step in enumerate(steps, start=1):
        row = evaluate_step(workdir, step, inputs, args)
        checkpoints.append(row)
        print(
            f"{TASK} step {step} ({count}/{len(steps)}): ECE {row['ece']:.3f}, SS8 {row['ss8_accuracy']:.3f}, "
            f"long P@L {row['contact_long_p_at_l']:.3f} ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    results = {
        "run": str(workdir),
        "layer": "final",
        "dataset": str(inputs["dataset"]),
        "mask_seed": args.mask_seed,
        "secondary_structure": {
            "train_proteins": len(ss.train),
            "test_set": SS_TEST_SET,
            "test_proteins": len(ss.tests[SS_TEST_SET]),
            "dropped_train": ss.dropped,
        },
        "contacts": {"set": plan.name, "scheme": plan.scheme, "proteins": plan.tested},
        "checkpoints": checkpoints,
    }
    figure = _figure(args.out, checkpoints)
    rows = [
        {
            "step": row["step"],
            "held-out ECE": row["ece"],
            f"SS8 accuracy ({SS_TEST_SET})": row["ss8_accuracy"],
            f"contact long P@L ({plan.name})": row["contact_long_p_at_l"],
        }
        for row in checkpoints
    ]
    notes = (
        f"Final-layer probes, refitted for every checkpoint. SS8: softmax probe trained on {len(ss.train)} "
        f"NetSurfP-2.0 proteins, accuracy over resolved residues of {len(ss.tests[SS_TEST_SET])} CB513 proteins. "
        f"Contacts: bilinear probe, {plan.scheme} over {plan.tested} proteins, precision of the top L pairs at "
        f"separation ≥ 24. ECE: {checkpoints[0]['masked_tokens']:,} masked tokens of `{inputs['dataset']}` "
        f"(masking seed {args.mask_seed}). Paper: Rives et al., PNAS 2021, Fig. 6."
    )
    write_results(
        args.out, TASK, results, rows, title="Structure vs language modelling", notes=notes, figures=[figure.name]
    )
    last = checkpoints[-1]
    return {key: last[key] for key in ("step", "ece", "ss8_accuracy", "contact_long_p_at_l")}


def _figure(out: Path, checkpoints: list[dict]) -> Path:
    return charts.paired_panels_png(
        [row["ece"] for row in checkpoints],
        {
            f"SS8 accuracy ({SS_TEST_SET})": [row["ss8_accuracy"] for row in checkpoints],
            "contact long P@L": [row["contact_long_p_at_l"] for row in checkpoints],
        },
        [f"step {row['step']}" for row in checkpoints],
        Path(out) / f"{TASK}.png",
        title="Probe quality against held-out ECE over training (points labelled by step)",
        xlabel="held-out ECE (lower is better)",
    )
