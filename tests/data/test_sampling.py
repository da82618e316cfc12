"""Neighbour sampling (graphdl.data.sampling): uniform draws without replacement, subgraphs that the
compiled model runs on unchanged, exact for ``fanouts: all``, bounded by the batch, deterministic."""

from __future__ import annotations

import math

import pytest
import torch

from graphdl.data.graph import Graph
from graphdl.data.loader import GraphLoader
from graphdl.data.sampling import ORIGIN, NeighborLoader, generator_for, sample_in_edges, sample_subgraph
from graphdl.train.distributed import RankLoader, shard


def _random_graph(n=300, e=3000, seed=0, d=8) -> Graph:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=g)
    dst = torch.randint(0, n, (e,), generator=g)
    # a hub with many in-edges, and nodes without any
    src = torch.cat([src, torch.arange(n)])
    dst = torch.cat([dst, torch.zeros(n, dtype=torch.long)])
    keep = (dst < n - 20) & (src != dst)
    code = src * n + dst  # no multi-edges: an edge is named by its (src, dst) pair in the tests
    first = torch.full((n * n,), code.numel()).scatter_reduce_(0, code, torch.arange(code.numel()), "amin")
    keep &= first[code] == torch.arange(code.numel())
    fields = {"node.h": torch.randn(n, d, generator=g, dtype=torch.float64),
              "node.mask": torch.rand(n, 1, generator=g) < 0.5,
              "edge.w": torch.rand(int(keep.sum()), 1, generator=g, dtype=torch.float64)}
    return Graph(torch.stack([src[keep], dst[keep]]), n, fields)


def test_draws_are_without_replacement_within_the_node_and_capped():
    g = _random_graph()
    rowptr = g.csr().rowptr
    nodes = torch.arange(g.num_nodes)
    deg = g.in_degree()
    e, row = sample_in_edges(rowptr, nodes, 5, generator_for(0, 1))
    assert torch.equal(g.dst[e], nodes[row])  # every drawn edge ends at its node
    counts = torch.bincount(row, minlength=g.num_nodes)
    assert torch.equal(counts, deg.clamp(max=5))
    pairs = row * g.num_edges + e
    assert pairs.unique().numel() == pairs.numel()  # no edge twice for one node
    # -1: every in-edge
    e_all, row_all = sample_in_edges(rowptr, nodes, -1, generator_for(0, 1))
    assert torch.equal(torch.sort(e_all).values, torch.arange(g.num_edges))
    # deterministic for a seed, another seed draws otherwise
    assert torch.equal(sample_in_edges(rowptr, nodes, 5, generator_for(0, 1))[0], e)
    assert not torch.equal(sample_in_edges(rowptr, nodes, 5, generator_for(0, 2))[0], e)


def test_every_subset_is_equally_likely():
    # one node with 6 in-edges drawn 2 at a time, 30,000 times in one vectorised call: each of the
    # C(6, 2) = 15 pairs has probability 1/15. A pair's count is binomial(n, 1/15); 5 standard
    # deviations (p < 1e-6 per pair under uniformity) bounds every count.
    n, d, k = 30_000, 6, 2
    rowptr = torch.tensor([0, d])
    e, row = sample_in_edges(rowptr, torch.zeros(n, dtype=torch.long), k, generator_for(3))
    pairs = torch.sort(e.reshape(n, k), 1).values
    code = pairs[:, 0] * d + pairs[:, 1]
    counts = torch.bincount(code, minlength=d * d)[code.unique()]
    p = 1 / math.comb(d, k)
    assert counts.numel() == math.comb(d, k)
    assert (counts - n * p).abs().max() <= 5 * math.sqrt(n * p * (1 - p))


def test_a_hub_costs_its_fanout_not_its_degree():
    # 2,000,000 in-edges of one node: the draw touches an (m, k) table only
    deg = 2_000_000
    rowptr = torch.tensor([0, deg])
    e, _ = sample_in_edges(rowptr, torch.zeros(3, dtype=torch.long), 10, generator_for(0))
    assert e.numel() == 30 and int(e.max()) < deg
    assert all(v.unique().numel() == 10 for v in e.reshape(3, 10))


def test_the_subgraph_holds_seeds_first_with_their_sampled_hops():
    g = _random_graph()
    seeds = torch.tensor([5, 17, 0, 42])  # node 0 is the hub
    sub = sample_subgraph(g, seeds, [4, 3], generator_for(1), mask_key="node.mask")
    origin = sub[ORIGIN]
    assert torch.equal(origin[:4], seeds) and origin.unique().numel() == sub.num_nodes
    assert sub["node.mask"].reshape(-1).nonzero().reshape(-1).tolist() == [0, 1, 2, 3]  # the seeds, only
    assert torch.equal(sub["node.h"], g["node.h"][origin])
    # every edge exists in the full graph, with its field, and no node has more than one fanout of in-edges
    full = set(zip(g.src.tolist(), g.dst.tolist()))
    s, d = origin[sub.src], origin[sub.dst]
    assert all((a, b) in full for a, b in zip(s.tolist(), d.tolist()))
    key = {(a, b): w for a, b, w in zip(g.src.tolist(), g.dst.tolist(), g["edge.w"].reshape(-1).tolist())}
    assert sub["edge.w"].reshape(-1).tolist() == [key[(a, b)] for a, b in zip(s.tolist(), d.tolist())]
    assert int(sub.in_degree().max()) <= 4
    # bounded by the batch: at most B (1 + k1 + k1 k2) nodes and B (k1 + k1 k2) edges
    assert sub.num_nodes <= 4 * (1 + 4 + 12) and sub.num_edges <= 4 * (4 + 12)


