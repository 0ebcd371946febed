"""PDB/mmCIF chain reader: real structures give sequence, CB (CA for Gly) coordinates and 8 Å contact maps."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from Bio.PDB import MMCIFIO, PDBParser

from data_pipeline.errors import MalformedFileError
from data_pipeline.readers.structure import read_chain


def test_every_mdanalysis_chain_has_one_residue_per_dssp_letter(shared_data):
    folder = shared_data / "pdb_chains_mdanalysis_dssp"
    pairs = sorted(folder.glob("*.pdb.gz"))
    assert len(pairs) == 50
    for path in pairs:
        dssp = path.with_name(path.name.replace(".pdb.gz", ".pdb.dssp")).read_text().split()[0]
        assert len(read_chain(path).sequence) == len(dssp), path.name


def test_casp_domain_uses_cb_and_glycine_ca_and_matches_the_target_sequence(shared_data):
    folder = shared_data / "casp12_dncon2_examples"
    chain = read_chain(folder / "T0866-D1.pdb")
    target = "".join((folder / "T0866.fasta").read_text().splitlines()[1:])
    assert len(chain.sequence) == 104 and chain.sequence in target
    assert chain.has_cb.all() and chain.sequence.count("G") == 10
    parsed = PDBParser(QUIET=True).get_structure("t", folder / "T0866-D1.pdb")
    glycine = next(r for r in parsed.get_residues() if r.get_resname() == "GLY")
    index = chain.residue_ids.index(str(glycine.id[1]))
    assert np.allclose(chain.coords[index], glycine["CA"].coord)


def test_contact_map_is_symmetric_and_thresholded_at_8_angstrom(shared_data):
    chain = read_chain(shared_data / "pfam40_domains_kortemme" / "structures" / "1AQT_A.pdb")
    contacts, distances = chain.contact_map(), chain.distances()
    assert contacts.shape == (len(chain.sequence),) * 2 and (contacts == contacts.T).all()
    assert (contacts == (distances < 8.0)).all() and 0 < contacts.mean() < 0.5


def test_a_residue_missing_its_cb_is_never_a_contact(shared_data, tmp_path):
    lines = (shared_data / "pfam40_domains_kortemme" / "structures" / "1AQT_A.pdb").read_text().splitlines()
    dropped = next(i for i, line in enumerate(lines) if line[12:16].strip() == "CB" and line[17:20] != "GLY")
    (tmp_path / "no_cb.pdb").write_text("\n".join(lines[:dropped] + lines[dropped + 1 :]) + "\n")
    chain = read_chain(tmp_path / "no_cb.pdb")
    assert (~chain.has_cb).sum() == 1 and np.isnan(chain.coords[~chain.has_cb]).all()
    assert not chain.contact_map()[~chain.has_cb].any()


def test_mmcif_gives_the_same_chain_as_pdb(shared_data, tmp_path):
    source = shared_data / "pfam40_domains_kortemme" / "structures" / "1CTF_A.pdb"
    writer = MMCIFIO()
    writer.set_structure(PDBParser(QUIET=True).get_structure("1ctf", source))
    writer.save(str(tmp_path / "1ctf.cif"))
    from_cif, from_pdb = read_chain(tmp_path / "1ctf.cif"), read_chain(source)
    assert from_cif.sequence == from_pdb.sequence
    assert np.allclose(from_cif.coords, from_pdb.coords, equal_nan=True)


def test_a_multichain_file_needs_a_chain_name(shared_data):
    path = shared_data / "esm_examples" / "5YH2.pdb"
    with pytest.raises(MalformedFileError, match=r"several chains \['A', 'B', 'C', 'D'\]"):
        read_chain(path)
    assert len(read_chain(path, "C").sequence) > 100
    with pytest.raises(MalformedFileError, match="chain 'Z'.*not found"):
        read_chain(path, "Z")


def test_a_file_without_amino_acids_or_with_broken_coordinates_is_refused(shared_data, tmp_path):
    (tmp_path / "empty.pdb").write_text("HEADER    NOTHING HERE\nEND\n")
    with pytest.raises(MalformedFileError, match="empty.pdb.*no chain with amino-acid residues"):
        read_chain(tmp_path / "empty.pdb")
    with gzip.open(shared_data / "pdb_chains_mdanalysis_dssp" / "1ahsA.pdb.gz", "rt") as text:
        lines = text.read().splitlines()
    atom = next(i for i, line in enumerate(lines) if line.startswith("ATOM"))
    lines[atom] = lines[atom][:30] + "   abc.def" + lines[atom][40:]
    (tmp_path / "broken.pdb").write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedFileError, match="broken.pdb: while parsing: not a readable PDB file"):
        read_chain(tmp_path / "broken.pdb")
