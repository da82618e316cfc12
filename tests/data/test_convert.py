"""Converters (networkx, PyG, DGL) and the graph-case catalogue they are tested on."""

from __future__ import annotations

import sys
from collections import Counter

import networkx as nx
import pytest
import torch

from graphdl.data.convert import (
    MissingDependencyError,
    from_dgl,
    from_networkx,
    from_pyg,
    to_dgl,
    to_networkx,
    to_pyg,
)
from graphdl.data.graph import Graph, collate
from graphdl.errors import DataError, KernelUnavailableError
from graphdl.testing.graph_cases import (
    CASE_TAGS,
    graph_cases,
    permute_graph,
    random_graph,
    random_node_permutation,
    structural_tags,
)

SINGLE = [(n, g) for n, g in graph_cases(include_empty=True) if g.num_graphs == 1]
ALL = graph_cases(include_empty=True)


def edge_multiset(edge_index, fields=()) -> Counter:
    """``{(src, dst, *edge field rows): count}``: edges as a multiset, independent of order."""
    rows = [edge_index[0].tolist(), edge_index[1].tolist()]
    rows += [[tuple(torch.as_tensor(r).reshape(-1).tolist()) for r in f] for f in fields]
    return Counter(zip(*rows))


def assert_same_graph(a: Graph, b: Graph) -> None:
    assert (a.num_nodes, a.num_graphs) == (b.num_nodes, b.num_graphs)
    assert torch.equal(a.edge_index, b.edge_index)
    assert torch.equal(a.batch, b.batch)
    assert sorted(a.fields) == sorted(b.fields)
    for k in a.fields:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------ networkx
@pytest.mark.parametrize("name, g", SINGLE)
def test_networkx_round_trip(name, g):
    G = to_networkx(g)
    assert G.number_of_nodes() == g.num_nodes and G.number_of_edges() == g.num_edges
    back = from_networkx(G, node_attrs=["h"], edge_attrs=["e"], dtype=torch.float64)
    assert edge_multiset(back.edge_index, [back["edge.e"]]) == edge_multiset(g.edge_index, [g["edge.e"]])
    # networkx cannot say the width of an attribute no node (edge) carries: such fields come back (0,)
    for k, v in g.fields.items():
        if v.size(0) == 0:
            assert back[k].shape == (0,) and back[k].dtype == v.dtype
            back[k] = v
    assert_same_graph(back, g)


def test_networkx_undirected_relabels_and_doubles_edges():
    G = nx.Graph()
    G.add_nodes_from([("c", {"z": 6.0}), ("a", {"z": 8.0}), ("b", {"z": 1.0})])
    G.add_edge("c", "a", w=[1.0, 2.0])
    G.add_edge("a", "b", w=[3.0, 4.0])
    G.add_edge("b", "b", w=[5.0, 6.0])  # self-loop: one directed edge, not two
    G.graph["y"] = [0.5, 1.5]
    g = from_networkx(G, node_attrs=["z"], edge_attrs={"w": "edge.e"}, graph_attrs=["y"])
    assert g.num_nodes == 3 and g.num_edges == 5
    assert g["node.z"].tolist() == [6.0, 8.0, 1.0]  # G's node order: c=0, a=1, b=2
    assert g["node.z"].dtype == torch.get_default_dtype()
    assert edge_multiset(g.edge_index, [g["edge.e"]]) == Counter(
        {
            (0, 1, (1.0, 2.0)): 1,
            (1, 0, (1.0, 2.0)): 1,
            (1, 2, (3.0, 4.0)): 1,
            (2, 1, (3.0, 4.0)): 1,
            (2, 2, (5.0, 6.0)): 1,
        }
    )
    assert g["graph.y"].shape == (1, 2)
    # back to undirected: one edge per pair, the same attributes
    H = to_networkx(g, to_undirected=True, edge_attrs={"e": "w"})
    assert isinstance(H, nx.Graph) and not H.is_directed()
    assert H.number_of_edges() == 3 and H.graph["y"] == [0.5, 1.5]
    assert H.edges[0, 1]["w"] == [1.0, 2.0] and H.edges[2, 2]["w"] == [5.0, 6.0]


