"""Supervised mutational effect: folds, site inputs, the optax head, frozen parameters, the eval tasks end to end."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from flax import nnx

from esm_jax import ModelConfig, build_model, pretrained
from esm_jax.alphabet import STANDARD_AMINO_ACIDS, Alphabet
from esm_jax.errors import EsmJaxError
from esm_jax.inference.mutations import parse_mutants
from esm_jax.inference.rank_correlation import spearman
from eval.cli import main as eval_main
from eval.common.splits import random_folds
from eval.variants.assays import Assay
from eval.variants.folds import fraction_size, training_subset
from eval.variants.mutational_effect import Options as MutationalEffectOptions
from eval.variants.mutational_effect import chosen_protocols
from eval.variants.protocol import (
    FinetuneLearner,
    FrozenLearner,
    PreparedAssay,
    cross_validation,
    cv_difference_between_runs,
    leave_one_protein_out,
)
from eval.variants.regression import (
    TrainConfig,
    VariantInputs,
    epoch_batches,
    finetune_steps,
    fit_head,
    predict,
    standardiser,
)
from eval.variants.sites import build_sites, site_hidden
from eval.variants.zero_shot import NO_DIFFERENCE, Baseline, rho_difference_between_runs
from tests.eval_tiny_model import assert_summarised

ALPHABET = Alphabet()
WILD_TYPE = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVV"


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig("esm2", 1, 32, 2, 128), seed=4)


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "esm2_tiny.pt"
    pretrained.save_fair_esm(model, path)
    return path


def _synthetic_assay(protein: str, count: int, seed: int) -> Assay:
    """Singles and doubles of WILD_TYPE whose fitness adds a per-position and a per-amino-acid effect."""
    generator = np.random.default_rng(seed)
    position_effect, letter_effect = generator.normal(size=len(WILD_TYPE)), generator.normal(size=20)
    texts, fitness = [], []
    while len(texts) < count:
        positions = sorted(generator.choice(len(WILD_TYPE), size=int(generator.integers(1, 3)), replace=False))
        letters = generator.choice(20, size=len(positions))
        text = ":".join(
            f"{WILD_TYPE[p]}{p + 1}{STANDARD_AMINO_ACIDS[a]}" for p, a in zip(positions, letters, strict=True)
        )
        if text not in texts:
            texts.append(text)
            fitness.append(sum(position_effect[p] + letter_effect[a] for p, a in zip(positions, letters, strict=True)))
    mutants = tuple(parse_mutants(texts, WILD_TYPE))
    return Assay(protein, WILD_TYPE, mutants, np.array(fitness) + generator.normal(0, 0.1, count))


def test_folds_partition_the_variants_reproducibly():
    splits = random_folds(103, 5, seed=7)
    tests = [test for _, test in splits]
    assert sorted(np.concatenate(tests).tolist()) == list(range(103))
    assert [len(test) for test in tests] == [21, 21, 21, 20, 20]
    for train, test in splits:
        assert not set(train) & set(test) and len(train) + len(test) == 103
    again = random_folds(103, 5, seed=7)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again, strict=True))
    assert not np.array_equal(splits[0][1], random_folds(103, 5, seed=8)[0][1])
    subset = training_subset(splits[0][0], 10, seed=1)
    assert set(subset) <= set(splits[0][0]) and np.array_equal(subset, training_subset(splits[0][0], 10, seed=1))
    assert fraction_size(0.1, 103, 82) == 10 and fraction_size(0.001, 103, 82) == 2
    assert fraction_size(0.8, 4996, 3996) == 3996  # 3,997 asked; uneven folds leave one fewer
    with pytest.raises(ValueError, match="needs 93 variants but only 82"):
        fraction_size(0.9, 103, 82)
    with pytest.raises(ValueError, match="need 2 <= folds"):
        random_folds(3, 5, seed=0)


def test_sites_mask_the_mutated_positions_and_are_shared(model):
    assay = _synthetic_assay("SYN", 60, seed=0).subset(range(60))
    table = build_sites(assay, window=1022)
    for number, mutant in enumerate(assay.mutants):
        site = table.site_of[number]
        assert table.positions[site] == tuple(sorted(mutant.indices))
        row = table.rows[site]
        assert np.all((row == ALPHABET.mask_idx) == np.isin(np.arange(len(WILD_TYPE)), mutant.indices))
        ordered = sorted(zip(mutant.indices, mutant.substitutions, strict=True))
        for k, (_, sub) in enumerate(ordered):
            assert STANDARD_AMINO_ACIDS[table.wild_type[number, k]] == sub.wild_type
            assert STANDARD_AMINO_ACIDS[table.mutant[number, k]] == sub.mutant
        assert table.valid[number].sum() == len(mutant.substitutions)
    assert len(table.rows) == len({tuple(sorted(m.indices)) for m in assay.mutants})
    hidden = site_hidden(model, table, toks_per_batch=300)
    for site in (0, len(table.rows) - 1):
        tokens = np.array([[ALPHABET.cls_idx, *table.rows[site], ALPHABET.eos_idx]])
        direct = np.asarray(model(tokens, repr_layers=[1])["representations"][1][0])
        positions = np.array(table.positions[site]) + 1
        np.testing.assert_allclose(hidden[site, : len(positions)], direct[positions], atol=1e-5)


def test_the_standardiser_uses_real_slots_only():
    hidden = np.array([[[1.0, 5.0], [100.0, 100.0]], [[3.0, 5.0], [0.0, 0.0]]])
    norm = standardiser(hidden, np.array([[True, False], [True, False]]))
    np.testing.assert_allclose(norm["shift"], [2.0, 5.0])
    np.testing.assert_allclose(norm["scale"], [1.0, 1.0])  # SD 1; the constant feature keeps scale 1


def test_the_head_recovers_a_planted_relation_without_dropping_a_partial_batch():
    generator = np.random.default_rng(0)
    signal = generator.normal(size=(301, 2, 8))
    hidden = (5.0 + 0.01 * signal).astype(np.float32)  # large offsets, small spread, as final-layer states
    inputs = VariantInputs(
        generator.integers(0, 20, (301, 2)), generator.integers(0, 20, (301, 2)), np.ones((301, 2), bool)
    )
    inputs.valid[::3, 1] = False
    weight = generator.normal(size=(8, 20))
    scores = np.einsum("nkd,da->nka", signal, weight)
    gain = np.take_along_axis(scores, inputs.mutant[..., None], -1) - np.take_along_axis(
        scores, inputs.wild_type[..., None], -1
    )
    target = np.where(inputs.valid, gain[..., 0], 0).sum(-1)
    config = TrainConfig(epochs=150, batch_size=64, learning_rate=3e-2, weight_decay=0.0)
    head = fit_head(
        hidden[:250], VariantInputs(*(a[:250] for a in vars(inputs).values())), target[:250], config, jax.random.key(0)
    )
    test = VariantInputs(*(a[250:] for a in vars(inputs).values()))
    assert spearman(predict(head, hidden[250:], test), target[250:]) > 0.95


def _parameters(model) -> list[np.ndarray]:
    return [np.array(leaf) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_frozen_learner_never_changes_the_backbone_and_learns_multi_mutants(model):
    before = _parameters(model)
    learner = FrozenLearner(model, TrainConfig(batch_size=32))
    prepared = [learner.prepare(_synthetic_assay(name, 400, seed)) for seed, name in enumerate(("A", "B"))]
    result = cross_validation(learner, prepared[0], folds=5, seed=0)
    assert len(result["rho_folds"]) == 5 and result["rho_mean"] > 0.3  # the planted per-amino-acid effect is learnable
    assert result["rho_sd"] == pytest.approx(np.std(result["rho_folds"], ddof=1))
    assert set(leave_one_protein_out(learner, prepared, seed=0)) == {"A", "B"}
    assert all(np.array_equal(a, b) for a, b in zip(before, _parameters(model), strict=True))


def test_fine_tuning_updates_a_copy_of_the_backbone(model):
    before = _parameters(model)
    learner = FinetuneLearner(model, TrainConfig(finetune_epochs=1, finetune_batch_size=8, backbone_learning_rate=1e-3))
    prepared = learner.prepare(_synthetic_assay("A", 48, seed=3))
    predicted = learner.fit_predict([(prepared, np.arange(40))], (prepared, np.arange(40, 48)), jax.random.key(0))
    assert predicted.shape == (8,) and np.all(np.isfinite(predicted))
    assert all(np.array_equal(a, b) for a, b in zip(before, _parameters(model), strict=True))


def test_a_fine_tuning_fit_is_capped_at_its_step_budget_whatever_the_assay_size():
    config = TrainConfig()  # 2 epochs of 8 variants, at most 150 steps
    assert finetune_steps(4000, config) == 150
    assert finetune_steps(40, config) == 10
    assert finetune_steps(4000, dataclasses.replace(config, finetune_max_steps=0)) == 1000


def test_capped_fine_tuning_batches_walk_whole_epochs_in_fresh_orders():
    batches = list(epoch_batches(np.random.default_rng(0), count=10, size=4, steps=7))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2, 4]
    first, second = np.concatenate(batches[:3]), np.concatenate(batches[3:6])
    assert sorted(first) == sorted(second) == list(range(10)) and not np.array_equal(first, second)


def test_fine_tuning_runs_the_two_k_fold_protocols_unless_told_otherwise():
    assert chosen_protocols(MutationalEffectOptions(unfreeze=True)) == ("cv", "position-cv")
    assert chosen_protocols(MutationalEffectOptions()) == ("cv", "position-cv", "fractions", "lopo")
    assert chosen_protocols(MutationalEffectOptions(unfreeze=True, protocols=("lopo",))) == ("lopo",)


def test_fine_tuning_starts_from_the_head_fitted_on_frozen_representations(model):
    learner = FinetuneLearner(model, TrainConfig(batch_size=32, finetune_max_steps=1))
    prepared = learner.prepare(_synthetic_assay("A", 400, seed=0))
    result = cross_validation(learner, prepared, folds=5, seed=0)
    assert result["rho_mean"] > 0.3  # 0.37; from a random head one step predicts noise (-0.02)


def test_supervised_task_end_to_end_on_blat(shared_data, checkpoint, tmp_path):
    out = tmp_path / "results"
    argv = ["mutational-effect", "--checkpoint", str(checkpoint), "--data", str(shared_data), "--out", str(out)]
    assert eval_main([*argv, "--assays", "BLAT_ECOLX", "--epochs", "10", "--fractions", "0.8"]) == 0
    results = json.loads((out / "mutational-effect.json").read_text())
    assert_summarised("mutational-effect", results, out)
    cv = results["cross_validation"]["BLAT_ECOLX"]
    assert cv["variants"] == 4996 and len(cv["rho_folds"]) == 5 and all(np.isfinite(cv["rho_folds"]))
    assert results["training_fraction"]["BLAT_ECOLX"]["0.8"]["training_variants"] in (3996, 3997)
    assert results["baseline"]["cross_validation"]["BLAT_ECOLX"]["variants"] == 4996
    assert "| BLAT_ECOLX | 5-fold CV | 3997 |" in (out / "mutational-effect.md").read_text()
    for name in ("mutational-effect_rho_per_protein.png", "mutational-effect_training_fraction.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_leave_one_protein_out_through_the_cli(shared_data, checkpoint, tmp_path):
    argv = ["mutational-effect", "--checkpoint", str(checkpoint), "--data", str(shared_data), "--out", str(tmp_path)]
    options = ["--assays", "BLAT_ECOLX", "PABP_YEAST", "--max-variants", "200", "--protocols", "lopo"]
    assert eval_main([*argv, *options, "--epochs", "10"]) == 0
    lopo = json.loads((tmp_path / "mutational-effect.json").read_text())["leave_one_protein_out"]
    assert {name: entry["training_variants"] for name, entry in lopo.items()} == {"BLAT_ECOLX": 200, "PABP_YEAST": 200}
    assert all(np.isfinite(entry["rho"]) for entry in lopo.values())


@pytest.mark.slow
def test_fine_tuning_through_the_cli(shared_data, checkpoint, tmp_path):
    argv = ["mutational-effect", "--checkpoint", str(checkpoint), "--data", str(shared_data), "--out", str(tmp_path)]
    options = ["--assays", "BLAT_ECOLX", "--max-variants", "40", "--folds", "2", "--unfreeze"]
    assert eval_main([*argv, *options, "--finetune-epochs", "1"]) == 0
    results = json.loads((tmp_path / "mutational-effect.json").read_text())
    assert results["learner"] == "fine-tuned backbone"
    assert results["config"]["finetune_max_steps"] == 150
    # fine-tuning's default protocols: the paper's random folds and folds that hold out whole positions
    assert set(results) >= {"cross_validation", "position_cross_validation"}
    assert not set(results) & {"training_fraction", "leave_one_protein_out"}
    assert results["position_cross_validation"]["BLAT_ECOLX"]["variants"] == 40


def test_zero_shot_task_reports_each_strategy_beside_the_published_numbers(shared_data, checkpoint, tmp_path):
    argv = ["zero-shot-variants", "--checkpoint", str(checkpoint), "--data", str(shared_data), "--out", str(tmp_path)]
    options = ["--assays", "BLAT_ECOLX", "--strategies", "masked-marginals", "--pseudo-ppl-variants", "2"]
    assert eval_main([*argv, *options, "--resamples", "200"]) == 0
    saved = json.loads((tmp_path / "zero-shot-variants.json").read_text())
    assert_summarised("zero-shot-variants", saved, tmp_path)
    results = saved["assays"]["BLAT_ECOLX"]
    assert results["ours"]["masked-marginals"]["variants"] == 4996 and results["ours"]["pseudo-ppl"]["variants"] == 2
    assert results["published_abs_rho"]["ESM-1v (zero shot)"] == pytest.approx(0.7251, abs=1e-4)
    # the substitution-matrix baseline that knows no protein, with its interval over resampled variants
    assert results["blosum62"]["rho"] == pytest.approx(0.2682, abs=1e-4) and results["blosum62"]["variants"] == 4996
    low, high = results["blosum62"]["rho ci95"]
    assert 0.2 < low < 0.2682 < high < 0.34
    masked = results["ours"]["masked-marginals"]
    assert masked["rho ci95"][0] <= masked["rho"] <= masked["rho ci95"][1]
    difference = masked["minus_blosum62"]
    assert difference["difference"] == pytest.approx(masked["rho"] - results["blosum62"]["rho"])
    assert difference["ci95"][0] <= difference["difference"] <= difference["ci95"][1]
    report = (tmp_path / "zero-shot-variants.md").read_text()
    assert "| ρ − BLOSUM62 95% CI |" in report and masked["verdict"] in report
    assert (tmp_path / "zero-shot-variants_rho.png").is_file()


def test_a_strategy_is_above_the_blosum62_baseline_only_where_the_paired_interval_excludes_zero():
    generator = np.random.default_rng(0)
    fitness = generator.normal(size=300)
    blosum = fitness + generator.normal(0, 2.0, 300)
    baseline = Baseline(blosum, fitness, seed=0, resamples=300)
    better = baseline.compare(fitness + generator.normal(0, 0.3, 300))
    assert better["minus_blosum62"]["excludes_zero"] and better["verdict"] == "above the BLOSUM62 baseline"
    assert better["minus_blosum62"]["ci95"][0] > 0
    worse = baseline.compare(generator.normal(size=300))
    assert worse["verdict"] == "below the BLOSUM62 baseline"
    # a strategy barely different from the baseline: its ρ differs, but not beyond the resampling noise
    alike = baseline.compare(blosum + generator.normal(0, 0.05, 300))
    assert alike["rho"] != baseline.rho and not alike["minus_blosum62"]["excludes_zero"]
    assert alike["verdict"] == NO_DIFFERENCE
    low, high = baseline.summary()["rho ci95"]
    assert low < baseline.rho < high


class _PositionMemoriser:
    """Predicts a variant's fitness as the mean training fitness at its mutated positions: pure site memory."""

    def fit_predict(self, parts, test_part, key):
        (prepared, train), (_, test) = parts[0], test_part
        seen: dict[int, list[float]] = {}
        for index in train:
            for substitution in prepared.assay.mutants[index].substitutions:
                seen.setdefault(substitution.position, []).append(prepared.assay.fitness[index])
        overall = float(np.mean(prepared.assay.fitness[train]))
        return np.array(
            [
                np.mean([np.mean(seen.get(s.position, [overall])) for s in prepared.assay.mutants[index].substitutions])
                for index in test
            ]
        )


