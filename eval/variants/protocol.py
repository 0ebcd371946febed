"""The supervised protocols of Rives et al. 2021 (Fig. 7, SI Figs. S5 and S6) over one learner.

* Cross-validation: five random folds per protein, train on 80%, test on 20%; Spearman ρ per fold,
  reported as mean ± SD (sample SD over folds).
* Training-fraction sweep: the same test folds, with the model trained on a random subset of the other
  variants holding the given fraction of the whole assay.
* Leave-one-protein-out: train on every variant of the other proteins, test on all of the held-out one.

Targets are standardised per protein with the training variants' mean and SD, so assays of different
scales can be trained together; Spearman ρ is unaffected. A learner turns training variants into
predictions for test variants: :class:`FrozenLearner` fits the head on fixed representations computed
once per protein; :class:`FinetuneLearner` trains backbone and head anew for every split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from esm_jax.errors import EsmJaxError
from esm_jax.inference.rank_correlation import spearman
from esm_jax.inference.variant_scoring import default_window
from esm_jax.model import ESM
from eval.common.splits import grouped_random_folds, random_folds
from eval.common.statistics import RESAMPLES, difference_interval
from eval.variants.assays import Assay
from eval.variants.folds import fraction_size, training_subset
from eval.variants.regression import (
    FinetuneData,
    TrainConfig,
    VariantInputs,
    fit_finetune,
    fit_head,
    predict,
    standardiser,
)
from eval.variants.sites import SiteTable, build_sites, site_hidden


@dataclasses.dataclass(frozen=True)
class PreparedAssay:
    """An assay with its site table and the frozen backbone's hidden states of every site (zeros for the baseline)."""

    assay: Assay
    sites: SiteTable
    hidden: np.ndarray


Part = tuple[PreparedAssay, np.ndarray]  # an assay and the indices of the variants used


def _pad_slots(array: np.ndarray, slots: int) -> np.ndarray:
    extra = slots - array.shape[1]
    return np.pad(array, [(0, 0), (0, extra)] + [(0, 0)] * (array.ndim - 2)) if extra else array


def _inputs(parts: Sequence[Part], slots: int) -> VariantInputs:
    def gather(name: str) -> np.ndarray:
        return np.concatenate([_pad_slots(getattr(p.sites, name)[idx], slots) for p, idx in parts])

    return VariantInputs(gather("wild_type"), gather("mutant"), gather("valid"))


def _standardised(parts: Sequence[Part]) -> np.ndarray:
    targets = []
    for prepared, indices in parts:
        values = prepared.assay.fitness[indices]
        spread = values.std()
        targets.append((values - values.mean()) / (spread if spread > 0 else 1.0))
    return np.concatenate(targets)


def _slots(parts: Sequence[Part]) -> int:
    return max(prepared.sites.max_substitutions for prepared, _ in parts)


def _prepare_frozen(model: ESM, assay: Assay, toks_per_batch: int) -> PreparedAssay:
    """The site table of ``assay`` with every site's hidden states by ``model`` as it is (frozen)."""
    sites = build_sites(assay, default_window(model))
    return PreparedAssay(assay, sites, site_hidden(model, sites, toks_per_batch=toks_per_batch))


def _hidden(parts: Sequence[Part], slots: int) -> np.ndarray:
    """Per variant of ``parts``, the prepared hidden states of its site, padded to ``slots`` substitutions."""
    return np.concatenate([_pad_slots(p.hidden[p.sites.site_of[idx]], slots) for p, idx in parts])


class FrozenLearner:
    """Regression head on representations computed once per protein with the frozen backbone."""

    name = "frozen backbone"

    def __init__(self, model: ESM, config: TrainConfig, toks_per_batch: int = 8192):
        self.model, self.config, self.toks_per_batch = model, config, toks_per_batch

    def prepare(self, assay: Assay) -> PreparedAssay:
        return _prepare_frozen(self.model, assay, self.toks_per_batch)

    def fit_predict(self, train: Sequence[Part], test: Part, key: jax.Array) -> np.ndarray:
        slots = max(_slots(train), _slots([test]))
        head = fit_head(_hidden(train, slots), _inputs(train, slots), _standardised(train), self.config, key)
        return predict(head, _hidden([test], slots), _inputs([test], slots))