def test_networkx_multigraph_keeps_parallel_edges():
    G = nx.MultiGraph()
    G.add_nodes_from(range(3))
    G.add_edge(0, 1, e=1.0)
    G.add_edge(0, 1, e=2.0)
    G.add_edge(1, 2, e=3.0)
    g = from_networkx(G, edge_attrs=["e"])
    assert edge_multiset(g.edge_index, [g["edge.e"]]) == Counter(
        {
            (0, 1, (1.0,)): 1,
            (1, 0, (1.0,)): 1,
            (0, 1, (2.0,)): 1,
            (1, 0, (2.0,)): 1,
            (1, 2, (3.0,)): 1,
            (2, 1, (3.0,)): 1,
        }
    )
    H = to_networkx(g, to_undirected=True)
    assert isinstance(H, nx.MultiGraph) and H.number_of_edges() == 3


def test_networkx_tensor_and_numpy_values_keep_dtype():
    import numpy as np

    G = nx.DiGraph()
    G.add_node(0, h=np.array([1, 2], dtype=np.int32), t=torch.tensor([1.0], dtype=torch.float64))
    G.add_node(1, h=np.array([3, 4], dtype=np.int32), t=torch.tensor([2.0], dtype=torch.float64))
    g = from_networkx(G, node_attrs=["h", "t"])
    assert g["node.h"].dtype == torch.int32 and g["node.t"].dtype == torch.float64
    assert g.num_edges == 0


def test_networkx_errors():
    G = nx.path_graph(3)
    G.nodes[0]["h"] = 1.0
    with pytest.raises(DataError, match=r"node 1 has no attribute `h`"):
        from_networkx(G, node_attrs=["h"])
    with pytest.raises(DataError, match="no attribute `e`"):
        from_networkx(G, edge_attrs=["e"])
    with pytest.raises(DataError, match="graph has no attribute `y`"):
        from_networkx(G, graph_attrs=["y"])
    G.nodes[1]["h"], G.nodes[2]["h"] = [1.0, 2.0], 3.0
    with pytest.raises(DataError, match="cannot be stacked"):
        from_networkx(G, node_attrs=["h"])
    batch = dict(ALL)["batch"]
    with pytest.raises(DataError, match="batch of 5"):
        to_networkx(batch)
    directed = dict(SINGLE)["bipartite"]
    with pytest.raises(DataError, match="not symmetric"):
        to_networkx(directed, to_undirected=True)
    ring = dict(SINGLE)["undirected_ring"]  # symmetric structure, random (asymmetric) edge features
    with pytest.raises(DataError, match="differs between edges"):
        to_networkx(ring, to_undirected=True)
    assert to_networkx(ring, to_undirected=True, edge_attrs=[]).number_of_edges() == 6


# ----------------------------------------------------------------------------------- PyG
@pytest.mark.parametrize("name, g", ALL)
def test_pyg_round_trip(name, g):
    pytest.importorskip("torch_geometric")
    data = to_pyg(g)
    assert data.num_nodes == g.num_nodes and data.num_edges == g.num_edges
    assert torch.equal(data.x, g["node.h"]) and torch.equal(data.edge_attr, g["edge.e"])
    back = from_pyg(data)
    assert edge_multiset(back.edge_index, [back["edge.e"]]) == edge_multiset(
        data.edge_index, [data.edge_attr]
    )
    assert_same_graph(back, g)


