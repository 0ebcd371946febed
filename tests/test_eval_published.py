"""Published figures: every table is well formed and lands after our own results in both report files."""

import json

import pytest

from eval.common import published
from eval.common.published import PublishedFigures
from eval.common.report import write_results

TABLES = {name: value for name, value in vars(published).items() if isinstance(value, PublishedFigures)}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_rows_fill_every_column_with_plausible_values(name):
    table = TABLES[name]
    assert table.source.startswith("fair-esm README") and table.caption.endswith(".")
    for row in table.as_rows():
        values = [v for v in row.values() if isinstance(v, float)]
        assert values, row
        if "Hit-10" in table.columns[-1]:
            assert all(0.0 < v < 1.0 for v in values)
        elif "ECE" in table.columns[-1]:
            assert all(1.0 < v < 25.0 for v in values)
        else:
            assert all(1.0 < v < 100.0 for v in values)


def test_report_lists_published_figures_after_ours(tmp_path):
    table = PublishedFigures("What was measured.", "a source", ("model", "score"), (("theirs", 0.5),))
    write_results(tmp_path, "task", {"ours": 1.0}, [{"model": "ours", "score": 0.25}], title="T", published=table)
    markdown = (tmp_path / "task.md").read_text()
    assert markdown.index("| ours | 0.25 |") < markdown.index("## Published figures") < markdown.index("| theirs |")
    assert "What was measured. Source: a source." in markdown
    assert json.loads((tmp_path / "task.json").read_text()) == {
        "ours": 1.0,
        "published": {
            "caption": "What was measured.",
            "source": "a source",
            "rows": [{"model": "theirs", "score": 0.5}],
        },
    }


def test_mismatched_row_is_refused():
    table = PublishedFigures("c.", "s", ("model", "score"), (("theirs",),))
    with pytest.raises(ValueError):
        table.as_rows()