class SubstitutionBaseline(FrozenLearner):
    """The same head with the representation replaced by zeros: fitness from the amino-acid change alone.

    What is left is ``b + Σ_i c[mutant_i] − c[wild_type_i]``, a learned substitution preference that knows
    nothing of the protein; the gap between this and a learner is what the representation adds.
    """

    name = "amino-acid change only (no representation)"

    def prepare(self, assay: Assay) -> PreparedAssay:
        return self.with_sites(assay, build_sites(assay, default_window(self.model)))

    @staticmethod
    def with_sites(assay: Assay, sites: SiteTable) -> PreparedAssay:
        """``assay`` with a site table already built for this backbone (by any learner) and zero hidden states."""
        return PreparedAssay(assay, sites, np.zeros((len(sites.rows), sites.max_substitutions, 1), np.float32))


class FinetuneLearner:
    """Backbone and regression head fine-tuned together on every training split.

    The frozen backbone's hidden states, computed once in ``prepare``, fix the head's input standardisation and
    train the head that fine-tuning starts from: the frozen learner's fit, so the few fine-tuning steps a CPU
    affords refine a fitted head instead of spending themselves on a random one (linear probing before
    fine-tuning, as Kumar et al., ICLR 2022, recommend).
    """

    name = "fine-tuned backbone"

    def __init__(self, model: ESM, config: TrainConfig, toks_per_batch: int = 8192, show_progress: bool = False):
        self.model, self.config = model, config
        self.toks_per_batch, self.show_progress = toks_per_batch, show_progress

    def prepare(self, assay: Assay) -> PreparedAssay:
        return _prepare_frozen(self.model, assay, self.toks_per_batch)

    def _training_data(self, train: Sequence[Part], slots: int, hidden: np.ndarray) -> FinetuneData:
        rows, positions, site_of, offset = [], [], [], 0
        for prepared, indices in train:
            used, local = np.unique(prepared.sites.site_of[indices], return_inverse=True)
            rows += [prepared.sites.rows[site] for site in used]
            positions += [prepared.sites.positions[site] for site in used]
            site_of.append(local + offset)
            offset += len(used)
        pad, cls, eos = self.model.padding_idx, self.model.cls_idx, self.model.eos_idx
        tokens = np.full((len(rows), max(len(row) for row in rows) + 2), pad, dtype=np.int32)
        token_positions = np.zeros((len(rows), slots), dtype=np.int32)
        for number, (row, masked) in enumerate(zip(rows, positions, strict=True)):
            tokens[number, 0], tokens[number, 1 : len(row) + 1], tokens[number, len(row) + 1] = cls, row, eos
            token_positions[number, : len(masked)] = np.asarray(masked) + 1
        inputs = _inputs(train, slots)
        norm = standardiser(hidden, inputs.valid)
        return FinetuneData(tokens, token_positions, np.concatenate(site_of), inputs, _standardised(train), norm)

    def fit_predict(self, train: Sequence[Part], test: Part, key: jax.Array) -> np.ndarray:
        slots = max(_slots(train), _slots([test]))
        hidden = _hidden(train, slots)
        data = self._training_data(train, slots, hidden)
        probe_key, tune_key = jax.random.split(key)
        probe = fit_head(hidden, data.inputs, data.target, self.config, probe_key)
        tuned, head = fit_finetune(
            self.model, data, self.config, tune_key, head=probe["params"], show_progress=self.show_progress
        )
        prepared, indices = test
        used, local = np.unique(prepared.sites.site_of[indices], return_inverse=True)
        hidden = _pad_slots(site_hidden(tuned, prepared.sites, used, toks_per_batch=self.toks_per_batch), slots)
        return predict(head, hidden[local], _inputs([test], slots))


def _summary(rhos: Sequence[float]) -> dict:
    rhos = [float(rho) for rho in rhos]
    spread = float(np.std(rhos, ddof=1)) if len(rhos) > 1 else 0.0
    return {"rho_mean": float(np.mean(rhos)), "rho_sd": spread, "rho_folds": rhos}


def mutated_positions(assay: Assay) -> list[tuple[int, ...]]:
    """Each variant's mutated residue numbers: the group that position-held-out folds keep together."""
    return [tuple(sorted(s.position for s in mutant.substitutions)) for mutant in assay.mutants]


