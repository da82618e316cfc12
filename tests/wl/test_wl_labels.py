"""WL labels are compared by value: isomorphic graphs are never "distinguished" by how a label
is spelled (-0.0 / 0.0, 1 / 1.0, tuple / list / array), for 1-WL, k-WL, k-FWL and the kernel."""

from decimal import Decimal
from fractions import Fraction

import networkx as nx
import numpy as np
import pytest
import torch

from graphdl.data.graph import Graph
from graphdl.errors import DataError
from graphdl.wl import (
    kwl_distinguishes,
    kwl_equivalence,
    wl_distinguishes,
    wl_equivalence,
    wl_feature_matrix,
    wl_subtree_kernel,
)
from graphdl.wl._convert import graph_from_networkx, graph_to_networkx
from graphdl.wl._labels import label_key

TESTS = [
    ("1-WL", lambda a, b, **kw: wl_distinguishes(a, b, **kw)),
    ("2-WL", lambda a, b, **kw: kwl_distinguishes(a, b, 2, **kw)),
    ("2-FWL", lambda a, b, **kw: kwl_distinguishes(a, b, 2, folklore=True, **kw)),
    ("3-WL", lambda a, b, **kw: kwl_distinguishes(a, b, 3, **kw)),
]


def _kernel_rows_equal(g1, g2, **kw) -> bool:
    phi = wl_feature_matrix([g1, g2], 3, **kw).toarray()
    return np.array_equal(phi[0], phi[1])


def _path(n, node=None, edge=None):
    G = nx.path_graph(n)
    if node is not None:
        nx.set_node_attributes(G, {u: node(u) for u in G}, "x")
    if edge is not None:
        nx.set_edge_attributes(G, {e: edge(e) for e in G.edges}, "x")
    return G


# ---------------------------------------------------------------- the reported instance
@pytest.mark.parametrize("name,test", TESTS)
def test_negative_zero_edge_label_is_zero(name, test):
    G1 = _path(4, edge=lambda e: 0.0)
    G2 = _path(4, edge=lambda e: -0.0 if e == (1, 2) else 0.0)
    assert not test(G1, G2, edge_labels="x"), name
    G3 = _path(4, node=lambda u: -0.0 if u == 0 else 0.0)
    assert not test(_path(4, node=lambda u: 0.0), G3, node_labels="x"), name


def test_negative_zero_kernel_and_equivalence():
    G1 = _path(4, edge=lambda e: 0.0)
    G2 = _path(4, edge=lambda e: -0.0)
    assert _kernel_rows_equal(G1, G2, edge_labels="x")
    k = wl_subtree_kernel([G1, G2], 3, normalize=True, edge_labels="x")
    assert k[0, 1] == 1.0  # equal count vectors: the cosine is exactly 1 (integer arithmetic)
    assert wl_equivalence([G1, G2], edge_labels="x").tolist() == [0, 0]
    assert kwl_equivalence([G1, G2], 2, folklore=True, edge_labels="x").tolist() == [0, 0]


def test_negative_zero_in_graph_fields():
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    g1 = Graph(ei, 3, {"node.x": torch.zeros(3, 2), "edge.w": torch.zeros(4, 1)})
    g2 = Graph(ei, 3, {"node.x": torch.tensor([[-0.0, 0.0], [0.0, -0.0], [0.0, 0.0]]),
                       "edge.w": torch.tensor([[-0.0], [-0.0], [0.0], [0.0]])})
    assert not wl_distinguishes(g1, g2, edge_labels="edge.w")
    assert not kwl_distinguishes(g1, g2, 2, folklore=True, edge_labels="edge.w")
    assert _kernel_rows_equal(g1, g2, edge_labels="edge.w")
    # graph_to_networkx labels rows by value too: -0.0 rows are the zero rows
    assert set(nx.get_node_attributes(graph_to_networkx(g2), "label").values()) == {0}


# ------------------------------------------------------------------ the rules, one by one
def test_equal_values_give_equal_keys():
    same = [
        [0.0, -0.0, 0, False, np.float64(-0.0), np.float32(0.0), Decimal("-0"), Fraction(0), 0j, np.int8(0)],
        [1, 1.0, True, np.int64(1), np.float16(1.0), Fraction(2, 2), Decimal("1.00"), 1 + 0j, torch.tensor(1.0)],
        [(1, 2.0), [1.0, 2], np.array([1, 2]), torch.tensor([1.0, 2.0]), (np.int32(1), -0.0 + 2)],
        [[[0.0, 1]], np.array([[-0.0, 1.0]])],
        [{1, 2}, frozenset({2.0, 1.0})],
        [{"a": 1}, {"a": 1.0}],
        ["C", np.str_("C")],
        [b"x", bytearray(b"x")],
        [2 ** 60, 2 ** 60 + 0],
    ]
    for group in same:
        keys = {label_key(v) for v in group}
        assert len(keys) == 1, group


