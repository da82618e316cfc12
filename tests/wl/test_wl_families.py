"""Pair families: computed verdicts equal the expected ones; constructions are what they claim."""

import glob
import os

import networkx as nx
import numpy as np
import pytest
import torch

from graphdl.data.registry import DATASETS
from graphdl.errors import DataError
from graphdl.wl import FAMILIES, dataset_pairs, load_pairs, pair_to_networkx, pair_verdicts, permute_nodes
from graphdl.wl import constructions as C
from graphdl.wl._smiles import smiles_to_networkx
from graphdl.wl.families import MOLECULAR_PAIRS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SIZES = {"csl": 45, "srg": 10, "cfi": 6, "molecular": 6, "regular": 11, "3wl": 9, "random": 24, "aggregators": 12}
SEPARATED = {  # (1-WL, 3-WL) pairs separated with default parameters
    "csl": (0, 45), "srg": (0, 0), "cfi": (0, 2), "molecular": (0, 6), "regular": (0, 11),
    "3wl": (0, 5), "random": (8, 16), "aggregators": (12, 12),
}


@pytest.fixture(scope="module")
def families():
    return {name: load_pairs(name) for name in FAMILIES}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_family_verdicts_match_expected(families, name):
    pairs = families[name]
    assert len(pairs) == SIZES[name]
    got = {}
    for test in ("wl1", "wl3"):
        verdicts = pair_verdicts(pairs, test)
        expected = [c.meta["expected"][test] for c in pairs]
        wrong = [c.meta["name"] for c, v, e in zip(pairs, verdicts, expected) if v != e]
        assert not wrong, f"{name}: {test} verdict differs from expected on {wrong}"
        got[test] = sum(verdicts)
    assert (got["wl1"], got["wl3"]) == SEPARATED[name]
    for test in ("sum", "mean", "max", "wl4"):
        sub = [c for c in pairs if test in c.meta["expected"]]
        if sub:
            assert pair_verdicts(sub, test) == [c.meta["expected"][test] for c in sub], (name, test)


@pytest.mark.parametrize("name", ["csl", "srg", "molecular", "regular", "3wl", "random", "aggregators"])
def test_classical_equivalences_on_families(families, name):
    """2-WL ≡ 1-WL and 3-WL ≡ 2-FWL on every pair (3-WL itself run on graphs up to 41 nodes)."""
    pairs = families[name]
    assert pair_verdicts(pairs, "wl2") == pair_verdicts(pairs, "wl1")
    small = [c for c in pairs if max(c.meta["nodes"]) <= 41]
    assert pair_verdicts(small, "wl3_oblivious") == pair_verdicts(small, "wl3")


def test_graphs_are_model_ready(families):
    for name, pairs in families.items():
        widths = set()
        for case in pairs:
            for g in (case.g1, case.g2):
                x = g["node.x"]
                assert x.shape[0] == g.num_nodes and x.dtype == torch.float32
                widths.add(x.shape[1])
                ei = g.edge_index
                fwd = set(map(tuple, ei.t().tolist()))
                assert fwd == {(d, s) for s, d in fwd}, "edges in both directions"
                assert torch.all(ei[1][1:] >= ei[1][:-1]), "sorted by destination"
            assert case.meta["nodes"] == (case.g1.num_nodes, case.g2.num_nodes)
        assert len(widths) == 1, name
    assert families["molecular"][0].meta["vocab"] == ["C", "N", "O"]
    assert families["aggregators"][0].g1["node.x"].shape[1] == 4


def test_srg_parameters_and_non_isomorphism(families):
    for case in families["srg"]:
        g1, g2 = pair_to_networkx(case)
        assert C.srg_parameters(g1) == C.srg_parameters(g2) == case.meta["srg"]
        if max(case.meta["nodes"]) <= 28:
            assert not nx.vf2pp_is_isomorphic(g1, g2)
    params = {c.meta["name"]: c.meta["srg"] for c in families["srg"]}
    assert params["rook4x4_vs_shrikhande"] == (16, 6, 2, 2)
    assert params["T8_vs_chang1"] == (28, 12, 6, 4)
    assert params["paley25_vs_latin5"] == (25, 12, 5, 6)
    assert params["latin_Z6_vs_latin_S3"] == (36, 15, 6, 6)
    # Paley(25) is the Latin square graph of Z5, so the non-group square is the one that differs
    assert nx.vf2pp_is_isomorphic(C.paley_graph(25), C.latin_square_graph(C.group_table("Z5")))
    for g in ("Z8", "Z4xZ2", "Z2xZ2xZ2", "D4", "Q8", "S3"):
        C.latin_square_graph(C.group_table(g))  # raises unless a Latin square
    assert C.srg_parameters(C.paley_graph(13)) == (13, 6, 2, 3)