def test_pyg_batch_matches_collate_and_fields_by_name():
    pytest.importorskip("torch_geometric")
    from torch_geometric.data import Batch, Data

    gen = torch.Generator().manual_seed(1)
    datas = []
    for n, e in [(3, 4), (1, 0), (4, 5)]:
        datas.append(
            Data(
                x=torch.randn(n, 2, generator=gen),
                edge_index=torch.randint(n, (2, e), generator=gen),
                edge_attr=torch.randn(e, 3, generator=gen),
                pos=torch.randn(n, 3, generator=gen),
                y=torch.randn(1, 2, generator=gen),
                train_mask=torch.ones(n, dtype=torch.bool),
            )
        )
    b = Batch.from_data_list(datas)
    gb = from_pyg(b)
    assert gb.num_graphs == 3 and sorted(gb.fields) == ["edge.e", "graph.y", "node.h", "node.pos"]
    assert_same_graph(gb, collate([from_pyg(d) for d in datas]))
    assert torch.equal(gb.ptr, b.ptr)
    # node-level y, explicit mappings, dropping an attribute
    d = datas[0]
    d.y = torch.arange(3.0)
    assert "node.y" in from_pyg(d).fields
    g = from_pyg(d, mapping={"train_mask": "node.mask", "y": None, "x": "node.feat"})
    assert sorted(g.fields) == ["edge.e", "node.feat", "node.mask", "node.pos"]
    d.y = torch.tensor(2.0)
    assert from_pyg(d)["graph.y"].shape == (1,)


def test_pyg_errors_name_the_fix():
    pytest.importorskip("torch_geometric")
    from torch_geometric.data import Data

    d = Data(x=torch.zeros(3, 1), edge_index=torch.tensor([[0], [1]]), y=torch.zeros(2))
    with pytest.raises(DataError, match=r"mapping=\{'y': 'graph.y'\}"):
        from_pyg(d)
    with pytest.raises(DataError, match="lacks"):
        from_pyg(d, mapping={"z": "node.z"})
    bad = Data(x=torch.zeros(2, 1), edge_index=torch.tensor([[0], [5]]))
    with pytest.raises(DataError, match="outside 0..1"):
        from_pyg(bad)


def test_missing_optional_packages_raise_importerror_with_pip_line(monkeypatch):
    g = dict(SINGLE)["self_loops"]
    monkeypatch.setitem(sys.modules, "torch_geometric", None)
    with pytest.raises(MissingDependencyError, match="pip install torch_geometric") as err:
        to_pyg(g)
    assert isinstance(err.value, ImportError) and isinstance(err.value, KernelUnavailableError)
    monkeypatch.setitem(sys.modules, "dgl", None)
    with pytest.raises(MissingDependencyError, match="pip install dgl"):
        to_dgl(g)


# ----------------------------------------------------------------------------------- DGL
@pytest.mark.parametrize("name, g", ALL)
def test_dgl_round_trip(name, g):
    pytest.importorskip("dgl")
    g = g.replace()
    dg, gf = to_dgl(g, with_graph_fields=True)
    assert dg.num_nodes() == g.num_nodes and dg.num_edges() == g.num_edges
    assert dg.batch_size == g.num_graphs
    assert torch.equal(dg.ndata["h"], g["node.h"]) and torch.equal(dg.edata["e"], g["edge.e"])
    back = from_dgl(dg, graph_fields=gf)
    src, dst = dg.edges()
    assert edge_multiset(back.edge_index, [back["edge.e"]]) == edge_multiset(
        torch.stack([src, dst]), [dg.edata["e"]]
    )
    assert_same_graph(back, g)


def test_dgl_graph_fields_are_not_dropped_silently():
    pytest.importorskip("dgl")
    g = dict(SINGLE)["self_loops"].replace(graph__y=torch.zeros(1, 2))
    with pytest.raises(DataError, match="with_graph_fields=True"):
        to_dgl(g)


# ------------------------------------------------------------------- graph-case catalogue
STRUCTURAL = {
    "self_loop",
    "multi_edge",
    "isolated",
    "zero_in_degree",
    "no_edges",
    "symmetric",
    "directed",
    "batch",
    "single_node",
    "empty",
}


@pytest.mark.parametrize("name, g", ALL)
def test_graph_case_tags_match_structure(name, g):
    assert structural_tags(g) == CASE_TAGS[name] & STRUCTURAL
    assert g["node.h"].shape == (g.num_nodes, 8) and g["edge.e"].shape == (g.num_edges, 3)
    assert g["node.h"].dtype == torch.float64


