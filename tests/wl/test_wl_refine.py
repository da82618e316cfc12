"""1-WL colour refinement: semantics, batching, labels, aggregators, networkx agreement."""

import warnings

import networkx as nx
import numpy as np
import pytest
import torch

from graphdl.data.graph import Graph, collate
from graphdl.errors import DataError
from graphdl.wl import _hashing, wl_distinguishes, wl_equivalence, wl_histograms, wl_refine
from graphdl.wl._convert import graph_from_networkx, pack
from graphdl.wl.constructions import cycles, random_regular


def _nx_differs(g1, g2, h, **kw) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # networkx warns that attribute-free hashes changed in 3.5
        return nx.weisfeiler_lehman_graph_hash(g1, iterations=h, **kw) != nx.weisfeiler_lehman_graph_hash(
            g2, iterations=h, **kw)


def _gnp(rng, n, p=None):
    return nx.gnp_random_graph(n, rng.random() if p is None else p, seed=int(rng.integers(2**31)))


def _relabel(rng, G):
    nodes = list(G.nodes)
    return nx.relabel_nodes(G, dict(zip(nodes, rng.permutation(len(nodes)).tolist())))


def _random_pairs(rng, count):
    """Independent pairs, relabelled copies and 1-WL-equivalent non-isomorphic regular pairs."""
    out = []
    for i in range(count):
        n = int(rng.integers(1, 10))  # degrees stay single digits: networkx's strings are unambiguous
        kind = i % 3
        g1 = _gnp(rng, n)
        if kind == 0:
            g2 = _gnp(rng, n)
        elif kind == 1:
            g2 = _relabel(rng, g1)
        else:
            n2, d = int(rng.choice([6, 8])), int(rng.choice([2, 3]))
            g1, g2 = random_regular(n2, d, rng), random_regular(n2, d, rng)
        out.append((g1, g2))
    return out


# --------------------------------------------------------------- networkx agreement
def test_agrees_with_networkx_hash_unlabelled():
    """networkx >= 3.5 starts from degrees (= our round 1) and hashes rounds 2..h, so its hash
    differs exactly when h >= 2 and our round-h histograms differ."""
    rng = np.random.default_rng(0)
    pairs = _random_pairs(rng, 150) + [(cycles(6), cycles(3, 3)), (cycles(8), cycles(4, 4))]
    checked = {True: 0, False: 0}
    for g1, g2 in pairs:
        for h in (1, 2, 3, 4):
            ours = wl_distinguishes(g1, g2, iterations=h)
            assert _nx_differs(g1, g2, h) == (h >= 2 and ours), (h, nx.to_graph6_bytes(g1), nx.to_graph6_bytes(g2))
            checked[ours] += 1
    assert checked[True] > 50 and checked[False] > 50


def test_agrees_with_networkx_hash_labelled():
    """With node and/or edge attributes networkx hashes rounds 1..h from the labels."""
    rng = np.random.default_rng(1)
    seen = set()
    for g1, g2 in _random_pairs(rng, 120):
        for G in (g1, g2):
            for u in G.nodes:
                G.nodes[u]["lab"] = "xyz"[int(rng.integers(3))]
            for u, v in G.edges:
                G.edges[u, v]["w"] = int(rng.integers(3))
        for h in (1, 2, 3):
            for kw, ours_kw in [({"node_attr": "lab"}, {"node_labels": "lab"}),
                                ({"edge_attr": "w"}, {"edge_labels": "w"}),
                                ({"node_attr": "lab", "edge_attr": "w"}, {"node_labels": "lab", "edge_labels": "w"})]:
                ours = wl_distinguishes(g1, g2, iterations=h, **ours_kw)
                assert _nx_differs(g1, g2, h, **kw) == ours
                seen.add(ours)
    assert seen == {True, False}


def test_one_wl_equivalent_families_agree_with_networkx():
    from graphdl.wl.constructions import csl_graph, mobius_ladder, prism_graph

    for g1, g2 in [(csl_graph(41, 2), csl_graph(41, 3)), (prism_graph(4), mobius_ladder(4))]:
        for h in (2, 3, 5):
            assert not wl_distinguishes(g1, g2, iterations=h)
            assert not _nx_differs(g1, g2, h)