def test_position_held_out_folds_leave_site_memory_nothing_to_recall():
    """Random folds reward remembering per-position effects; folds that hold out whole positions do not."""
    singles = Assay("synthetic", WILD_TYPE, *_singles_only(_synthetic_assay("synthetic", 400, seed=4)))
    prepared = PreparedAssay(singles, None, None)
    random_cv = cross_validation(_PositionMemoriser(), prepared, 5, seed=0)
    position_cv = cross_validation(_PositionMemoriser(), prepared, 5, seed=0, by_position=True)
    assert random_cv["rho_mean"] > 0.3
    # unseen positions leave the memoriser one constant prediction per fold: ρ undefined (NaN) or near zero
    assert all(np.isnan(rho) or abs(rho) < 0.2 for rho in position_cv["rho_folds"])


def _singles_only(assay: Assay) -> tuple[tuple, np.ndarray]:
    keep = [i for i, mutant in enumerate(assay.mutants) if len(mutant.substitutions) == 1]
    return tuple(assay.mutants[i] for i in keep), assay.fitness[keep]


def test_summary_pairs_two_runs_zero_shot_rho_over_the_same_resampled_variants(shared_data, checkpoint, tmp_path):
    other = tmp_path / "esm2_other.pt"
    pretrained.save_fair_esm(build_model(ModelConfig("esm2", 1, 32, 2, 128), seed=5), other)
    options = ["--data", str(shared_data), "--assays", "DLG4_RAT", "--strategies", "wt-marginals", "--resamples", "50"]
    for name, weights in (("first", checkpoint), ("second", other)):
        argv = ["zero-shot-variants", "--checkpoint", str(weights), "--out", str(tmp_path / name)]
        assert eval_main([*argv, *options]) == 0
    results = [json.loads((tmp_path / name / "zero-shot-variants.json").read_text()) for name in ("first", "second")]
    kept = [r["per_variant"]["DLG4_RAT"] for r in results]
    assert kept[0]["mutants"] == kept[1]["mutants"] and len(kept[0]["mutants"]) == 1660
    rhos = [spearman(np.array(k["scores"]["wt-marginals"]), np.array(k["fitness"])) for k in kept]
    assert rhos == pytest.approx([r["assays"]["DLG4_RAT"]["ours"]["wt-marginals"]["rho"] for r in results])
    summary = ["summary", "--out", str(tmp_path / "summary"), "--first", str(tmp_path / "first")]
    assert eval_main([*summary, "--second", str(tmp_path / "second")]) == 0
    (row,) = json.loads((tmp_path / "summary" / "summary.json").read_text())["rows"]
    assert row["metric"] == "DLG4_RAT wt-marginals ρ"
    assert row["first − second"].startswith(f"{rhos[0] - rhos[1]:+.3f} [")
    assert row["verdict"] in ("first higher", "second higher", "no difference shown")


