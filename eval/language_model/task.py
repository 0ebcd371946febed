"""Held-out language modelling (paper Table 1): ECE of a checkpoint and of uniform, unigram and n-gram baselines.

Every number is computed on the same held-out UniRef50 clusters with the same masked positions: the data
pipeline's ``validation`` split, masked exactly as ESM trained (15% of residues; 80% <mask>, 10% random,
10% unchanged) with a fixed masking seed, in one pass that pads the last batches instead of dropping them.
ECE = exp(mean NLL per masked token). Baselines (Rives et al., PNAS 2021, Table 1): uniform over the 25
amino-acid letters (ECE 25); unigram (amino-acid frequencies of the training split); n-gram models with a
left context of n-1 residues and add-alpha (Laplace) smoothing, the best order and alpha reported as the
paper does. The bidirectional LSTM baselines of Table 1 are training runs like the Transformers
(``esm-jax train --config configs/pretrain.py:model=lstm_small``); pass such a run as ``--checkpoint`` to
score it on the same positions (each position is predicted from both sides without seeing itself). The held-out
split is built from the UniRef50 sample under ``data`` on first use unless ``--dataset`` names a built one.
The checkpoint's and the best n-gram's ECE carry 95% percentile-bootstrap intervals over held-out sequences (whole
sequences resampled, ECE pooled per resample), as does their paired difference on the same resamples.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from esm_jax import pretrained
from esm_jax.errors import EsmJaxError
from eval.common import charts, published, statistics
from eval.common.report import interval_text, write_results
from eval.common.task import Backbone, Result, Task, TaskOptions, option
from eval.language_model import heldout_data, ngram
from eval.language_model.masked_lm import MaskedLmScorer, ece

NAME = "language-model"
LOGGER = logging.getLogger("eval")
CI_COLUMN = "ECE 95% CI"


@dataclasses.dataclass(frozen=True)
class HeldoutOptions(TaskOptions):
    """Options naming the held-out dataset and its masking (shared with tasks that report ECE)."""

    dataset: Path | None = option(None, "built dataset folder (none: build --dataset-config from --data)")
    dataset_config: str = option("ur50_s", "config built when --dataset is absent")
    dataset_cache: Path | None = option(None, "where the dataset is built (none: $ESM_JAX_CACHE/eval_datasets)")
    mask_seed: int = option(0, "seed of the held-out masking")
    token_budget: int = option(4096, "tokens per batch")


@dataclasses.dataclass(frozen=True)
class Options(HeldoutOptions):
    ngram_orders: tuple[int, ...] = option((1, 2, 3, 4, 5), "n-gram orders")
    laplace: tuple[float, ...] = option((1.0, 0.1, 0.01), "additive smoothing values alpha; 1 = add-one")


def heldout_dataset(data: Path, options: HeldoutOptions) -> Path:
    """``--dataset``, or the ``--dataset-config`` dataset built from ``data``'s UniRef sample on first use.

    Paths may arrive as strings (options read from a training config), hence the ``Path`` calls.
    """
    if options.dataset is not None:
        return heldout_data.check_dataset(Path(options.dataset))
    cache = Path(options.dataset_cache) if options.dataset_cache else pretrained.cache_dir() / "eval_datasets"
    return heldout_data.find_or_build(Path(data), cache, options.dataset_config)


def score_heldout(model, dataset: Path, mask_seed: int, token_budget: int, context: int) -> dict:
    """One pass: the model's NLL per held-out sequence; per masked target its left context and sequence index.

    The targets and contexts are for the baselines. Sequences are numbered in record-id order, not batch order, so
    per-sequence results (and bootstrap resamples over them) do not depend on the token budget.
    """
    scorer = MaskedLmScorer(model)
    residues = 0
    ids, sequence_nll, sequence_masked, targets, contexts, target_rows = [], [], [], [], [], []
    started = time.monotonic()
    for number, batch in enumerate(heldout_data.heldout_batches(dataset, mask_seed, token_budget), start=1):
        real = batch["residues"] > 0
        nll, count = scorer.row_nll(batch["tokens"], batch["targets"], batch["loss_mask"])
        if count[~real].any():
            raise RuntimeError("an empty padding row of the held-out batches holds masked tokens")
        row_sequence = len(ids) + np.cumsum(real) - 1
        ids.extend(batch["ids"][real].tolist())
        sequence_nll.append(nll[real])
        sequence_masked.append(count[real])
        residues += int(np.sum(batch["residues"]))
        rows, columns = np.nonzero(batch["loss_mask"] > 0)
        original = heldout_data.original_tokens(batch)
        targets.append(ngram.symbols(original[rows, columns]))
        contexts.append(ngram.left_contexts(original, rows, columns, context))
        target_rows.append(row_sequence[rows])
        if number % 20 == 0:
            rate = residues / (time.monotonic() - started)
            LOGGER.info("held-out batches: %d (%d sequences, %.0f residues/s)", number, len(ids), rate)
    order, rank = _id_order(ids)
    per_sequence = _joined(sequence_nll, np.float64)[order], _joined(sequence_masked, np.int64)[order]
    return {
        "total_nll": float(per_sequence[0].sum()),
        "masked_tokens": int(per_sequence[1].sum()),
        "sequences": len(ids),
        "residues": residues,
        "sequence_ids": [_text(ids[i]) for i in order],
        "sequence_nll": per_sequence[0],
        "sequence_masked": per_sequence[1],
        "targets": _joined(targets, np.int64),
        "contexts": np.concatenate(contexts) if contexts else np.zeros((0, context), np.int64),
        "target_sequence": rank[_joined(target_rows, np.int64)],
        "seconds": time.monotonic() - started,
    }


def _id_order(ids: list) -> tuple[np.ndarray, np.ndarray]:
    """The permutation that sorts sequences by record id, and each sequence's place in that order."""
    order = np.argsort(np.array(ids, dtype=object), kind="stable") if ids else np.zeros(0, np.int64)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return order, rank


