"""`esm-jax eval compare`: paired per-item differences of two results files with a bootstrap interval, a verdict
only where the interval excludes zero, and one-line refusals of files it cannot compare."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from esm_jax.cli import main as esm_jax_main
from esm_jax.errors import EsmJaxError
from eval.common.report import per_item
from eval.common.task import Backbone
from eval.compare import MIN_PAIRED_ITEMS, NO_DIFFERENCE, TASK, Options

TRAINED = {f"p{i}": 0.5 + 0.01 * i for i in range(20)}


def _results(path: Path, per_item_values: dict | None, task: str = "contacts-linear", **extra) -> Path:
    """A results file as a task writes it: task, backbone fields, per-item values."""
    payload = {"task": task, "checkpoint": "esm2_t6_8M_UR50D", "random_weights": False, **extra}
    if per_item_values is not None:
        payload["per_item"] = per_item_values
    path.write_text(json.dumps(payload))
    return path


def _compare(tmp_path: Path, first: Path, second: Path) -> tuple[dict, str]:
    TASK.run(Backbone(None), tmp_path, tmp_path / "out", Options(first=first, second=second))
    return json.loads((tmp_path / "out" / "compare.json").read_text()), (tmp_path / "out" / "compare.md").read_text()


def test_every_item_improving_gives_the_known_mean_and_an_interval_above_zero(tmp_path):
    untrained = {item: value - 0.1 - 0.01 * (i % 3) for i, (item, value) in enumerate(TRAINED.items())}
    first = _results(tmp_path / "trained.json", {"casp12 long P@L": TRAINED})
    untrained_weights = {"random_weights": True, "weights_sha256": "0123456789abcdef"}
    second = _results(tmp_path / "untrained.json", {"casp12 long P@L": untrained}, **untrained_weights)
    results, report = _compare(tmp_path, first, second)
    found = results["differences"]["casp12 long P@L"]
    expected = sum(TRAINED[item] - untrained[item] for item in TRAINED) / len(TRAINED)
    assert found["mean"] == pytest.approx(expected) and found["n"] == 20
    assert 0 < found["ci95_low"] <= found["mean"] <= found["ci95_high"]
    assert found["verdict"] == "first higher" and found["excludes_zero"]
    assert found["first_mean"] == pytest.approx(sum(TRAINED.values()) / 20)
    assert results["task"] == "compare" and results["compared_task"] == "contacts-linear"
    assert results["second"]["random_weights"] is True
    assert "first higher" in report and "(random weights), weights 0123456789abcdef" in report

    swapped, _ = _compare(tmp_path, second, first)
    assert swapped["differences"]["casp12 long P@L"]["verdict"] == "second higher"


def test_noise_around_zero_shows_no_difference(tmp_path):
    noisy = {item: value + (0.1 if i % 2 else -0.1) for i, (item, value) in enumerate(TRAINED.items())}
    first = _results(tmp_path / "a.json", {"m": TRAINED})
    second = _results(tmp_path / "b.json", {"m": noisy})
    results, report = _compare(tmp_path, first, second)
    found = results["differences"]["m"]
    assert found["mean"] == pytest.approx(0.0, abs=1e-12)
    assert found["ci95_low"] < 0 < found["ci95_high"] and found["verdict"] == NO_DIFFERENCE
    assert NO_DIFFERENCE in report


def test_only_items_and_metrics_in_both_files_are_paired(tmp_path):
    first = _results(tmp_path / "a.json", {"m": {"a": 1.0, "b": 2.0, "only-first": 100.0}, "only-a": {"a": 1.0}})
    second = _results(tmp_path / "b.json", {"m": {"b": 1.0, "a": 0.0, "only-second": -5.0, "nan": float("nan")}})
    results, report = _compare(tmp_path, first, second)
    found = results["differences"]["m"]
    assert found["n"] == 2 and found["mean"] == pytest.approx(1.0)
    assert list(results["differences"]) == ["m"] and "only-a" in results["not_compared"]
    assert "only-a" in report


def test_per_item_keeps_finite_values_by_id():
    assert per_item(["a", "b", "c"], [0.5, float("nan"), 1.0]) == {"a": 0.5, "c": 1.0}
    with pytest.raises(ValueError, match="2 item ids for 1 values"):
        per_item(["a", "b"], [0.5])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"cannot read it \(No such file"),
        (b"\xff\xfe\x00", "not JSON"),
        ('{"task": "contacts-linear", "per_item": {}}', "no per_item table"),
        ("{not json", "not JSON"),
        ('{"task": "contacts-linear", "checkpoint": "x"}', "no per_item table"),
        ('{"per_item": {"m": {"a": 1.0}}}', "no 'task' field"),
        ("[1, 2]", "no 'task' field"),
        ('{"task": "contacts-linear", "per_item": {"m": [1.0]}}', r"per_item\['m'\] is not a table"),
        ('{"task": "contacts-linear", "per_item": {"m": {"a": "high"}}}', r"per_item\['m'\]\['a'\] = 'high'"),
    ],
)
def test_a_file_it_cannot_compare_is_refused_naming_it(tmp_path, content, message):
    good = _results(tmp_path / "good.json", {"m": {"a": 1.0}})
    bad = tmp_path / "bad.json"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    elif content is not None:
        bad.write_text(content)
    with pytest.raises(EsmJaxError, match=f"compare: {re.escape(str(bad))}: {message}"):
        _compare(tmp_path, good, bad)


def test_different_tasks_and_no_shared_items_are_refused(tmp_path):
    contacts = _results(tmp_path / "a.json", {"m": {"a": 1.0}})
    secondary = _results(tmp_path / "b.json", {"m": {"a": 1.0}}, task="secondary-structure-linear")
    refusal = f"{re.escape(str(secondary))}: results of task 'secondary-structure-linear', but"
    with pytest.raises(EsmJaxError, match=refusal):
        _compare(tmp_path, contacts, secondary)
    other_items = _results(tmp_path / "c.json", {"m": {"z": 1.0}})
    with pytest.raises(EsmJaxError, match="share no scored item under any metric"):
        _compare(tmp_path, contacts, other_items)
    with pytest.raises(EsmJaxError, match="--second: give a results JSON file"):
        _compare(tmp_path, contacts, None)


def test_the_command_line_prints_one_error_line_and_skips_compare_in_all(tmp_path, capsys):
    good = _results(tmp_path / "good.json", {"m": {"a": 1.0}})
    argv = ["eval", "compare", "--first", str(good), "--second", str(tmp_path / "missing.json")]
    assert esm_jax_main.main([*argv, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("esm-jax eval: error: compare:") and "missing.json" in error and "Traceback" not in error
    assert TASK.why_skipped(Backbone("x"), Options()) is not None


def test_too_few_shared_items_give_the_mean_difference_without_an_interval_or_verdict(tmp_path):
    few = {item: TRAINED[item] for item in list(TRAINED)[: MIN_PAIRED_ITEMS - 1]}
    first = _results(tmp_path / "a.json", {"m": few})
    second = _results(tmp_path / "b.json", {"m": {item: value - 0.1 for item, value in few.items()}})
    results, report = _compare(tmp_path, first, second)
    found = results["differences"]["m"]
    assert found["mean"] == pytest.approx(0.1) and found["n"] == MIN_PAIRED_ITEMS - 1
    assert found["verdict"] == f"{MIN_PAIRED_ITEMS - 1} items: too few for an interval"
    assert "first higher" not in report and "too few for an interval" in report