def test_runs_over_different_variants_are_not_paired():
    def results(mutants, fitness, scores):
        return {"per_variant": {"P": {"mutants": mutants, "fitness": fitness, "scores": {"wt-marginals": scores}}}}

    fitness = np.random.default_rng(0).normal(size=60)
    exact, noise = results(["A1C"] * 60, fitness.tolist(), fitness.tolist()), np.random.default_rng(1).normal(size=60)
    worse = results(["A1C"] * 60, fitness.tolist(), noise.tolist())
    difference = rho_difference_between_runs(exact, worse, protein="P", strategy="wt-marginals")
    assert difference["difference"] == pytest.approx(1.0 - spearman(noise, fitness))
    assert difference["excludes_zero"] and difference["ci95"][0] > 0
    assert rho_difference_between_runs(exact, worse, protein="P", strategy="masked-marginals") is None
    with pytest.raises(EsmJaxError, match="different P variants"):
        rho_difference_between_runs(
            exact, results(["A1D"] * 60, fitness.tolist(), noise.tolist()), protein="P", strategy="wt-marginals"
        )


def test_summary_pairs_two_runs_cross_validation_over_the_same_folds(shared_data, checkpoint, tmp_path):
    other = tmp_path / "esm2_other.pt"
    pretrained.save_fair_esm(build_model(ModelConfig("esm2", 1, 32, 2, 128), seed=5), other)
    options = ["--data", str(shared_data), "--assays", "PABP_YEAST", "--max-variants", "300", "--epochs", "10"]
    for name, weights in (("first", checkpoint), ("second", other)):
        argv = ["mutational-effect", "--checkpoint", str(weights), "--out", str(tmp_path / name), *options]
        assert eval_main([*argv, "--protocols", "cv", "position-cv"]) == 0
    results = [json.loads((tmp_path / name / "mutational-effect.json").read_text()) for name in ("first", "second")]
    cv = [r["cross_validation"]["PABP_YEAST"] for r in results]
    kept = cv[0]["out_of_fold"]
    for k, rho in enumerate(cv[0]["rho_folds"]):
        test = np.flatnonzero(np.array(kept["fold"]) == k)
        fitness = np.array(results[0]["fitness"]["PABP_YEAST"])[test]
        assert spearman(np.array(kept["prediction"])[test], fitness) == pytest.approx(rho)
    assert "out_of_fold" not in results[0]["baseline"]["cross_validation"]["PABP_YEAST"]
    summary = ["summary", "--out", str(tmp_path / "summary"), "--first", str(tmp_path / "first")]
    assert eval_main([*summary, "--second", str(tmp_path / "second")]) == 0
    rows = {row["metric"]: row for row in json.loads((tmp_path / "summary" / "summary.json").read_text())["rows"]}
    row = rows["PABP_YEAST 5-fold CV ρ"]
    assert row["first − second"].startswith(f"{cv[0]['rho_mean'] - cv[1]['rho_mean']:+.3f} [")
    assert rows["PABP_YEAST 5-fold CV ρ, positions held out"]["verdict"]


def test_cross_validations_on_different_folds_are_not_paired():
    generator = np.random.default_rng(0)
    fitness = generator.normal(size=200)
    folds = np.arange(200) % 5
    close, far = fitness + generator.normal(0, 0.5, 200), generator.normal(size=200)

    def results(prediction, fold=folds):
        kept = {"fold": fold.tolist(), "prediction": prediction.tolist()}
        return {"cross_validation": {"P": {"out_of_fold": kept}}, "fitness": {"P": fitness.tolist()}}

    difference = cv_difference_between_runs(
        results(close), results(far), protocol="cross_validation", protein="P", resamples=200
    )
    per_fold = [
        spearman(close[folds == k], fitness[folds == k]) - spearman(far[folds == k], fitness[folds == k])
        for k in range(5)
    ]
    assert difference["difference"] == pytest.approx(np.mean(per_fold))
    assert difference["excludes_zero"] and difference["ci95"][0] > 0
    assert (
        cv_difference_between_runs(results(close), results(far), protocol="position_cross_validation", protein="P")
        is None
    )
    with pytest.raises(EsmJaxError, match="different folds"):
        cv_difference_between_runs(
            results(close), results(far, np.arange(200) % 4), protocol="cross_validation", protein="P"
        )
