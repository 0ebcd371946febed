"""Alignment readers: real Stockholm, A3M, Pfam aligned FASTA and PSICOV files; ragged or bad rows are refused."""

from __future__ import annotations

import pytest

from data_pipeline.errors import MalformedFileError
from data_pipeline.readers.alignments import read_a3m, read_aligned_fasta, read_psicov, read_stockholm


@pytest.mark.parametrize(
    ("name", "depth", "width"), [("fn3.sto", 98, 117), ("Pkinase.sto", 38, 419), ("globins4.sto", 4, 171)]
)
def test_real_stockholm_alignments(shared_data, name, depth, width):
    alignment = read_stockholm(shared_data / "msa_examples" / name)
    assert (alignment.depth, alignment.width) == (depth, width)


def test_a3m_insertions_are_removed_so_rows_follow_the_query(shared_data):
    path = shared_data / "esm_examples" / "hhblits_uniclust_2017_10_1a3a_1_A.a3m"
    alignment, raw = read_a3m(path), read_a3m(path, keep_insertions=True)
    assert alignment.depth == raw.depth == 1303 and alignment.width == len(raw.rows[0]) == 145
    assert any(len(row) > 145 for row in raw.rows)
    assert all(row.replace("-", "").isupper() for row in alignment.rows)


def test_pfam_aligned_fasta_and_psicov_files(shared_data):
    pfam = read_aligned_fasta(shared_data / "pfam40_domains_kortemme" / "alignments" / "PF00013.align.80")
    assert pfam.ids[0] == "FUBP2_HUMAN/426-491" and pfam.depth > 300
    psicov = read_psicov(shared_data / "casp12_dncon2_examples" / "T0866.aln")
    assert (psicov.depth, psicov.width) == (4016, 183)


def test_a_ragged_row_is_refused_with_its_number(shared_data, tmp_path):
    lines = (shared_data / "pfam40_domains_kortemme" / "alignments" / "PF00013.align.80").read_text().splitlines()[:6]
    lines[3] = lines[3][:-1]
    (tmp_path / "ragged.fasta").write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedFileError, match=r"ragged\.fasta: row 2 \(.*\): \d+ columns but the first row has"):
        read_aligned_fasta(tmp_path / "ragged.fasta")


def test_a_broken_stockholm_file_is_refused(shared_data, tmp_path):
    text = (
        (shared_data / "msa_examples" / "globins4.sto")
        .read_text()
        .replace("GLB5_PETMA  PIVDTGSVAP", "GLB5_PETMA  PIVDTG")
    )
    (tmp_path / "broken.sto").write_text(text)
    with pytest.raises(MalformedFileError, match=r"broken\.sto: while parsing: not a valid Stockholm alignment"):
        read_stockholm(tmp_path / "broken.sto")


def test_a3m_with_a_foreign_character_is_refused(tmp_path):
    (tmp_path / "x.a3m").write_text(">q\nMKV-L\n>h\nMK#-L\n")
    with pytest.raises(MalformedFileError, match=r"row 2 \(h\): the aligned row has '#' at position 3"):
        read_a3m(tmp_path / "x.a3m")
