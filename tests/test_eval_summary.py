"""``esm-jax eval summary`` sets two ``eval all`` folders side by side from their results files: each figure with
its spread and chance level, and a paired difference wherever both runs list per-item values."""

from __future__ import annotations

import json
import shutil

import pytest

from esm_jax.errors import EsmJaxError
from eval import cli, summary
from tests.eval_tiny_model import save_tiny_checkpoint


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory, shared_data):
    """Results of a tiny checkpoint (``trained``) and of its --random-weights twin, for two real tasks."""
    root = tmp_path_factory.mktemp("summary")
    checkpoint = str(save_tiny_checkpoint(root, seed=1))  # not the weights of its twin, drawn with seed 0
    contacts = ["--sets", "kortemme", "--max-proteins", "12", "--layers", "last", "--steps", "3", "--no-baselines"]
    for folder, weights in (("trained", []), ("untrained", ["--random-weights"])):
        common = ["--checkpoint", checkpoint, "--data", str(shared_data), "--out", str(root / folder), *weights]
        assert cli.main(["aa-embeddings", *common]) == 0
        assert cli.main(["contacts-linear", *common, *contacts]) == 0
    return root


def _summary(out, *argv: str) -> dict:
    assert cli.main(["summary", "--out", str(out), *argv]) == 0
    return json.loads((out / "summary.json").read_text())


def test_each_figure_sits_beside_the_twins_with_a_paired_difference_where_items_are_listed(two_folders, tmp_path):
    results = _summary(tmp_path, "--first", str(two_folders / "trained"), "--second", str(two_folders / "untrained"))
    rows = {(row["task"], row["metric"]): row for row in results["rows"]}
    embeddings_row = ("aa-embeddings", "nearest amino acid in the same class")
    assert list(rows) == [embeddings_row, ("contacts-linear", "kortemme long P@L, last layer")]
    trained = json.loads((two_folders / "trained" / "contacts-linear.json").read_text())
    untrained = json.loads((two_folders / "untrained" / "contacts-linear.json").read_text())
    contacts = rows["contacts-linear", "kortemme long P@L, last layer"]
    ours, theirs = (r["sets"]["kortemme"]["per_layer"]["2"]["long P@L"] for r in (trained, untrained))
    assert contacts["first"].startswith(f"{ours:.3f} [") and contacts["second"].startswith(f"{theirs:.3f} [")
    assert contacts["first − second"].startswith(f"{ours - theirs:+.3f} [")
    assert contacts["verdict"] in ("first higher", "second higher", "no difference shown")
    assert contacts["chance"].endswith("(random ranking)")
    embeddings = rows[embeddings_row]
    agreements = [json.loads((two_folders / f / "aa-embeddings.json").read_text()) for f in ("trained", "untrained")]
    difference = agreements[0]["nearest_class_agreement"] - agreements[1]["nearest_class_agreement"]
    assert embeddings["first − second"].startswith(f"{difference:+.3f} [") and embeddings["chance"]  # over amino acids
    assert "(random weights)" in results["second_model"] and "(random weights)" not in results["first_model"]
    assert "| first − second |" in (tmp_path / "summary.md").read_text()


def test_a_run_against_itself_differs_by_nothing(two_folders, tmp_path):
    trained = str(two_folders / "trained")
    rows = [r for r in _summary(tmp_path, "--first", trained, "--second", trained)["rows"] if r["verdict"]]
    assert len(rows) == 2
    for row in rows:
        assert row["first − second"] == "+0.000 [0.000, 0.000]" and row["verdict"] == "no difference shown"


def test_one_folder_alone_gives_its_figures_without_comparison_columns(two_folders, tmp_path):
    rows = _summary(tmp_path, "--first", str(two_folders / "trained"))["rows"]
    assert [set(row) for row in rows] == [{"task", "metric", "first", "chance"}] * 2


def test_a_missing_or_empty_folder_is_refused_naming_it(tmp_path):
    with pytest.raises(EsmJaxError, match=r"--first .*nowhere: no such folder"):
        cli.main(["summary", "--first", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EsmJaxError, match=r"empty: holds no task's results .*esm-jax eval all --out"):
        cli.main(["summary", "--first", str(tmp_path / "empty"), "--out", str(tmp_path)])


def test_results_without_a_field_this_version_reads_are_refused_naming_file_and_field(two_folders, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(two_folders / "trained", folder)
    results = json.loads((folder / "contacts-linear.json").read_text())
    del results["sets"]["kortemme"]["random_ranking"]
    (folder / "contacts-linear.json").write_text(json.dumps(results))
    refused = r"old/contacts-linear.json: no field 'random_ranking' .*rerun contacts-linear"
    with pytest.raises(EsmJaxError, match=refused):
        cli.main(["summary", "--first", str(folder), "--out", str(tmp_path)])


def test_a_folder_mixing_two_models_is_refused_naming_the_tasks(two_folders, tmp_path):
    """The trained folder with one task taken from the untrained twin: a summary of it would mix two models."""
    folder = tmp_path / "mixed"
    shutil.copytree(two_folders / "trained", folder)
    for suffix in (".json", ".md"):
        shutil.copy(two_folders / "untrained" / f"contacts-linear{suffix}", folder)
    refused = r"--first .*mixed: its results come from different models \(aa-embeddings: .*; contacts-linear: .*\)"
    with pytest.raises(EsmJaxError, match=refused):
        cli.main(["summary", "--first", str(folder), "--out", str(tmp_path)])


def test_the_summary_names_each_models_weights(two_folders, tmp_path):
    results = _summary(tmp_path, "--first", str(two_folders / "trained"), "--second", str(two_folders / "untrained"))
    trained = json.loads((two_folders / "trained" / "aa-embeddings.json").read_text())
    untrained = json.loads((two_folders / "untrained" / "aa-embeddings.json").read_text())
    assert trained["weights_sha256"] != untrained["weights_sha256"]
    assert results["first_model"].endswith(f"weights {trained['weights_sha256']}")
    assert results["second_model"].endswith(f"weights {untrained['weights_sha256']}")


def test_eval_all_leaves_the_summary_to_be_run_on_its_own():
    from eval.tasks import get_task

    task = get_task("summary")
    assert not task.needs_checkpoint and "run it on its own" in task.why_skipped(None, task.options())


def test_a_figure_from_one_seed_shows_no_spread():
    one_seed = {"long P@L": {"mean": 0.126, "sd": 0.0, "runs": [0.126]}}
    three = {"long P@L": {"mean": 0.15, "sd": 0.01, "runs": [0.14, 0.15, 0.16]}}
    results = {"sets": {"kortemme": {"features": {"direct": one_seed, "avg": three}}}}
    figures = {f.metric: f.spread for f in summary.HEADLINES["feature-combination"](results)}
    assert figures == {"kortemme long P@L, direct": "(1 seed)", "kortemme long P@L, avg": "± 0.010"}