def _sage_model(d_in: int):
    from graphdl.compile.compiler import compile_spec

    spec = {"graphdl": 1, "inputs": {"node.h": d_in},
            "model": {"layers": [{"type": "sage", "input": "node.h", "out_dim": 16, "aggr": "mean"},
                                 {"type": "relu", "input": "node.h"},
                                 {"type": "sage", "input": "node.h", "out_dim": 5, "aggr": "mean"}],
                      "outputs": ["node.h"]}}
    return compile_spec(spec, dtype=torch.float64).eval()


def test_fanouts_all_give_the_full_graph_outputs_at_the_seeds():
    g = _random_graph()
    model = _sage_model(8)
    with torch.no_grad():
        full = model(g)["node.h"]
        seeds = torch.tensor([0, 3, 7, 100, 250, 299])  # the hub, nodes without in-edges (280..299)
        sub = sample_subgraph(g, seeds, [-1, -1], generator_for(0))
        part = model(sub)["node.h"][: seeds.numel()]
    # float64: the two passes sum the same terms in other orders; each output is a few hundred
    # products and sums of O(1) numbers, so they agree to ~1e-15·100; 1e-12 leaves a margin
    assert torch.allclose(part, full[seeds], rtol=0, atol=1e-12)
    # sampled fanouts: the outputs differ (the test above would notice an unsampled subgraph)
    with torch.no_grad():
        sampled = model(sample_subgraph(g, seeds, [2, 2], generator_for(0)))["node.h"][: seeds.numel()]
    assert (sampled - full[seeds]).abs().max() > 1e-3


def test_loader_epochs_cover_the_seeds_once_and_ranks_partition_each_batch():
    g = _random_graph()
    seeds = g["node.mask"].reshape(-1).nonzero().reshape(-1)
    loader = NeighborLoader(g, seeds, [3, 2], 16, seed=4, mask_key="node.mask")
    order = torch.cat(loader.batch_indices(0))
    assert torch.equal(torch.sort(order).values, torch.arange(seeds.numel()))
    assert not torch.equal(order, torch.cat(loader.batch_indices(1)))  # a new order every epoch
    one = [b[ORIGIN][b["node.mask"].reshape(-1)] for b in RankLoader(loader, 0, 1)]
    loader.set_epoch(0)
    direct = [b[ORIGIN][b["node.mask"].reshape(-1)] for b in loader]
    assert all(torch.equal(a, b) for a, b in zip(one, direct))  # one rank: the loader itself
    two = [list(RankLoader(loader, r, 2)) for r in range(2)]
    for b, (a0, a1) in enumerate(zip(*two)):  # two ranks: each batch's seeds, split in two
        got = torch.cat([a0[ORIGIN][a0["node.mask"].reshape(-1)], a1[ORIGIN][a1["node.mask"].reshape(-1)]])
        assert torch.equal(got, one[b])


def test_rank_loader_union_is_the_one_process_epoch_and_pads_with_weight_zero():
    graphs = [Graph(None, 1, {"graph.i": torch.tensor([[float(i)]])}) for i in range(7)]
    base = GraphLoader(graphs, 4, shuffle=True, seed=1)  # batches of 4 and 3
    loaders = [RankLoader(base, r, 3) for r in range(3)]
    per_rank = [[b["graph.i"].reshape(-1).tolist() for b in ld] for ld in loaders]
    batches = base.batch_indices(0)
    for b, idx in enumerate(batches):
        assert [x for r in range(3) for x in per_rank[r][b]] == [float(i) for i in idx]
    assert [len(shard(list(range(4)), r, 3)) for r in range(3)] == [2, 1, 1]
    assert all(not ld.padded for ld in loaders)
    # a batch with fewer graphs than ranks: the empty share runs one graph, marked padded
    lone = [RankLoader(GraphLoader(graphs[:1], 4), r, 2) for r in range(2)]
    got = [[b["graph.i"].reshape(-1).tolist() for b in ld] for ld in lone]
    assert got == [[[0.0]], [[0.0]]] and lone[0].padded == set() and lone[1].padded == {0}


@pytest.mark.parametrize("bad", [[], [0], [3, -2]])
def test_bad_fanouts_are_one_line(bad):
    from graphdl.errors import DataError

    with pytest.raises(DataError, match=r"fanouts must be a non-empty list of positive integers \(or -1"):
        NeighborLoader(_random_graph(), torch.arange(4), bad, 2)