def _text(record_id) -> str:
    return record_id.decode() if isinstance(record_id, bytes) else str(record_id)


def _joined(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def ngram_table(
    training: list[np.ndarray],
    scored: dict,
    orders: Sequence[int],
    alphas: Sequence[float],
) -> tuple[list[dict], dict[tuple[int, float], np.ndarray]]:
    """ECE of every (order, alpha) n-gram model on :func:`score_heldout`'s targets, and each one's NLL per sequence.

    ``scored["contexts"]`` is the widest left context; the per-sequence sums are keyed by (order, alpha).
    """
    targets, contexts = scored["targets"], scored["contexts"]
    rows, per_sequence = [], {}
    for order in sorted(set(orders)):
        model = ngram.NgramModel.fit(training, order)
        width = order - 1
        context = contexts[:, contexts.shape[1] - width :] if width else contexts[:, :0]
        for alpha in alphas:
            log_probs = model.log_probs(context, targets, alpha)
            rows.append({"order": order, "alpha": alpha, "ece": ece(-float(log_probs.sum()), targets.size)})
            per_sequence[order, alpha] = np.bincount(
                scored["target_sequence"], weights=-log_probs, minlength=scored["sequences"]
            )
    return rows, per_sequence


def ece_intervals(model_nll: np.ndarray, ngram_nll: np.ndarray, masked: np.ndarray, seed: int = 0) -> dict:
    """95% bootstrap intervals over held-out sequences: model ECE, n-gram ECE and model minus n-gram (paired).

    ECE is exp(pooled NLL / pooled masked tokens); each resample redraws whole sequences and both models are scored
    on the same resamples, so the difference's interval accounts for their shared sequences.
    """
    model, baseline = [], []
    for counts in statistics.resample_count_chunks(masked.size, seed):  # memory stays bounded for large splits
        model.append(np.exp(statistics.pooled_ratio_draws(model_nll, masked, counts)))
        baseline.append(np.exp(statistics.pooled_ratio_draws(ngram_nll, masked, counts)))
    model, baseline = np.concatenate(model), np.concatenate(baseline)
    point = ece(float(model_nll.sum()), int(masked.sum())) - ece(float(ngram_nll.sum()), int(masked.sum()))
    return {
        "model": statistics.percentile_interval(model),
        "ngram": statistics.percentile_interval(baseline),
        "difference": statistics.difference_interval(point, model - baseline),
    }


def ece_difference_between_runs(first: dict, second: dict, seed: int = 0) -> dict | None:
    """The first run's held-out ECE minus the second's, paired over resampled sequences (same masks in both).

    ``first`` and ``second`` are two runs' results; None when either was written before per-sequence values were
    kept. Runs that scored different sequences or masks are refused.
    """
    runs = [results.get("per_sequence") for results in (first, second)]
    if not all(runs):
        return None
    if runs[0]["ids"] != runs[1]["ids"] or runs[0]["masked_tokens"] != runs[1]["masked_tokens"]:
        raise EsmJaxError(
            f"{NAME}: the two runs scored different held-out sequences or masked positions; "
            "rerun both with the same --data and --mask-seed"
        )
    nll = [np.asarray(run["nll"], dtype=np.float64) for run in runs]
    return ece_intervals(nll[0], nll[1], np.asarray(runs[0]["masked_tokens"]), seed)["difference"]


def run(backbone: Backbone, data: Path, out: Path, options: Options) -> Result:
    dataset = heldout_dataset(data, options)
    model = backbone.model
    expected = heldout_data.split_size(dataset, "validation")
    width = max(options.ngram_orders) - 1
    scored = score_heldout(model, dataset, options.mask_seed, options.token_budget, width)
    if scored["sequences"] != expected:
        raise RuntimeError(
            f"{dataset}: scored {scored['sequences']} held-out sequences but the split holds {expected}; "
            "the input pipeline lost or repeated sequences"
        )
    if scored["masked_tokens"] != scored["targets"].size:
        raise RuntimeError("model and baselines scored different numbers of masked tokens")
    model_ece = ece(scored["total_nll"], scored["masked_tokens"])
    training = heldout_data.training_sequences(dataset)
    grams, ngram_nll = ngram_table(training, scored, options.ngram_orders, options.laplace)
    best = min(grams, key=lambda row: row["ece"])
    intervals = ece_intervals(
        scored["sequence_nll"], ngram_nll[best["order"], best["alpha"]], scored["sequence_masked"]
    )
    unigram = [row for row in grams if row["order"] == 1 and row["alpha"] == 1.0]
    uniform = ece(scored["masked_tokens"] * math.log(ngram.VOCAB), scored["masked_tokens"])
    results = {
        **backbone.report_fields(),
        "dataset": str(dataset),
        "mask_seed": options.mask_seed,
        "heldout_sequences": scored["sequences"],
        "heldout_residues": scored["residues"],
        "masked_tokens": scored["masked_tokens"],
        "model_ece": model_ece,
        "model_ece_ci95": intervals["model"],
        "uniform_ece": uniform,
        "unigram_ece": unigram[0]["ece"] if unigram else None,
        "best_ngram": {**best, "ece_ci95": intervals["ngram"]},
        "model_minus_best_ngram": intervals["difference"],
        "ngram": grams,
        "training_residues": int(sum(len(ids) for ids in training)),
        "model_seconds": scored["seconds"],
        "per_sequence": {
            "ids": scored["sequence_ids"],
            "nll": scored["sequence_nll"].tolist(),
            "masked_tokens": scored["sequence_masked"].tolist(),
        },
    }
    table = _table(results)
    figure = _figure(out, grams, model_ece, uniform)
    write_results(
        out,
        NAME,
        results,
        table,
        title="Held-out language modelling (ECE, paper Table 1)",
        notes=_notes(results),
        figures=[figure.name],
        published=published.LANGUAGE_MODEL,
    )
    return Result({"model_ece": model_ece, "best_ngram_ece": best["ece"], "masked_tokens": scored["masked_tokens"]})


def _table(results: dict) -> list[dict]:
    best = results["best_ngram"]
    checkpoint = f"checkpoint {results['checkpoint']}"
    rows = [
        {"model": checkpoint, "ECE": results["model_ece"], CI_COLUMN: interval_text(results["model_ece_ci95"])},
        {"model": "uniform (25 letters)", "ECE": results["uniform_ece"]},
    ]
    if results["unigram_ece"] is not None:
        rows.append({"model": "unigram (add-one)", "ECE": results["unigram_ece"]})
    name = f"best n-gram ({best['order']}-gram, alpha {best['alpha']:g})"
    rows.append({"model": name, "ECE": best["ece"], CI_COLUMN: interval_text(best["ece_ci95"])})
    return rows


def _difference_note(results: dict) -> str:
    difference = results["model_minus_best_ngram"]
    verdict = "the interval includes 0, so this sample does not separate them"
    if difference["excludes_zero"]:
        verdict = f"the checkpoint is {'below' if difference['ci95'][1] < 0 else 'above'} the best n-gram"
    return (
        f"95% intervals: percentile bootstrap over the {results['heldout_sequences']:,} held-out sequences "
        f"({statistics.RESAMPLES} resamples of whole sequences, ECE pooled over each resample's masked tokens). "
        f"Checkpoint ECE minus best n-gram ECE on the same resamples: {difference['difference']:.3f} "
        f"{interval_text(difference['ci95'])}; {verdict}. "
    )


def _notes(results: dict) -> str:
    orders = ", ".join(f"{r['order']}-gram/alpha {r['alpha']:g}: {r['ece']:.3f}" for r in results["ngram"])
    return (
        f"{results['heldout_sequences']:,} held-out sequences, {results['heldout_residues']:,} residues, "
        f"{results['masked_tokens']:,} masked tokens (masking seed {results['mask_seed']}); dataset "
        f"`{results['dataset']}`. n-gram models condition on the n-1 residues to the left of the masked "
        f"position (true residues, begin symbol before the start) and were counted on "
        f"{results['training_residues']:,} training residues. All n-gram settings: {orders}. "
        f"{_difference_note(results)}"
        "The published ECEs below are on the paper's UniRef50 2018_03 held-out clusters, not these sequences."
    )


def _figure(out: Path, grams: list[dict], model_ece: float, uniform: float) -> Path:
    orders = sorted({row["order"] for row in grams})
    by_setting = {(row["order"], row["alpha"]): row["ece"] for row in grams}
    curves = {
        f"n-gram, alpha {alpha:g}": [by_setting[order, alpha] for order in orders]
        for alpha in dict.fromkeys(row["alpha"] for row in grams)
    }
    return charts.curves_png(
        orders,
        curves,
        Path(out) / f"{NAME}.png",
        title="Held-out ECE: n-gram baselines by order vs the checkpoint",
        xlabel="n-gram order (context = n - 1 residues to the left)",
        ylabel="ECE (lower is better)",
        levels={"checkpoint": model_ece, "uniform": uniform},
    )


TASK = Task(NAME, __doc__, Options, run)
