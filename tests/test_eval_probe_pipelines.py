"""Every task end to end on a small real subset with a tiny random model: results written, no protein dropped."""

from __future__ import annotations

import json

import pytest

from esm_jax.checkpoints import native
from esm_jax.model import ModelConfig, build_model
from eval import cli
from eval.common import published
from eval.tasks import get_task
from tests.eval_tiny_model import assert_summarised


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny") / "esm2_tiny"
    native.save(build_model(ModelConfig("esm2", 2, 32, 4, 64), seed=0), path)
    return str(path)


def _published(*tables: published.PublishedFigures) -> list[dict]:
    """The ``published`` entry a task's JSON carries for ``tables``."""
    return [table.as_json() for table in tables]


def _run(task: str, checkpoint: str, data, out, *options: str) -> dict:
    assert cli.main([task, "--checkpoint", checkpoint, "--data", str(data), "--out", str(out), *options]) == 0
    assert (out / f"{task}.md").is_file()
    results = json.loads((out / f"{task}.json").read_text())
    assert_summarised(task, results, out)
    return results


def test_deep_contact_tasks_share_head_and_plan_options():
    deep, combination = get_task("contacts-deep").options(), get_task("feature-combination").options()
    shared = ("seeds", "steps", "learning_rate", "channels", "blocks", "toks_per_batch", "max_proteins", "folds")
    assert {name: getattr(deep, name) for name in shared} == {name: getattr(combination, name) for name in shared}
    assert (deep.steps, deep.toks_per_batch, deep.msa_max_sequences) == (200, 1024, 256)
    assert get_task("contacts-linear").options().no_baselines is False


def test_deep_secondary_structure_trains_and_scores_on_every_protein_by_default():
    options = get_task("secondary-structure-deep").options()
    assert (options.max_train, options.max_test) == (0, 0)  # 0: all of NetSurfP-2.0's training set and each test set


def test_secondary_structure_linear(tiny_checkpoint, shared_data, tmp_path):
    options = ["--max-train", "5", "--max-test", "3", "--tests", "CB513,CASP12", "--layers", "0,2"]
    result = _run("secondary-structure-linear", tiny_checkpoint, shared_data, tmp_path, *options, "--iterations", "20")
    for name in ("CB513", "CASP12"):
        entry = result["tests"][name]
        assert entry["proteins"] == 3 and entry["residues_beyond_window"] == 0
        assert set(entry["per_layer"]) == {"0", "2"}
        for layer in entry["per_layer"].values():
            assert all(0.0 <= layer[metric] <= 1.0 for metric in ("Q8", "Q3", "Q3 from Q8"))
        for metric in ("Q8", "Q3"):
            per_protein = result["per_item"][f"{name} {metric} (last layer)"]
            assert len(per_protein) == 3 and all(0.0 <= v <= 1.0 for v in per_protein.values())
            # resampling proteins pools their residues: the interval holds the pooled value, within the proteins' range
            low, high = entry["per_layer"]["2"][f"{metric} ci95"]
            assert min(per_protein.values()) <= low <= entry["per_layer"]["2"][metric] <= high
            assert high <= max(per_protein.values())
    assert result["dropped_train"] == ["1wfb-A"]
    assert 0.0 < result["tests"]["CB513"]["majority_class"]["Q8"] < 0.6
    report = (tmp_path / "secondary-structure-linear.md").read_text()
    assert "majority class (chance)" in report and "| Q8 95% CI |" in report
    assert (tmp_path / "secondary-structure-linear-layers.png").stat().st_size > 0
    assert result["published"] == _published(published.SECONDARY_STRUCTURE_LINEAR)


def test_contacts_linear_on_casp12(tiny_checkpoint, shared_data, tmp_path):
    options = ["--sets", "casp12", "--max-proteins", "3", "--layers", "0,2", "--steps", "3", "--no-baselines"]
    result = _run("contacts-linear", tiny_checkpoint, shared_data, tmp_path, *options)
    entry = result["sets"]["casp12"]
    assert entry["proteins"] == 2 and set(entry["per_layer"]) == {"0", "2"}
    assert "potts" not in entry
    # the best layer is chosen on validation proteins split off the training set, not on the test proteins
    validation = entry["validation_long_p_at_l"]
    assert set(validation) == {"0", "2"} and str(entry["best_layer"]) == max(validation, key=validation.get)
    assert "chosen on validation" in (tmp_path / "contacts-linear.md").read_text()
    assert 0.0 < entry["random_ranking"]["long P@L"] < 0.2
    low, high = entry["per_layer"]["2"]["long P@L ci95"]
    assert low <= entry["per_layer"]["2"]["long P@L"] <= high
    per_protein = result["per_item"]["casp12 long P@L (last layer)"]
    assert len(per_protein) == 2
    assert sum(per_protein.values()) / 2 == pytest.approx(entry["per_layer"]["2"]["long P@L"])
    assert "random ranking (chance)" in (tmp_path / "contacts-linear.md").read_text()
    assert result["published"] == _published(published.CONTACTS_LINEAR)


