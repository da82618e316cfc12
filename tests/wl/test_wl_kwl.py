"""k-WL and k-FWL: classical equivalences, invariance, exactness, known separations."""

import networkx as nx
import numpy as np
import pytest
import torch

from graphdl.errors import DataError
from graphdl.wl import _hashing, kwl_distinguishes, kwl_equivalence, kwl_refine, wl_equivalence
from graphdl.wl._convert import graph_from_networkx
from graphdl.wl.constructions import (
    cfi_graph,
    csl_graph,
    cycles,
    mobius_ladder,
    prism_graph,
    random_regular,
    rook_graph,
    shrikhande_graph,
)


def _relabel(rng, G):
    return nx.relabel_nodes(G, dict(zip(G.nodes, rng.permutation(G.number_of_nodes()).tolist())))


def _small_graphs(rng, count):
    gs = []
    for i in range(count):
        n = int(rng.integers(4, 9))
        g = nx.gnp_random_graph(n, float(rng.random()), seed=int(rng.integers(2**31)))
        gs += [g, _relabel(rng, g)] if i % 3 == 0 else [g]
    gs += [cycles(6), cycles(3, 3), prism_graph(4), mobius_ladder(4), random_regular(8, 3, rng)]
    return gs


def _partition(cls: torch.Tensor):
    c = cls.tolist()
    return [[c[i] == c[j] for j in range(len(c))] for i in range(len(c))]


def test_two_wl_equals_one_wl():
    gs = _small_graphs(np.random.default_rng(0), 30)
    assert _partition(kwl_equivalence(gs, 2)) == _partition(wl_equivalence(gs))


def test_two_fwl_equals_three_wl():
    gs = _small_graphs(np.random.default_rng(1), 20)
    assert _partition(kwl_equivalence(gs, 2, folklore=True)) == _partition(kwl_equivalence(gs, 3))


def test_isomorphic_graphs_never_separated():
    rng = np.random.default_rng(2)
    for _ in range(5):
        g = nx.gnp_random_graph(7, 0.4, seed=int(rng.integers(2**31)))
        h = _relabel(rng, g)
        for k, f in [(2, False), (2, True), (3, False), (3, True)]:
            assert not kwl_distinguishes(g, h, k, f)


def test_known_separations():
    six, two3 = cycles(6), cycles(3, 3)
    assert not kwl_distinguishes(six, two3, 1)
    assert not kwl_distinguishes(six, two3, 2)
    assert kwl_distinguishes(six, two3, 2, folklore=True)
    assert kwl_distinguishes(six, two3, 3)
    rook, shr = rook_graph(4), shrikhande_graph()
    assert not kwl_distinguishes(rook, shr, 2, folklore=True)
    assert not kwl_distinguishes(rook, shr, 3)
    assert kwl_distinguishes(rook, shr, 3, folklore=True)  # 4-WL sees the rook's 4-cliques
    k3 = nx.complete_graph(3)
    assert kwl_distinguishes(cfi_graph(k3), cfi_graph(k3, True), 2, folklore=True)


def test_cfi_k4_needs_four_wl():
    k4 = nx.complete_graph(4)
    a, b = cfi_graph(k4), cfi_graph(k4, True)
    assert not kwl_distinguishes(a, b, 2, folklore=True)
    assert kwl_distinguishes(a, b, 3, folklore=True)


def test_refine_shapes_iterations_and_labels():
    gs = [nx.path_graph(4), nx.star_graph(3)]
    res = kwl_refine(gs, 2, folklore=True)
    assert res.stable and [c.shape for c in res.colors[-1]] == [(4, 4), (4, 4)]
    assert res.histograms().shape == (2, res.num_colors[-1])
    one = kwl_refine(gs, 3, iterations=1)
    assert one.iterations == 1 and one.colors[1][0].shape == (4, 4, 4)
    # labels enter the atomic type; different sizes never share a colour
    a, b = nx.path_graph(3), nx.path_graph(3)
    nx.set_node_attributes(a, {0: "x", 1: "y", 2: "y"}, "lab")
    nx.set_node_attributes(b, {0: "y", 1: "x", 2: "y"}, "lab")
    assert kwl_distinguishes(a, b, 2, folklore=True, node_labels="lab")
    assert not kwl_distinguishes(a, b, 2, folklore=True)
    mixed = kwl_refine([nx.path_graph(3), nx.path_graph(4)], 2)
    h = mixed.histograms(0)
    assert not ((h[0] > 0) & (h[1] > 0)).any()
    assert kwl_distinguishes(nx.path_graph(3), nx.path_graph(4), 2, folklore=True)


def test_graph_inputs_match_networkx_inputs():
    g1, g2 = csl_graph(13, 2), csl_graph(13, 5)
    a = kwl_distinguishes(g1, g2, 2, folklore=True)
    b = kwl_distinguishes(graph_from_networkx(g1), graph_from_networkx(g2), 2, folklore=True)
    assert a == b


def test_collisions_and_chunks_stay_exact(monkeypatch):
    from graphdl.wl import kwl

    gs = _small_graphs(np.random.default_rng(3), 10)
    ref = _partition(kwl_equivalence(gs, 2, folklore=True))
    ref3 = _partition(kwl_equivalence(gs[:8], 3))
    monkeypatch.setattr(kwl, "CHUNK_CODES", 50)  # many chunks per graph
    assert _partition(kwl_equivalence(gs, 2, folklore=True)) == ref
    monkeypatch.setattr(_hashing, "HASH_MASK", np.uint64(1))  # every hash collides
    assert _partition(kwl_equivalence(gs, 2, folklore=True)) == ref
    assert _partition(kwl_equivalence(gs[:8], 3)) == ref3


def test_multiword_codes(monkeypatch):
    """Codes that do not fit one int64 are split over words and sorted lexicographically."""
    gs = [cycles(6), cycles(3, 3), prism_graph(3), mobius_ladder(3)]
    ref = _partition(kwl_equivalence(gs, 3, folklore=True))
    monkeypatch.setattr(_hashing, "INT64_MAX", 40)  # forces one word per component
    assert _partition(kwl_equivalence(gs, 3, folklore=True)) == ref


def test_bad_k():
    g = nx.path_graph(3)
    with pytest.raises(DataError, match="k-FWL needs k >= 2"):
        kwl_distinguishes(g, g, 1, folklore=True)
    with pytest.raises(DataError, match="positive integer"):
        kwl_refine(g, 0)
    with pytest.raises(DataError, match="k <= 4"):
        kwl_refine(g, 5)
    with pytest.raises(DataError, match="colour refinement"):
        kwl_refine(g, 1)