def test_cfi_construction(families):
    sizes = {c.meta["base"]: c.meta["nodes"] for c in families["cfi"]}
    assert sizes == {"K3": (18, 18), "C4": (24, 24), "K4": (40, 40), "K33": (60, 60), "Q3": (80, 80),
                     "petersen": (100, 100)}
    k4 = nx.complete_graph(4)
    assert not nx.vf2pp_is_isomorphic(C.cfi_graph(k4), C.cfi_graph(k4, twisted=True))
    assert all(d == 3 for _, d in C.cfi_graph(k4).degree())


def test_csl_and_regular_constructions(families):
    for case in families["csl"]:
        for g in pair_to_networkx(case):
            assert g.number_of_nodes() == 41 and {d for _, d in g.degree()} == {4}
    for case in families["regular"] + [c for c in families["random"] if c.meta["kind"] == "regular"]:
        g1, g2 = pair_to_networkx(case)
        assert sorted(d for _, d in g1.degree()) == sorted(d for _, d in g2.degree())
        assert len({d for _, d in g1.degree()}) == 1
        assert not nx.is_isomorphic(g1, g2)
    for case in families["random"]:
        assert nx.is_isomorphic(*pair_to_networkx(case)) == case.meta["isomorphic"]


def test_molecules_match_rdkit():
    Chem = pytest.importorskip("rdkit.Chem")
    for _, *smiles in MOLECULAR_PAIRS:
        for s in smiles:
            mol = Chem.MolFromSmiles(s)
            ref = nx.Graph()
            ref.add_nodes_from((a.GetIdx(), {"label": a.GetSymbol()}) for a in mol.GetAtoms())
            ref.add_edges_from((b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds())
            ours = smiles_to_networkx(s)
            assert nx.is_isomorphic(ours, ref, node_match=lambda a, b: a["label"] == b["label"])
    with pytest.raises(DataError, match="never closed"):
        smiles_to_networkx("C1CC")
    with pytest.raises(DataError, match="unexpected"):
        smiles_to_networkx("C1CC?C1")


def test_random_families_depend_on_seed_only():
    a, b, c = load_pairs("random", seed=3), load_pairs("random", seed=3), load_pairs("random", seed=4)
    same = all(torch.equal(x.g1.edge_index, y.g1.edge_index) and torch.equal(x.g2.edge_index, y.g2.edge_index)
               for x, y in zip(a, b))
    assert same
    assert any(not torch.equal(x.g1.edge_index, y.g1.edge_index) for x, y in zip(a, c))
    small = load_pairs("regular", n_random=2, random_nodes=8, cycle_lengths=[3], ladder_sizes=[], petersen=False)
    assert len(small) == 3
    with pytest.raises(DataError, match="parameter"):
        load_pairs("regular", n_random="many")
    with pytest.raises(DataError, match="did you mean `csl`"):
        load_pairs("cls")


def test_permuted_nodes_keep_verdicts(families):
    rng = np.random.default_rng(0)
    pairs = families["3wl"][:5]
    perm = [type(c)(permute_nodes(c.g1, rng), permute_nodes(c.g2, rng), c.meta) for c in pairs]
    assert pair_verdicts(perm, "wl3") == pair_verdicts(pairs, "wl3")
    for c, p in zip(pairs, perm):
        assert nx.is_isomorphic(pair_to_networkx(c)[0], pair_to_networkx(p)[0])


def test_dataset_specs_load_with_their_checksums():
    import graphdl.wl  # noqa: F401  (registers `wl_pairs`)
    from graphdl.spec.loader import load_spec
    from graphdl.spec.model import validate_model

    files = sorted(glob.glob(os.path.join(ROOT, "datasets", "wl_*.yaml")))
    names = {os.path.basename(f)[3:-5] for f in files}
    assert names == {"csl", "srg", "cfi", "molecular", "regular", "3wl", "random", "aggregators"}
    cls = DATASETS["wl_pairs"]
    for f in files:
        doc = load_spec(f)
        params = validate_model(cls.Params, doc.data, doc, (), "dataset type `wl_pairs`")
        ds = cls.load(params, cache_dir=None, base_dir=os.path.dirname(f))
        assert ds.meta["sha256"] == params.sha256
        pairs = dataset_pairs(ds)
        assert len(ds) == 2 * len(pairs) == 2 * len(ds.meta["expected"]["wl1"])
        assert ds.fields["node.x"].dim == ds.graphs[0]["node.x"].shape[1]


def test_dataset_checksum_mismatch_and_permute():
    import graphdl.wl  # noqa: F401
    cls = DATASETS["wl_pairs"]
    p = cls.Params(type="wl_pairs", family="molecular", sha256="0" * 64)
    with pytest.raises(DataError, match="sha256"):
        cls.load(p, cache_dir=None, base_dir=".")
    q = cls.Params(type="wl_pairs", family="molecular", permute=True, seed=1)
    ds = cls.load(q, cache_dir=None, base_dir=".")
    assert pair_verdicts(dataset_pairs(ds), "wl3") == [True] * 6