@pytest.mark.slow
def test_contacts_linear_with_baselines(tiny_checkpoint, shared_data, tmp_path):
    options = ["--sets", "kortemme,casp12", "--max-proteins", "4", "--layers", "last", "--steps", "5"]
    options += ["--msa-max-sequences", "16", "--potts-iterations", "2"]
    result = _run("contacts-linear", tiny_checkpoint, shared_data, tmp_path, *options)
    assert result["sets"]["kortemme"]["proteins"] == 4
    assert result["sets"]["casp12"]["proteins"] == 2
    assert result["sets"]["casp12"]["scheme"] == "train Kortemme, test CASP12"
    for baseline in ("profile", "potts"):
        assert result["sets"]["casp12"][baseline]["proteins"] == 2
        assert 0.0 <= result["sets"]["casp12"][baseline]["precision"]["long P@L"] <= 1.0
    assert (tmp_path / "contacts-linear-kortemme-layers.png").is_file()
    # the Potts scores are cached for reruns with other checkpoints
    assert len(list((tmp_path / ".potts-cache").glob("*.npy"))) == 4 + 2


def test_contacts_unsupervised(tiny_checkpoint, shared_data, tmp_path):
    options = ["--train-proteins", "3", "--sets", "casp12", "--iterations", "50"]
    result = _run("contacts-unsupervised", tiny_checkpoint, shared_data, tmp_path, *options)
    assert result["features"] == 2 * 4 and result["train"]["proteins"] == 3
    assert set(result["fitted_head"]) == {"casp12"}
    assert "checkpoint_head" in result
    for head in ("attention L1 head", "checkpoint contact head"):
        per_protein = result["per_item"][f"casp12 long P@L ({head})"]
        assert len(per_protein) == 2
        precisions = result["fitted_head" if head == "attention L1 head" else "checkpoint_head"]["casp12"]
        assert sum(per_protein.values()) / 2 == pytest.approx(precisions["long P@L"])
        low, high = precisions["long P@L ci95"]
        assert min(per_protein.values()) <= low <= precisions["long P@L"] <= high <= max(per_protein.values())
    assert "| long P@L 95% CI |" in (tmp_path / "contacts-unsupervised.md").read_text()
    # compare pairs the per-protein values of two runs (here one run with itself)
    results = tmp_path / "contacts-unsupervised.json"
    assert cli.main(["compare", "--first", str(results), "--second", str(results), "--out", str(tmp_path)]) == 0
    paired = json.loads((tmp_path / "compare.json").read_text())["differences"]
    assert paired["casp12 long P@L (attention L1 head)"]["n"] == 2
    assert result["published"] == _published(published.CONTACTS_UNSUPERVISED)


def test_secondary_structure_deep(tiny_checkpoint, shared_data, tmp_path):
    options = ["--max-train", "4", "--max-test", "2", "--tests", "CASP12", "--seeds", "2", "--steps", "2"]
    options += ["--hidden", "4", "--kernels", "3,5", "--features", "last"]
    result = _run("secondary-structure-deep", tiny_checkpoint, shared_data, tmp_path, *options)
    for features in ("last",):
        q8 = result["features"][features]["CASP12"]["Q8"]
        assert len(q8["runs"]) == 2 and 0.0 <= q8["mean"] <= 1.0
        per_protein = result["per_item"][f"CASP12 Q8 ({features})"]  # each protein's Q8, averaged over seeds
        assert len(per_protein) == 2 and all(0.0 <= value <= 1.0 for value in per_protein.values())
        assert min(per_protein.values()) <= q8["mean"] <= max(per_protein.values())  # pooled lies between them
    related = (published.RELATED_MODELS, published.RELATED_MODELS_README)
    assert result["published"] == _published(published.SECONDARY_STRUCTURE_DEEP, *related)
    assert 0.0 < result["majority_class"]["CASP12"]["Q8"] < 0.6


def test_contacts_deep(tiny_checkpoint, shared_data, tmp_path):
    options = ["--sets", "casp12", "--max-proteins", "4", "--seeds", "2", "--steps", "2", "--channels", "8"]
    options += ["--blocks", "1", "--features", "last,-1,profile", "--msa-max-sequences", "16"]
    result = _run("contacts-deep", tiny_checkpoint, shared_data, tmp_path, *options)
    entry = result["sets"]["casp12"]
    assert entry["proteins"] == 2
    assert len(entry["features"]["profile"]["long P@L"]["runs"]) == 2
    assert entry["features"]["-1"] == entry["features"]["last"]  # a negative layer counts back from the end
    per_protein = result["per_item"]["casp12 long P@L (profile)"]  # averaged over seeds, for `compare`
    assert len(per_protein) == 2
    assert sum(per_protein.values()) / 2 == pytest.approx(entry["features"]["profile"]["long P@L"]["mean"])
    related = (published.RELATED_MODELS, published.RELATED_MODELS_README)
    assert result["published"] == _published(published.CONTACTS_DEEP, *related)


@pytest.mark.slow
def test_feature_combination(tiny_checkpoint, shared_data, tmp_path):
    options = ["--max-proteins", "3", "--seeds", "1", "--steps", "2", "--msa-rows", "2", "--channels", "8"]
    options += ["--blocks", "1", "--pca", "2", "--msa-max-sequences", "16"]
    result = _run("feature-combination", tiny_checkpoint, shared_data, tmp_path, *options)
    labels = set(result["sets"]["kortemme"]["features"])
    assert labels == {"direct", "direct + profile", "avg", "avg + profile", "cov", "cov + profile"}
    tables = (published.FEATURE_COMBINATION_CONTACTS, published.FEATURE_COMBINATION_SECONDARY_STRUCTURE)
    assert result["published"] == _published(*tables)