def test_different_values_give_different_keys():
    different = [
        1, "1", b"1", 1.5, None, (1,), [1, 1], np.float32(0.1), 0.1, 2 ** 53, 2 ** 53 + 1, 1j,
        {1}, {"a": 1}, {"a": 2}, [[1, 2]], [1, 2], (), "",
    ]
    keys = [label_key(v) for v in different]
    assert len(set(keys)) == len(keys)
    sorted(keys)  # any two keys are ordered: label ids are ranks, independent of node order


@pytest.mark.parametrize("bad,match", [
    (float("nan"), "finite numbers"), (np.nan, "finite numbers"), (float("-inf"), "finite numbers"),
    (Decimal("NaN"), "finite numbers"), (complex(1, float("nan")), "finite numbers"),
    (np.array([1.0, np.nan]), "finite numbers"), ((0, float("inf")), "finite numbers"),
    (object(), "map these labels to numbers or strings"),
])
def test_nan_and_unsupported_labels_refused(bad, match):
    G = _path(3, node=lambda u: 0.0)
    G.nodes[1]["x"] = bad
    with pytest.raises(DataError, match=match) as err:
        wl_distinguishes(G, _path(3, node=lambda u: 0.0), node_labels="x")
    assert "node 1 attribute `x`" in str(err.value)
    H = _path(3, edge=lambda e: 1)
    H.edges[0, 1]["x"] = bad
    with pytest.raises(DataError, match=match):
        kwl_distinguishes(H, _path(3, edge=lambda e: 1), 2, edge_labels="x")


def test_graph_field_nan_refused_and_integers_exact():
    ei = torch.tensor([[0, 1], [1, 0]])
    big = 2 ** 53
    a = Graph(ei, 2, {"node.x": torch.tensor([[big], [big]])})
    b = Graph(ei, 2, {"node.x": torch.tensor([[big], [big + 1]])})
    assert wl_distinguishes(a, b)  # through float64 both rows were 2^53: one colour
    assert kwl_distinguishes(a, b, 2, folklore=True)
    ints = Graph(ei, 2, {"node.x": torch.tensor([[1], [2]])})
    floats = Graph(ei, 2, {"node.x": torch.tensor([[2.0], [1.0]])})
    assert not wl_distinguishes(ints, floats)  # 1 == 1.0 across dtypes
    with pytest.raises(DataError, match="not exact in float64"):
        wl_distinguishes(b, floats)
    nan = Graph(ei, 2, {"node.x": torch.tensor([[0.0], [float("nan")]])}, validate=False)
    with pytest.raises(DataError, match="node field `node.x` contains NaN"):
        wl_distinguishes(nan, floats)


def test_value_equal_labels_in_families_vocabulary():
    G = nx.path_graph(3)
    nx.set_node_attributes(G, {0: 1, 1: 1.0, 2: 2}, "label")
    g = graph_from_networkx(G, vocab=[1, 2], attr="label")
    assert g["node.x"].tolist() == [[1, 0], [1, 0], [0, 1]]
    with pytest.raises(DataError, match="outside the vocabulary"):
        graph_from_networkx(G, vocab=["1", "2"], attr="label")  # the string "1" is not the number 1


# --------------------------------------------------- property: relabelled copies never split
_MAKERS = [
    lambda r: int(r.integers(3)),
    lambda r: float(r.integers(3)) * (-1.0 if r.random() < 0.5 else 1.0),  # 0.0 and -0.0 both appear
    lambda r: "abc"[int(r.integers(3))],
    lambda r: (int(r.integers(2)), float(r.integers(2))),
    lambda r: np.array([r.integers(2), r.integers(2)], dtype=np.float32),
    lambda r: Fraction(int(r.integers(3)), 2),
    lambda r: None if r.random() < 0.3 else int(r.integers(2)),
]


