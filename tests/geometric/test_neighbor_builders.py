"""Graph builders (complete, radius via cell list, knn) against brute-force references."""

import pytest
import torch

from graphdl.data.graph import Graph
from graphdl.ops.neighbors import build_graph, complete_graph, knn_graph, radius_graph
from graphdl.spec.model import GraphSpec


def _batch(sizes):
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


def _brute(pos, batch, *, cutoff=None, cap=None, k=None):
    """Reference: per-destination Python loop over a full distance matrix."""
    d = torch.cdist(pos.double(), pos.double())
    pairs = []
    for i in range(pos.size(0)):
        cand = [j for j in range(pos.size(0)) if j != i and batch[j] == batch[i]
                and (cutoff is None or d[i, j] < cutoff)]
        cand.sort(key=lambda j: (float(d[i, j]), j))
        limit = k if k is not None else cap
        if limit is not None:
            cand = cand[:limit]
        pairs += [(j, i) for j in sorted(cand)]
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).t()


def test_complete_graph_matches_pairs():
    batch = _batch([1, 3, 5])
    ei = complete_graph(batch, 3)
    assert torch.equal(ei, _brute(torch.zeros(9, 3), batch))
    assert ei.size(1) == 0 + 6 + 20


@pytest.mark.parametrize("cap", [None, 3])
@pytest.mark.parametrize("cutoff", [0.3, 0.75])
def test_radius_graph_matches_brute_force(cutoff, cap):
    g = torch.Generator().manual_seed(1)
    batch = _batch([40, 1, 25, 60])
    pos = torch.rand(batch.numel(), 3, generator=g, dtype=torch.float64) * 2 - 1
    ei = radius_graph(pos, batch, cutoff, cap)
    ref = _brute(pos, batch, cutoff=cutoff, cap=cap)
    assert ref.size(1) > 50
    assert torch.equal(ei, ref)


def test_radius_graph_cap_breaks_ties_by_index():
    # node 0 at the origin, nodes 1..4 all at distance 1: cap 2 keeps sources 1 and 2
    pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]])
    ei = radius_graph(pos, None, 1.5, 2)
    assert ei[0, ei[1] == 0].tolist() == [1, 2]


@pytest.mark.parametrize("k", [1, 4, 10])
def test_knn_graph_matches_brute_force(k):
    g = torch.Generator().manual_seed(2)
    batch = _batch([7, 3, 12])
    pos = torch.randn(batch.numel(), 3, generator=g, dtype=torch.float64)
    assert torch.equal(knn_graph(pos, batch, k), _brute(pos, batch, k=k))


def test_build_graph_carries_edge_fields():
    # given graph: 0->1 with e=5; complete graph over 3 nodes keeps 5 on 0->1, zeros elsewhere
    g = Graph([[0], [1]], 3, {"node.pos": torch.randn(3, 3), "edge.e": torch.tensor([[5.0]])})
    out = build_graph(g, GraphSpec(kind="complete"))
    assert out.num_edges == 6
    e = out.fields["edge.e"][:, 0]
    hit = (out.edge_index[0] == 0) & (out.edge_index[1] == 1)
    assert e[hit].tolist() == [5.0] and e[~hit].abs().sum() == 0
    r = build_graph(g, GraphSpec(kind="radius", cutoff=100.0))
    assert torch.equal(r.edge_index, out.edge_index)


def test_radius_graph_tiny_cutoff_in_huge_box():
    # 1e9 cells per axis at side = cutoff would overflow int64 keys; the builder widens cells
    pos = torch.tensor([[0.0, 0, 0], [1e-3, 0, 0], [1e6, 1e6, 1e6], [1e6, 1e6, 1e6 + 5e-4]], dtype=torch.float64)
    assert radius_graph(pos, None, 1.5e-3).tolist() == [[1, 0, 3, 2], [0, 1, 2, 3]]


@pytest.mark.parametrize("cap", [None, 3])
def test_radius_graph_kdtree_and_cell_list_agree(cap):
    """The two radius-graph methods give the same edges (the k-d tree only proposes pairs; the
    same float test keeps them), for a batch of graphs at GNS density, ties and a cap included."""
    g = torch.Generator().manual_seed(5)
    pos = torch.cat([torch.rand(300, 2, generator=g) * 0.15, torch.rand(200, 2, generator=g) * 0.15 + 5.0,
                     torch.rand(50, 3, generator=g)[:, :2] * 0.1])
    pos[10] = pos[11]  # coincident
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([300, 200, 50]))
    a = radius_graph(pos, batch, 0.015, cap, method="cell_list")
    b = radius_graph(pos, batch, 0.015, cap, method="kdtree")
    assert a.size(1) > 1000 and torch.equal(a, b)
    assert torch.equal(radius_graph(pos, batch, 0.015, cap), b)  # auto on CPU: the k-d tree
