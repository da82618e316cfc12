"""RDKit featurization: dims, one-hot blocks, specific chemistry, positions and bad input."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from graphdl.data.featurize import (
    ATOM_DIM,
    ATOM_FEATURE_SLICES,
    BOND_DIM,
    BOND_FEATURE_SLICES,
    atom_features,
    bond_features,
    mol_to_graph,
    smiles_to_graph,
)
from graphdl.errors import DataError

A, B = ATOM_FEATURE_SLICES, BOND_FEATURE_SLICES
ONE_HOT_ATOM = ["atomic_num", "degree", "formal_charge", "chiral_tag", "num_hs", "hybridization"]
DRUGS = [
    "CC(=O)Oc1ccccc1C(=O)O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)O",
    "C/C=C/c1ccc(Cl)cc1[N+](=O)[O-]",
    "OC[C@H]1OC(O)[C@H](O)[C@@H](O)[C@@H]1O",
]


def col(g, block, i):
    """Column ``i`` of one-hot ``block`` of ``node.h``."""
    return g["node.h"][:, A[block].start + i]


def test_dims_and_layout():
    assert (ATOM_DIM, BOND_DIM) == (72, 14)
    starts = sorted((s.start, s.stop) for s in A.values())
    assert starts[0][0] == 0 and starts[-1][1] == ATOM_DIM
    assert all(a[1] == b[0] for a, b in itertools.pairwise(starts))  # blocks tile the vector
    bstarts = sorted((s.start, s.stop) for s in B.values())
    assert bstarts[0][0] == 0 and bstarts[-1][1] == BOND_DIM
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bstarts))


@pytest.mark.parametrize("smiles", DRUGS)
def test_one_hot_blocks_and_both_bond_directions(smiles):
    g = smiles_to_graph(smiles)
    mol = Chem.MolFromSmiles(smiles)
    assert g.num_nodes == mol.GetNumAtoms() and g.num_edges == 2 * mol.GetNumBonds()
    assert g["node.h"].shape == (g.num_nodes, ATOM_DIM) and g["edge.e"].shape == (g.num_edges, BOND_DIM)
    assert g["node.h"].dtype == torch.float32
    for block in ONE_HOT_ATOM:
        assert torch.equal(g["node.h"][:, A[block]].sum(1), torch.ones(g.num_nodes))
    for block in ["bond_type", "stereo"]:
        assert torch.equal(g["edge.e"][:, B[block]].sum(1), torch.ones(g.num_edges))
    # every bond is there in both directions with the same features
    fwd = Counter(zip(g.src.tolist(), g.dst.tolist(), map(tuple, g["edge.e"].tolist())))
    rev = Counter(zip(g.dst.tolist(), g.src.tolist(), map(tuple, g["edge.e"].tolist())))
    assert fwd == rev
    bonds = {frozenset((b.GetBeginAtomIdx(), b.GetEndAtomIdx())) for b in mol.GetBonds()}
    assert {frozenset(p) for p in zip(g.src.tolist(), g.dst.tolist())} == bonds
    # the per-atom / per-bond functions agree with the batched featurization
    for atom in mol.GetAtoms():
        assert torch.equal(atom_features(atom), g["node.h"][atom.GetIdx()])
    for bond in mol.GetBonds():
        a, b = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        k = int(((g.src == a) & (g.dst == b)).nonzero()[0, 0])
        assert torch.equal(bond_features(bond), g["edge.e"][k])


def test_atom_chemistry():
    g = smiles_to_graph("c1ccccc1")
    assert torch.equal(col(g, "atomic_num", 5), torch.ones(6))  # carbon is vocabulary slot 5 (Z=6)
    assert torch.equal(g["node.h"][:, A["aromatic"]].squeeze(1), torch.ones(6))
    assert torch.equal(col(g, "hybridization", 2), torch.ones(6))  # SP2
    assert torch.equal(col(g, "num_hs", 1), torch.ones(6))
    assert torch.equal(col(g, "degree", 3), torch.ones(6))  # 2 ring neighbours + 1 H
    torch.testing.assert_close(
        g["node.h"][:, A["mass"]].squeeze(1), torch.full((6,), 0.12011), rtol=0, atol=1e-4
    )
    assert torch.equal(g["edge.e"][:, B["bond_type"].start + 3], torch.ones(12))  # aromatic
    assert torch.equal(g["edge.e"][:, B["in_ring"]].squeeze(1), torch.ones(12))
    assert torch.equal(g["edge.e"][:, B["conjugated"]].squeeze(1), torch.ones(12))

    g = smiles_to_graph("[NH4+].[O-]C")
    assert col(g, "formal_charge", 3)[0] == 1 and col(g, "formal_charge", 1)[1] == 1  # +1, -1
    assert col(g, "num_hs", 4)[0] == 1 and col(g, "degree", 4)[0] == 1
    assert col(g, "hybridization", 4)[2] == 1  # SP3 carbon
    g = smiles_to_graph("N[C@@H](C)C(=O)O")
    chiral = g["node.h"][:, A["chiral_tag"]]
    assert chiral[1, 1:3].sum() == 1 and chiral[0, 0] == 1  # CW or CCW on the stereocentre only
    g = smiles_to_graph("[U].[Fe+3].I")  # outside the vocabularies: the "other" slots
    other = A["atomic_num"].stop - 1
    assert g["node.h"][0, other] == 1 and g["node.h"][1, 25] == 1 and g["node.h"][2, 36] == 1
    assert g["node.h"][1, A["formal_charge"].stop - 1] == 1


def test_bond_chemistry():
    g = smiles_to_graph("C/C=C/C#N")
    e = g["edge.e"]
    stereo = e[:, B["stereo"]]
    bt = e[:, B["bond_type"]]
    double = bt[:, 1] == 1
    assert int(double.sum()) == 2 and int((bt[:, 2] == 1).sum()) == 2  # one double, one triple bond
    assert torch.equal(stereo[double, 3], torch.ones(2))  # E
    assert torch.equal(stereo[~double, 0], torch.ones(6))  # none
    assert int(e[:, B["in_ring"]].sum()) == 0
    assert int(e[:, B["conjugated"]].sum()) == 6  # C=C, C-C and C#N, both directions; not the methyl bond


def test_single_atom_and_unsanitized_molecules():
    g = smiles_to_graph("C")
    assert g.num_nodes == 1 and g.num_edges == 0 and g["edge.e"].shape == (0, BOND_DIM)
    assert col(g, "num_hs", 4)[0] == 1
    raw = Chem.MolFromSmiles("C1CCO1", sanitize=False)
    g = mol_to_graph(raw)
    assert g.num_edges == 8 and bool((g["edge.e"][:, B["in_ring"]] == 1).all())


def test_explicit_h_keeps_heavy_atom_features():
    implicit = smiles_to_graph("CC(=O)N")
    explicit = smiles_to_graph("CC(=O)N", explicit_h=True)
    assert explicit.num_nodes == 9 and explicit.num_edges == 16
    assert torch.equal(explicit["node.h"][:4], implicit["node.h"])
    assert torch.equal(col(explicit, "atomic_num", 0)[4:], torch.ones(5))  # the hydrogens


def test_positions():
    g = smiles_to_graph("CCO", add_positions=True, seed=1)
    assert g["node.pos"].shape == (3, 3) and g["node.pos"].dtype == torch.float32
    assert torch.equal(g["node.pos"], smiles_to_graph("CCO", add_positions=True, seed=1)["node.pos"])
    d = (g["node.pos"][0] - g["node.pos"][1]).norm()
    assert 1.4 < float(d) < 1.65  # a C-C bond
    gh = smiles_to_graph("CCO", add_positions=True, explicit_h=True, dtype=torch.float64)
    assert gh["node.pos"].shape == (9, 3) and gh["node.h"].dtype == torch.float64

    mol = Chem.AddHs(Chem.MolFromSmiles("CN"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    g = mol_to_graph(mol, add_positions=True)
    # float32 storage of RDKit's float64 coordinates: |fl(x) − x| ≤ eps32/2·|x| (measured ≤ 0.34 eps32·|x|)
    want = torch.from_numpy(mol.GetConformer().GetPositions())
    assert torch.allclose(g["node.pos"].double(), want, rtol=torch.finfo(torch.float32).eps, atol=0)
    with pytest.raises(DataError, match="has no conformer; embed one first"):
        mol_to_graph(Chem.MolFromSmiles("CN"), add_positions=True)


@pytest.mark.parametrize(
    "smiles, row, message",
    [
        ("C1CC", None, "invalid SMILES `C1CC`: RDKit could not parse it"),
        ("C1CC", 12, "invalid SMILES `C1CC` (row 12): RDKit could not parse it"),
        (
            "C(C)(C)(C)(C)C",
            3,
            "invalid SMILES `C(C)(C)(C)(C)C` (row 3): RDKit could not parse it (Explicit valence",
        ),
        ("", 4, "invalid SMILES `` (row 4): the molecule has no atoms"),
        ("CC O", None, "invalid SMILES `CC O`: it contains whitespace"),
        ("CC\nO", None, "invalid SMILES `CC\\nO`: it contains whitespace"),
        (float("nan"), 7, "invalid SMILES nan (row 7): expected a string"),
    ],
)
def test_bad_smiles_are_one_line_data_errors(smiles, row, message, capfd):
    with pytest.raises(DataError) as err:
        smiles_to_graph(smiles, row=row)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)
    assert capfd.readouterr().err == ""  # RDKit's own log lines are kept off stderr


def test_empty_and_missing_molecules():
    with pytest.raises(DataError, match="no atoms"):
        mol_to_graph(Chem.Mol())
    with pytest.raises(DataError, match="got None"):
        mol_to_graph(None)
