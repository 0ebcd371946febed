"""Evaluation inputs from the real shared data, and bad inputs refused with the file, record and position."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline.errors import MalformedFileError
from data_pipeline.readers.alignments import Alignment
from data_pipeline.readers.structure import read_chain
from eval.common.splits import grouped_random_folds, random_folds, validation_folds
from eval.structure.contacts.sets import domain_on_target, from_structure, load_contact_set
from eval.structure.secondary.data import load_ss8_sets


def test_training_proteins_shared_with_a_test_set_are_dropped(shared_data):
    sets = load_ss8_sets(shared_data, max_test=3)
    assert sets.dropped == ["1wfb-A"]
    assert len(sets.train) == 499
    test_sequences = {r.sequence for records in sets.tests.values() for r in records}
    assert not test_sequences & {r.sequence for r in sets.train}


def test_a_label_string_of_the_wrong_length_is_refused(shared_data, tmp_path):
    folder = tmp_path / "ss8_netsurfp2"
    folder.mkdir()
    for name in ("CB513_HHblits.csv", "TS115_HHblits.csv", "CASP12_HHblits.csv"):
        (folder / name).symlink_to(shared_data / "ss8_netsurfp2" / name)
    lines = (shared_data / "ss8_netsurfp2" / "netsurfp2_subset500_train.csv").read_text().splitlines()[:4]
    fields = lines[2].split(",")
    fields[3] = fields[3][:-1]  # the 8-state string loses its last residue
    lines[2] = ",".join(fields)
    (folder / "netsurfp2_subset500_train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedFileError, match=r"line 3 \(2wqk-B\).*ss8"):
        load_ss8_sets(tmp_path)


def test_contact_sets_load_with_alignments_placed_on_the_structure(shared_data):
    kortemme = load_contact_set("kortemme", shared_data, limit=3)
    assert [p.group for p in kortemme] == ["a", "a", "a"]
    for protein in kortemme:
        assert protein.contacts.shape == (len(protein.sequence),) * 2
        assert (protein.contacts == protein.contacts.T).all()
        msa = protein.alignment.anchored(protein.sequence, max_rows=20)
        assert msa.shape == (21, len(protein.sequence))
        # most structure residues find a family column
        assert (protein.alignment.columns >= 0).mean() > 0.5
    casp = load_contact_set("casp12", shared_data)
    assert [p.name for p in casp] == ["T0866-D1", "T0900-D1"]
    assert all(p.alignment.rows[0].__len__() == len(p.sequence) for p in casp)
    with pytest.raises(ValueError, match="unknown contact set"):
        load_contact_set("casp13", shared_data)


def test_a_structure_that_disagrees_with_its_target_is_refused(shared_data):
    folder = shared_data / "casp12_dncon2_examples"
    chain = read_chain(folder / "T0866-D1.pdb")
    target = (folder / "T0866.fasta").read_text().splitlines()[1]
    first = int(chain.residue_ids[0])
    wrong = target[: first - 1] + ("A" if target[first - 1] != "A" else "G") + target[first:]
    with pytest.raises(MalformedFileError, match=f"residue {first}: the structure has"):
        domain_on_target(chain, Alignment(("t",), (wrong,)), folder / "T0866-D1.pdb", "T0866-D1")


def _pdb(residues: list[tuple[str, list[str]]]) -> str:
    lines, serial = [], 1
    for number, (name, atoms) in enumerate(residues, start=1):
        for atom in atoms:
            x = 3.8 * number
            coordinates = f"{x:8.3f}{0.0:8.3f}{0.0:8.3f}"
            lines.append(f"ATOM  {serial:5d}  {atom:<3s} {name} A{number:4d}    {coordinates}  1.00  0.00           C")
            serial += 1
    return "\n".join(lines + ["END"]) + "\n"


def test_residues_missing_their_cb_are_never_scored_and_a_chain_without_any_is_refused(tmp_path):
    path = tmp_path / "missing.pdb"
    path.write_text(
        _pdb([("ALA", ["N", "CA", "CB"]), ("ALA", ["N", "CA"]), ("GLY", ["N", "CA"]), ("ALA", ["CA", "CB"])])
    )
    protein = from_structure(read_chain(path), "missing")
    assert protein.valid.tolist() == [True, False, True, True]
    assert not protein.contacts[1].any()
    bare = tmp_path / "bare.pdb"
    bare.write_text(_pdb([("ALA", ["N", "CA"]), ("LEU", ["N", "CA"]), ("SER", ["CA"])]))
    with pytest.raises(MalformedFileError, match="fewer than two residues have a CB"):
        from_structure(read_chain(bare), "bare")


def test_query_alignment_rows_map_residues_to_query_positions(shared_data):
    protein = load_contact_set("casp12", shared_data, limit=1)[0]
    sequences, index = protein.alignment.residues(max_rows=5, seed=0)
    anchored = protein.alignment.anchored(protein.sequence, max_rows=5, seed=0)
    from eval.structure.msa.features import AMINO_ACIDS

    for row, sequence in enumerate(sequences):
        here = index[row] >= 0
        letters = np.array([sequence[i] for i in index[row][here]])
        expected = np.array([AMINO_ACIDS[s] if s < 20 else "X" for s in anchored[row + 1][here]])
        standard = expected != "X"
        assert (letters[standard] == expected[standard]).all()


def test_validation_folds_split_only_the_training_side():
    folds = random_folds(20, 4, seed=1)
    for (train, test), (fit, validation) in zip(folds, validation_folds(folds, seed=1), strict=True):
        assert set(fit) | set(validation) == set(train) and not set(fit) & set(validation)
        assert not (set(fit) | set(validation)) & set(test) and len(validation) == 3
    with pytest.raises(ValueError, match="at least 2 training items"):
        validation_folds([(np.array([0]), np.array([1]))])


def test_grouped_folds_keep_each_group_in_one_test_set():
    groups = [(position,) for position in [3, 3, 5, 7, 7, 7, 9, 11, 11, 2]]
    folds = grouped_random_folds(groups, 3, seed=2)
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(len(groups)))
    for train, test in folds:
        assert not {groups[i] for i in train} & {groups[i] for i in test}
    with pytest.raises(ValueError, match="number of groups"):
        grouped_random_folds([(1,), (1,)], 2)
