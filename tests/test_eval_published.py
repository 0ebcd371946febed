"""Published figures: every table is well formed, copied cell by cell from the paper, and reported after ours."""

import json
import re
from pathlib import Path

import pytest

from eval.common import published
from eval.common.published import PublishedFigures
from eval.common.report import write_results

TABLES = {name: value for name, value in vars(published).items() if isinstance(value, PublishedFigures)}
PAPER_TABLES = {name: table for name, table in TABLES.items() if table.source.startswith(published.PAPER)}


def _table_number(table: PublishedFigures) -> int:
    return int(table.source.rsplit("Table ", 1)[1])


def _numbers(table: PublishedFigures, column: str) -> list[float]:
    return [row[column] for row in table.as_rows() if isinstance(row[column], int | float)]


@pytest.mark.parametrize("name", sorted(TABLES))
def test_rows_fill_every_column_with_plausible_values(name):
    table = TABLES[name]
    assert table.source.startswith((f"{published.PAPER}, Table ", "fair-esm README")) and table.caption.endswith(".")
    assert all(len(row) == len(table.columns) for row in table.rows)
    numeric = [column for column in table.columns if _numbers(table, column)]
    assert numeric, table.columns
    for column in numeric:
        values = _numbers(table, column)
        if "Hit-10" in column or "AUC" in column or column == "RH":
            assert all(0.0 < v < 1.0 for v in values), column
        elif column == "ECE":
            assert all(1 <= v <= 25 for v in values), column
        else:
            assert all(0.0 < v < 100.0 for v in values), column


def test_every_paper_table_a_task_reproduces_is_listed():
    assert sorted({_table_number(table) for table in PAPER_TABLES.values()}) == list(range(1, 9))


def test_spot_checks_match_the_paper_as_printed():
    ngram = next(row for row in published.LANGUAGE_MODEL.as_rows() if row["model"] == "n-gram")
    assert ngram["ECE"] == 17.18
    assert [r["ECE"] for r in published.LANGUAGE_MODEL.as_rows() if r["model"] == "LSTM"] == [14.42, 13.54]
    assert [r["ECE"] for r in published.LANGUAGE_MODEL.as_rows() if "data" in r["variant"]] == [10.99, 15.01, 17.50]
    untrained = next(r for r in published.REMOTE_HOMOLOGY.as_rows() if r["pretraining"] == "(None)")
    assert (untrained["Hit-10 fold"], untrained["AUC SF"]) == (0.481, 0.807)
    assert published.REMOTE_HOMOLOGY.as_rows()[0]["model"] == "HHblits*"
    assert published.CONTACTS_LINEAR.as_rows()[-1]["fold (%)"] == 42.8
    assert published.FEATURE_COMBINATION_CONTACTS.as_rows()[-1]["Test (%)"] == 63.3
    assert "| 48.0 | 1.6 |" in published.SECONDARY_STRUCTURE_LINEAR.markdown()  # not 48 | 1.6


def _paper_block(text: str, number: int) -> list[str]:
    """The lines of the paper's Table ``number``: header and rows, from its title to the first blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"Table {number}. "))
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.strip():
            block.append(line)
        elif block:
            break
    return block


def _cells(line: str) -> list[str]:
    """A printed row's cells, lower-cased, "±" splitting mean from SD, labels like "(a)" and citations dropped."""
    line = re.sub(r"</?i>", "", line).replace("n -gram", "n-gram")
    cells = [re.sub(r"^\([a-f]\)\s*|\s*\(\d+\)$", "", cell.strip()) for cell in re.split(r"\t|±", line)]
    return [cell.lower() for cell in cells if cell]


def _same(ours: object, printed: str) -> bool:
    """A cell of ours equals a printed one: numbers by value (17.50 is 17.5), text ignoring case."""
    if isinstance(ours, int | float):
        return re.fullmatch(r"\d+(\.\d+)?", printed) is not None and float(printed) == ours
    return str(ours).lower() == printed


def _follows(ours: tuple, printed: list[str]) -> bool:
    """Whether ``ours`` appears, in order, among the ``printed`` cells."""
    remaining = iter(printed)
    return all(any(_same(cell, other) for other in remaining) for cell in ours)


@pytest.fixture(scope="module")
def paper(shared_data: Path) -> str:
    path = shared_data.parent / "paper" / "rives2021_esm1b.txt"
    if not path.is_file():
        pytest.skip(f"the paper's text {path} is absent")
    return path.read_text()


@pytest.mark.parametrize("number", range(1, 9))
def test_each_paper_table_is_copied_row_by_row(paper, number):
    block = _paper_block(paper, number)
    matched: set[int] = set()
    for table in (t for t in PAPER_TABLES.values() if _table_number(t) == number):
        position = 0
        for row in table.rows:
            ours = tuple(cell for cell in row if cell not in ("", "—"))
            found = next((i for i in range(position, len(block)) if _follows(ours, _cells(block[i]))), None)
            assert found is not None, f"Table {number}: {row} is not printed in the paper, in this order"
            matched.add(found)
            position = found + 1
    with_values = {i for i, line in enumerate(block) if re.search(r"\d\.\d", line)}
    assert with_values <= matched, [block[i] for i in sorted(with_values - matched)]


def test_report_lists_published_figures_after_ours(tmp_path):
    table = PublishedFigures("What was measured.", "a source", ("model", "score"), (("theirs", 0.5),))
    write_results(tmp_path, "task", {"ours": 1.0}, [{"model": "ours", "score": 0.25}], title="T", published=table)
    markdown = (tmp_path / "task.md").read_text()
    assert markdown.index("| ours | 0.25 |") < markdown.index("## Published figures") < markdown.index("| theirs |")
    assert "What was measured. Source: a source." in markdown
    assert json.loads((tmp_path / "task.json").read_text()) == {
        "task": "task",
        "ours": 1.0,
        "published": [
            {"caption": "What was measured.", "source": "a source", "rows": [{"model": "theirs", "score": 0.5}]}
        ],
    }


def test_report_lists_several_tables_in_the_order_given(tmp_path):
    first = PublishedFigures("First.", "one", ("model", "score"), (("a", 0.5),))
    second = PublishedFigures("Second.", "two", ("model", "score"), (("b", 0.75),))
    write_results(tmp_path, "task", {}, [{"model": "ours"}], title="T", published=(first, second))
    markdown = (tmp_path / "task.md").read_text()
    assert markdown.index("First. Source: one.") < markdown.index("Second. Source: two.")
    assert json.loads((tmp_path / "task.json").read_text())["published"] == [first.as_json(), second.as_json()]


def test_report_without_published_figures_has_none(tmp_path):
    write_results(tmp_path, "task", {"ours": 1.0}, [{"model": "ours"}], title="T")
    assert "Published figures" not in (tmp_path / "task.md").read_text()
    assert json.loads((tmp_path / "task.json").read_text()) == {"task": "task", "ours": 1.0}


def test_mismatched_row_is_refused():
    with pytest.raises(ValueError, match="1 cells for 2 columns"):
        PublishedFigures("c.", "s", ("model", "score"), (("theirs",),))
