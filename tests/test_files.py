"""Atomic outputs: the destination holds the old file or the whole new one, and no temporary file survives."""

from __future__ import annotations

import json

import pytest

from esm_jax.files import atomic_output, write_json_atomically, write_text_atomically


def test_a_complete_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "nested" / "result.json"
    write_text_atomically(target, "old\n")
    write_json_atomically(target, {"ece": 14.5})
    assert json.loads(target.read_text()) == {"ece": 14.5}
    assert [path.name for path in target.parent.iterdir()] == ["result.json"]


def test_a_failed_write_keeps_the_previous_file_intact(tmp_path):
    target = tmp_path / "table.csv"
    write_text_atomically(target, "mutant,score\nA1G,0.5\n")
    with pytest.raises(RuntimeError, match="disk full"), atomic_output(target) as handle:
        handle.write("mutant,score\n")
        raise RuntimeError("disk full")
    assert target.read_text() == "mutant,score\nA1G,0.5\n"
    assert [path.name for path in tmp_path.iterdir()] == ["table.csv"]