def cross_validation(learner, prepared: PreparedAssay, folds: int, seed: int, by_position: bool = False) -> dict:
    """Spearman ρ of each of ``folds`` folds (train on the rest), with mean and SD.

    Random folds by default (the paper's protocol); ``by_position`` holds out whole mutated positions, so no test
    site is ever seen in training and per-site effects cannot be memorised.
    """
    if by_position:
        splits = grouped_random_folds(mutated_positions(prepared.assay), folds, seed)
    else:
        splits = random_folds(len(prepared.assay), folds, seed)
    rhos = []
    fold, prediction = np.zeros(len(prepared.assay), np.int64), np.zeros(len(prepared.assay), np.float64)
    for number, (train, test) in enumerate(splits):
        key = jax.random.fold_in(jax.random.key(seed), number)
        predicted = learner.fit_predict([(prepared, train)], (prepared, test), key)
        rhos.append(spearman(predicted, prepared.assay.fitness[test]))
        fold[test], prediction[test] = number, predicted
    training = round(float(np.mean([len(train) for train, _ in splits])))
    out_of_fold = {"fold": fold.tolist(), "prediction": prediction.tolist()}
    return {
        "variants": len(prepared.assay),
        "training_variants": training,
        **_summary(rhos),
        "out_of_fold": out_of_fold,
    }


def cv_difference_between_runs(
    first: dict, second: dict, seed: int = 0, *, protocol: str, protein: str, resamples: int = RESAMPLES
) -> dict | None:
    """Mean-over-folds ρ of the first run minus the second's on the same folds, paired over resampled test variants.

    ``first`` and ``second`` are two runs' mutational-effect results (each with the assays' ``fitness``) and
    ``protocol`` their key for a cross validation (``cross_validation``, ``position_cross_validation``). Each
    resample redraws every fold's test variants, the same ones for both runs; the fitted heads stay fixed, so the
    interval covers the choice of test variants, not of training ones. None when either run lacks out-of-fold
    predictions; runs on different folds or fitness values are refused.
    """
    runs = [results.get(protocol, {}).get(protein, {}).get("out_of_fold") for results in (first, second)]
    if not all(runs):
        return None
    measured = [results["fitness"][protein] for results in (first, second)]
    if runs[0]["fold"] != runs[1]["fold"] or measured[0] != measured[1]:
        raise EsmJaxError(
            f"mutational-effect: the two runs' {protein} {protocol} used different folds or fitness values; "
            "rerun both with the same --seed, --folds and --max-variants"
        )
    fitness = np.asarray(measured[0], dtype=np.float64)
    predictions = [np.asarray(run["prediction"], dtype=np.float64) for run in runs]
    folds = np.asarray(runs[0]["fold"])
    members = [np.flatnonzero(folds == k) for k in np.unique(folds)]

    def mean_difference(tests: list[np.ndarray]) -> float:
        return float(
            np.mean([spearman(predictions[0][t], fitness[t]) - spearman(predictions[1][t], fitness[t]) for t in tests])
        )

    generator = np.random.default_rng(seed)
    draws = [mean_difference([m[generator.integers(0, m.size, m.size)] for m in members]) for _ in range(resamples)]
    return difference_interval(mean_difference(members), np.array(draws))


def fraction_sweep(learner, prepared: PreparedAssay, fractions: Sequence[float], folds: int, seed: int) -> dict:
    """For each training fraction of the assay: Spearman ρ on every test fold, training on a random subset."""
    splits = random_folds(len(prepared.assay), folds, seed)
    results = {}
    for fraction in fractions:
        rhos = []
        for number, (train, test) in enumerate(splits):
            size = fraction_size(fraction, len(prepared.assay), len(train))
            subset = training_subset(train, size, seed + number)
            key = jax.random.fold_in(jax.random.key(seed), 1000 + number)
            predicted = learner.fit_predict([(prepared, subset)], (prepared, test), key)
            rhos.append(spearman(predicted, prepared.assay.fitness[test]))
        results[str(fraction)] = {"training_variants": size, **_summary(rhos)}
    return results


def leave_one_protein_out(learner, prepared: Sequence[PreparedAssay], seed: int) -> dict:
    """Spearman ρ on each protein of a model trained on all variants of the other proteins."""
    results = {}
    for number, held_out in enumerate(prepared):
        train = [(other, np.arange(len(other.assay))) for other in prepared if other is not held_out]
        test = (held_out, np.arange(len(held_out.assay)))
        key = jax.random.fold_in(jax.random.key(seed), 2000 + number)
        predicted = learner.fit_predict(train, test, key)
        results[held_out.assay.protein] = {
            "rho": spearman(predicted, held_out.assay.fitness),
            "training_variants": sum(len(indices) for _, indices in train),
            "test_variants": len(held_out.assay),
        }
    return results