# ------------------------------------------------------------------------ semantics
def test_hexagon_vs_two_triangles_and_simple_cases():
    assert not wl_distinguishes(cycles(6), cycles(3, 3))
    assert wl_distinguishes(nx.path_graph(4), nx.star_graph(3))
    assert wl_distinguishes(nx.path_graph(3), nx.path_graph(4))  # sizes differ: round 0
    assert not wl_distinguishes(nx.path_graph(4), nx.path_graph(4))
    # long path vs path: needs several rounds; stops early at 1
    p7, g = nx.path_graph(7), nx.Graph([(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (2, 6)])
    assert not wl_distinguishes(p7, g, iterations=0)
    assert wl_distinguishes(p7, g)


def test_refine_rounds_and_stability():
    res = wl_refine(nx.path_graph(5))
    assert res.num_colors == [1, 2, 3, 3] and res.stable and res.iterations == 3
    assert res.colors[-1].tolist()[0] == res.colors[-1].tolist()[4]
    fixed = wl_refine(nx.path_graph(5), iterations=6)
    assert len(fixed.colors) == 7 and fixed.num_colors[-1] == 3 and fixed.stable
    short = wl_refine(nx.path_graph(5), iterations=1)
    assert short.num_colors == [1, 2] and not short.stable
    hists = wl_histograms([nx.path_graph(5), nx.star_graph(4)], iterations=2)
    assert [h.shape for h in hists] == [(2, 1), (2, 3), (2, 5)]
    assert hists[1].sum(1).tolist() == [5, 5]


def test_colours_are_shared_and_independent_of_order():
    rng = np.random.default_rng(2)
    gs = [_gnp(rng, 8, 0.4) for _ in range(5)]
    a = wl_refine(gs, iterations=3)
    b = wl_refine(gs[::-1], iterations=3)
    ha, hb = a.histograms(-1), b.histograms(-1)
    assert torch.equal(ha, hb.flip(0))  # ids are ranks of signature hashes: no order dependence
    c = wl_refine([_relabel(rng, g) for g in gs], iterations=3)
    assert torch.equal(c.histograms(-1), ha)


def test_graph_and_batch_inputs_match_networkx_inputs():
    rng = np.random.default_rng(3)
    gs = [_gnp(rng, 7, 0.4) for _ in range(4)]
    from_nx = wl_refine(gs, iterations=3).histograms(-1)
    graphs = [graph_from_networkx(g) for g in gs]
    assert torch.equal(wl_refine(graphs, iterations=3).histograms(-1), from_nx)
    assert torch.equal(wl_refine(collate(graphs), iterations=3).histograms(-1), from_nx)


def test_graph_node_x_is_the_default_label():
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    plain = Graph(ei, 3, {"node.x": torch.tensor([[1.0, 0], [1, 0], [1, 0]])})
    lab = Graph(ei, 3, {"node.x": torch.tensor([[1.0, 0], [0, 1], [0, 1]])})
    assert wl_distinguishes(plain, lab)
    assert not wl_distinguishes(plain, lab, node_labels=False)
    assert wl_refine(lab, iterations=0).num_colors == [2]
    with pytest.raises(DataError, match="no node field `node.h`"):
        wl_refine(lab, node_labels="node.h")
    with pytest.raises(DataError, match="different widths"):
        wl_refine([lab, Graph(ei, 3, {"node.x": torch.ones(3, 1)})])


def test_graph_edges_are_read_undirected():
    one_way = Graph(torch.tensor([[0, 1], [1, 2]]), 3)
    both = graph_from_networkx(nx.path_graph(3))
    assert not wl_distinguishes(one_way, both, node_labels=False)
    p = pack(one_way)
    assert sorted(zip(p.src.tolist(), p.dst.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1)]


def test_edge_labels_on_graphs():
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    g1 = Graph(ei, 3, {"edge.t": torch.tensor([[0.0], [0.0], [1.0], [1.0]])})
    g2 = Graph(ei, 3, {"edge.t": torch.tensor([[0.0], [0.0], [0.0], [0.0]])})
    assert not wl_distinguishes(g1, g2)
    assert wl_distinguishes(g1, g2, edge_labels="edge.t")


def test_empty_and_edgeless_graphs():
    empty = nx.Graph()
    assert not wl_distinguishes(empty, nx.Graph())
    assert wl_distinguishes(empty, nx.empty_graph(1))
    res = wl_refine([nx.empty_graph(3), nx.empty_graph(0)])
    assert res.stable and res.histograms().tolist() == [[3], [0]]


def test_self_loop_makes_a_node_its_own_neighbour():
    loop = nx.Graph([(0, 1), (1, 1)])
    assert wl_distinguishes(loop, nx.path_graph(2))


# ----------------------------------------------------------------------- aggregators
def test_mean_and_max_refinement():
    # a centre with leaves {b, b} vs {b}: distribution and set equal, multiset not
    def star(k):
        G = nx.star_graph(k)
        nx.set_node_attributes(G, {u: ("a" if u == 0 else "b") for u in G}, "lab")
        return G

    two_k2 = nx.disjoint_union(star(1), star(1))
    c4 = nx.Graph([(0, 1), (1, 2), (2, 3), (3, 0)])
    nx.set_node_attributes(c4, {0: "a", 1: "b", 2: "a", 3: "b"}, "lab")
    assert wl_distinguishes(two_k2, c4, node_labels="lab")
    assert not wl_distinguishes(two_k2, c4, node_labels="lab", aggregate="mean")
    assert not wl_distinguishes(two_k2, c4, node_labels="lab", aggregate="max")
    # mean readout compares proportions: 1 star(2) vs 2 stars(2)
    one, two = star(2), nx.disjoint_union(star(2), star(2))
    assert wl_distinguishes(one, two, node_labels="lab", aggregate="mean", readout="sum")
    assert not wl_distinguishes(one, two, node_labels="lab", aggregate="mean")
    assert not wl_distinguishes(one, two, node_labels="lab", aggregate="max")
    cls = wl_equivalence([one, two, star(3)], node_labels="lab", aggregate="max")
    assert cls[0] == cls[1] == cls[2]
    with pytest.raises(DataError, match="aggregate"):
        wl_refine(one, aggregate="median")


# ------------------------------------------------------------------ exactness
def test_hash_collisions_fall_back_to_exact(monkeypatch):
    rng = np.random.default_rng(4)
    gs = [_gnp(rng, 9, 0.35) for _ in range(6)] + [cycles(6), cycles(3, 3)]
    expected = [h.clone() for h in wl_histograms(gs, iterations=4)]
    monkeypatch.setattr(_hashing, "HASH_MASK", np.uint64(3))  # at most 4 hash values
    got = wl_histograms(gs, iterations=4)
    for a, b in zip(expected, got):
        assert a.shape == b.shape
        # same partition: same sorted counts per graph, same equality pattern across graphs
        assert torch.equal(torch.sort(a, 1).values, torch.sort(b, 1).values)
    for i in range(len(gs)):
        for j in range(len(gs)):
            assert torch.equal(expected[-1][i], expected[-1][j]) == torch.equal(got[-1][i], got[-1][j])


def test_bad_inputs():
    with pytest.raises(DataError, match="networkx graph"):
        wl_refine([nx.path_graph(3), "graph"])
    with pytest.raises(DataError, match="iterations"):
        wl_refine(nx.path_graph(3), iterations=-1)
    with pytest.raises(DataError, match="two graphs"):
        wl_distinguishes(collate([graph_from_networkx(nx.path_graph(2))] * 2), graph_from_networkx(nx.path_graph(2)))
    mixed = nx.path_graph(2)
    nx.set_node_attributes(mixed, 1, "node.x")
    with pytest.raises(DataError, match="labels of networkx"):
        wl_refine([graph_from_networkx(nx.path_graph(2)), mixed], node_labels="node.x")
    G = nx.path_graph(3)
    with pytest.raises(DataError, match="no attribute `lab`"):
        wl_refine(G, node_labels="lab")
