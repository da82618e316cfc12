"""Graph <-> dgl.DGLGraph: features, edge order, self-loops, multi-edges, isolated nodes, batches
(``dgl.batch`` <-> ``collate``), and the DGL graphs graphdl refuses (heterographs, blocks).

Every comparison is exact (``torch.equal``): conversion copies or shares tensors, it computes nothing.
"""

from __future__ import annotations

import pytest
import torch

from graphdl.data.convert import from_dgl, to_dgl
from graphdl.data.graph import Graph, collate
from graphdl.errors import DataError
from graphdl.interop.dgl import PIP, dgl_graph, dgl_installed, load_dgl
from graphdl.testing.graph_cases import graph_cases, random_graph

if not dgl_installed():  # the test extra installs it
    pytest.skip(f"dgl is not installed: {PIP}", allow_module_level=True)
dgl = load_dgl()  # installed, it must import: a failure is a test error, not a skip

CASES = graph_cases(include_empty=True)
IDS = [n for n, _ in CASES]


def _same(a: Graph, b: Graph) -> None:
    assert (a.num_nodes, a.num_graphs) == (b.num_nodes, b.num_graphs)
    assert torch.equal(a.edge_index, b.edge_index)
    assert torch.equal(a.batch, b.batch)
    assert sorted(a.fields) == sorted(b.fields)
    for k in a.fields:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name, g", CASES, ids=IDS)
def test_graph_to_dgl_keeps_edge_ids_features_and_isolated_nodes(name, g):
    dg = to_dgl(g)
    src, dst = dg.edges(order="eid")
    assert torch.equal(torch.stack([src, dst]), g.edge_index)  # edge k is edge k: loops and parallels kept
    assert dg.num_nodes() == g.num_nodes  # isolated nodes (none of them on an edge) kept
    assert torch.equal(dg.ndata["h"], g["node.h"]) and torch.equal(dg.edata["e"], g["edge.e"])
    assert torch.equal(dg.in_degrees(), g.in_degree()) and torch.equal(dg.out_degrees(), g.out_degree())
    _same(from_dgl(dg), g)


def test_trailing_isolated_nodes_survive_both_ways():
    g = Graph([[0, 1], [1, 0]], 5, {"node.h": torch.arange(5.0).reshape(5, 1)})
    dg = to_dgl(g)
    assert dg.num_nodes() == 5 and torch.equal(dg.in_degrees(), torch.tensor([1, 1, 0, 0, 0]))
    _same(from_dgl(dg), g)


def test_dgl_order_is_sorted_by_destination_and_eid_field_maps_back():
    # DGL ids in insertion order: not destination-sorted; a self-loop and a parallel pair included
    src = torch.tensor([2, 0, 3, 1, 0, 3, 2])
    dst = torch.tensor([0, 1, 3, 0, 1, 2, 2])
    dg = dgl.graph((src, dst), num_nodes=5, idtype=torch.int32)
    dg.edata["w"] = torch.arange(7.0).reshape(7, 1) * 10
    back = from_dgl(dg, eid_field="edge.eid")
    key = back.dst * 5 + back.src
    assert bool((key[1:] >= key[:-1]).all())  # (dst, src) order
    eid = back["edge.eid"]
    assert torch.equal(back.src, src[eid]) and torch.equal(back.dst, dst[eid])
    assert torch.equal(back["edge.w"], dg.edata["w"][eid])  # features moved with their edges
    # parallel edges 0 -> 1 keep their relative (DGL id) order: the sort is stable
    par = eid[(back.src == 0) & (back.dst == 1)]
    assert par.tolist() == [1, 4]
    with pytest.raises(DataError, match="already an edge field"):
        from_dgl(dg, eid_field="w")


def _pieces():
    a = random_graph(7, 15, 4, 2, seed=1)
    b = Graph(torch.zeros(2, 0, dtype=torch.long), 3, {"node.h": torch.randn(3, 4, dtype=torch.float64),
                                                        "edge.e": torch.zeros(0, 2, dtype=torch.float64)})
    c = random_graph(5, 9, 4, 2, seed=2)
    return [a, b, c]


def test_collate_matches_dgl_batch_both_ways():
    parts = _pieces()
    ours = to_dgl(collate(parts))
    theirs = dgl.batch([to_dgl(p) for p in parts])
    assert torch.equal(torch.stack(ours.edges()), torch.stack(theirs.edges()))
    assert torch.equal(ours.batch_num_nodes(), theirs.batch_num_nodes())
    assert torch.equal(ours.batch_num_edges(), theirs.batch_num_edges())
    assert torch.equal(ours.ndata["h"], theirs.ndata["h"]) and torch.equal(ours.edata["e"], theirs.edata["e"])
    for mine, orig in zip(dgl.unbatch(ours), parts):  # a batch we make splits as DGL's does
        _same(from_dgl(mine), orig)
    back = from_dgl(theirs)
    _same(back, collate(parts))
    assert torch.equal(back.ptr, collate(parts).ptr)


def test_graph_fields_travel_beside_the_dgl_graph():
    parts = [p.replace(graph__y=torch.tensor([[float(i)]])) for i, p in enumerate(_pieces())]
    batch = collate(parts)
    dg, gf = to_dgl(batch, with_graph_fields=True)
    assert torch.equal(gf["graph.y"], torch.tensor([[0.0], [1.0], [2.0]]))
    _same(from_dgl(dg, graph_fields=gf), batch)
    with pytest.raises(DataError, match="with_graph_fields=True"):
        to_dgl(batch)


def test_heterographs_and_blocks_are_refused_with_the_conversion_to_use():
    hg = dgl.heterograph({("user", "follows", "user"): ([0, 1], [1, 2]),
                          ("user", "plays", "game"): ([0, 2], [0, 1])})
    with pytest.raises(DataError, match=r"homogeneous DGLGraph, found node types \['game', 'user'\].*"
                                        r"dgl.to_homogeneous"):
        from_dgl(hg)
    block = dgl.to_block(dgl.graph(([0, 1, 2], [1, 2, 0])), dst_nodes=torch.tensor([0, 1]))
    with pytest.raises(DataError, match="dgl.block_to_graph"):
        from_dgl(block)


def test_cached_structure_graph_is_made_once_per_batch():
    g = random_graph(20, 60, 4, 2, seed=3)
    dg = dgl_graph(g)
    assert dgl_graph(g) is dg
    assert torch.equal(torch.stack(dg.edges(order="eid")).long(), g.edge_index)
    assert dg.num_nodes() == g.num_nodes and not dg.ndata and not dg.edata  # structure only
    assert set(dg.formats()["created"]) == {"coo", "csr", "csc"}  # no layer pays for a format later