def test_graph_cases_are_deterministic_and_filterable():
    a, b = graph_cases(seed=3), graph_cases(seed=3)
    for (na, ga), (nb, gb) in zip(a, b):
        assert na == nb
        assert_same_graph(ga, gb)
    assert not torch.equal(dict(graph_cases(seed=4))["self_loops"]["node.h"], dict(a)["self_loops"]["node.h"])
    names = [n for n, _ in a]
    assert {
        "isolated_nodes",
        "self_loops",
        "multi_edges",
        "no_edges",
        "single_node",
        "bipartite",
        "random_mixed",
        "batch",
    } <= set(names) and "empty" not in names
    assert all("self_loop" in CASE_TAGS[n] for n, _ in graph_cases("self_loop"))
    assert "batch" in dict(graph_cases(["self_loop", "multi_edge"]))
    assert all("zero_in_degree" not in CASE_TAGS[n] for n, _ in graph_cases(exclude="zero_in_degree"))
    g32 = dict(graph_cases(feat_dim=4, edge_dim=2, dtype=torch.float32, with_pos=True))["batch"]
    assert g32["node.h"].shape[1] == 4 and g32["edge.e"].dtype == torch.float32 and "node.pos" in g32
    with pytest.raises(DataError, match="unknown graph case tag `loops`"):
        graph_cases("loops")


@pytest.mark.parametrize("self_loops", [True, False])
@pytest.mark.parametrize("multi_edges", [True, False])
@pytest.mark.parametrize("isolated", [True, False])
def test_random_graph_flags(self_loops, multi_edges, isolated):
    g = random_graph(17, 40, 5, 2, seed=7, self_loops=self_loops, multi_edges=multi_edges, isolated=isolated)
    tags = structural_tags(g)
    assert g.num_edges == 40 and g["node.h"].shape == (17, 5) and g["edge.e"].shape == (40, 2)
    assert ("self_loop" in tags) == self_loops
    assert ("multi_edge" in tags) == multi_edges
    assert ("isolated" in tags) == isolated
    assert_same_graph(
        g,
        random_graph(17, 40, 5, 2, seed=7, self_loops=self_loops, multi_edges=multi_edges, isolated=isolated),
    )


def test_random_graph_impossible_requests():
    with pytest.raises(ValueError, match="at least 5 edges"):
        random_graph(10, 3, isolated=False)
    with pytest.raises(ValueError, match="at most 6 distinct"):
        random_graph(3, 7, self_loops=False, multi_edges=False, isolated=False)
    assert random_graph(4, 12, self_loops=False, multi_edges=False, isolated=False).num_edges == 12


@pytest.mark.parametrize("name, g", ALL)
def test_permute_graph(name, g):
    perm = random_node_permutation(g, seed=5)
    pg, node_perm, edge_perm = permute_graph(g, perm)
    assert torch.equal(pg["node.h"], g["node.h"][node_perm])
    assert torch.equal(pg["edge.e"], g["edge.e"][edge_perm])
    # the relabelled edges are the old ones: new (s, d) maps back to old (perm[s], perm[d])
    assert torch.equal(node_perm[pg.edge_index], g.edge_index[:, edge_perm])
    assert torch.equal(pg.batch, g.batch)
    assert bool((pg.dst[1:] >= pg.dst[:-1]).all())

    # a sum over in-neighbours is equivariant: compute it on both graphs and line them up
    def agg(x):
        return torch.zeros_like(x["node.h"]).index_add_(0, x.dst, x["node.h"][x.src] * x["edge.e"][:, :1])

    # float64 sums of ≤ 10 terms |h·e| ≤ 10 in another order: ≤ 10·eps·100 ≈ 2e-13 (measured 9e-16)
    torch.testing.assert_close(agg(pg), agg(g)[node_perm], rtol=0, atol=1e-12)


def test_permute_graph_rejects_bad_permutations():
    g = dict(ALL)["batch"]
    with pytest.raises(DataError, match="permutation of 0.."):
        permute_graph(g, torch.zeros(g.num_nodes, dtype=torch.long))
    with pytest.raises(DataError, match="between graphs of the batch"):
        permute_graph(g, torch.arange(g.num_nodes).flip(0))