def _respell(v, rng):
    """The same value written another way (type, sign of zero, container)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return [float(v), np.int64(v), Fraction(v), Decimal(v)][int(rng.integers(4))]
    if isinstance(v, float):
        return [-v if v == 0 else v, np.float64(v), Fraction(v)][int(rng.integers(3))]
    if isinstance(v, Fraction):
        return float(v) if float(v) == v else v
    if isinstance(v, tuple):
        return [list(v), np.array(v, dtype=np.float64), tuple(float(x) for x in v)][int(rng.integers(3))]
    if isinstance(v, np.ndarray):
        return [v.tolist(), tuple(int(x) for x in v), torch.tensor(v)][int(rng.integers(3))]
    return v


def _labelled_pair(rng, n, make_node, make_edge, respell=True):
    G = nx.gnp_random_graph(n, 0.45, seed=int(rng.integers(2 ** 31)))
    for u in G:
        G.nodes[u]["x"] = make_node(rng)
    for e in G.edges:
        G.edges[e]["y"] = make_edge(rng)
    perm = dict(zip(G.nodes, rng.permutation(n).tolist()))
    H = nx.Graph()  # relabelled copy, inserted in a shuffled order, with labels respelled
    same = _respell if respell else (lambda v, r: v)
    H.add_nodes_from(sorted((perm[u], {"x": same(d["x"], rng)}) for u, d in G.nodes(data=True)))
    edges = [(perm[v], perm[u], {"y": same(d["y"], rng)}) for u, v, d in G.edges(data=True)]
    H.add_edges_from([edges[i] for i in rng.permutation(len(edges))])
    return G, H


def test_relabelled_respelled_copies_are_never_distinguished():
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(28):
        mk_node, mk_edge = _MAKERS[trial % len(_MAKERS)], _MAKERS[(3 * trial + 1) % len(_MAKERS)]
        G, H = _labelled_pair(rng, int(rng.integers(2, 8)), mk_node, mk_edge)
        kw = {"node_labels": "x", "edge_labels": "y"}
        assert nx.is_isomorphic(G, H)
        for name, test in TESTS:
            if name == "3-WL" and G.number_of_nodes() > 6:
                continue  # n^3 tuples: the small ones suffice
            assert not test(G, H, **kw), (trial, name)
            checked += 1
        assert _kernel_rows_equal(G, H, **kw)
        assert wl_equivalence([G, H], **kw).tolist() == [0, 0]
    assert checked > 90


def test_value_changes_are_still_seen():
    """No over-merging: changing one label's *value* separates where the structure lets it."""
    G = _path(4, node=lambda u: 0.0, edge=lambda e: 1)
    for attr, where, new in [("node", 0, 1e-300), ("node", 0, "0.0"), ("edge", (1, 2), 1 + 2 ** -52),
                             ("edge", (1, 2), "1"), ("node", 3, (0.0,))]:
        H = G.copy()
        (H.nodes if attr == "node" else H.edges)[where]["x"] = new
        for name, test in TESTS:
            assert test(G, H, node_labels="x", edge_labels="x"), (attr, new, name)


# ------------------------------------------------------------------- networkx agreement
def _nx_hash(G, **kw):
    return nx.weisfeiler_lehman_graph_hash(G, iterations=3, **kw)


def _int_str_pair(rng, n):
    return _labelled_pair(rng, n, lambda r: int(r.integers(3)), lambda r: "ab"[int(r.integers(2))], respell=False)


def test_agrees_with_networkx_where_str_is_one_to_one():
    """networkx compares str(label): with integer / one-character labels str is one-to-one,
    and the verdicts agree (relabelled copies and random pairs, node and edge labels)."""
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(60):
        n = int(rng.integers(2, 9))
        G, H = _int_str_pair(rng, n)
        if rng.random() < 0.5:  # an unrelated graph half of the time
            H, _ = _int_str_pair(rng, n)
        ours = wl_distinguishes(G, H, iterations=3, node_labels="x", edge_labels="y")
        theirs = _nx_hash(G, node_attr="x", edge_attr="y") != _nx_hash(H, node_attr="x", edge_attr="y")
        assert ours == theirs
        seen.add(ours)
    assert seen == {True, False}


def test_departs_from_networkx_where_str_is_not_one_to_one():
    zero, neg = _path(3, node=lambda u: 0.0), _path(3, node=lambda u: -0.0 if u == 1 else 0.0)
    assert _nx_hash(zero, node_attr="x") != _nx_hash(neg, node_attr="x")  # text: "0.0" vs "-0.0"
    assert not wl_distinguishes(zero, neg, node_labels="x")  # values: equal
    num, text = _path(3, node=lambda u: 1), _path(3, node=lambda u: "1")
    assert _nx_hash(num, node_attr="x") == _nx_hash(text, node_attr="x")  # text: both "1"
    assert wl_distinguishes(num, text, node_labels="x")  # values: a number is not a string
