"""Graphormer's structural encodings: distances and degrees come from the dataset's own bonds
while the model attends over the complete graph."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from graphdl.compile import compile_spec
from graphdl.data.featurize import smiles_to_graph
from graphdl.data.graph import Graph, collate
from graphdl.errors import SpecError
from graphdl.nn.graphormer import edge_distances, pair_distances


def _undirected(nxg: nx.Graph) -> Graph:
    e = [(a, b) for a, b in nxg.edges()] + [(b, a) for a, b in nxg.edges()]
    ei = torch.tensor(e, dtype=torch.long).t() if e else None
    return Graph(ei, nxg.number_of_nodes(), {"node.h": torch.ones(nxg.number_of_nodes(), 1)})


GRAPHS = [nx.path_graph(6), nx.cycle_graph(5), nx.disjoint_union(nx.path_graph(3), nx.star_graph(3)),
          nx.empty_graph(1), nx.gnp_random_graph(9, 0.25, seed=3)]


@pytest.mark.parametrize("max_distance", [1, 3, 8])
def test_pair_distances_match_networkx(max_distance):
    batch = collate([_undirected(g) for g in GRAPHS])
    dist = pair_distances(batch, max_distance)
    for b, g in enumerate(GRAPHS):
        hops = dict(nx.all_pairs_shortest_path_length(g))
        for i in g.nodes:
            for j in g.nodes:
                want = min(hops[j][i], max_distance) if i in hops[j] else max_distance + 1
                assert int(dist[b, i, j]) == want, (b, i, j)


def test_directed_distances_follow_edge_direction():
    g = Graph(torch.tensor([[0, 1], [1, 2]]), 3, {})  # 0 -> 1 -> 2
    d = pair_distances(g, 5)[0]
    assert d[2, 0] == 2 and d[0, 2] == 6  # 0 reaches 2 in two hops; 2 never reaches 0


def _spec(**layer):
    return {"graphdl": 1, "inputs": {"node.h": 4, "edge.e": 2}, "graph": {"kind": "complete", "self_loops": True},
            "model": {"layers": [
                {"type": "degree_encoding", "add_to": "node.h", "max_degree": 3},
                {"type": "shortest_path_bias", "output": "edge.spd", "heads": 2, "max_distance": 4},
                {"type": "linear", "input": "edge.e", "output": "edge.bond", "out_dim": 2},
                {"type": "transformer_encoder_layer", "heads": 2, "ff_dim": 8, "attn_bias": ["edge.spd", "edge.bond"],
                 **layer},
                {"type": "readout", "input": "node.h", "output": "graph.h", "reduce": "sum"}],
                "outputs": ["node.h", "graph.h"]}}


def _molecules():
    gs = [smiles_to_graph(s) for s in ("CCO", "c1ccccc1O", "[Na+].[Cl-]", "C")]
    return collate([Graph(g.edge_index, g.num_nodes, {"node.h": g["node.h"][:, :4].double(),
                                                     "edge.e": g["edge.e"][:, :2].double()}) for g in gs])


def test_encodings_read_the_bonds_not_the_complete_graph():
    model = compile_spec(_spec(), dtype=torch.float64).eval()
    batch = _molecules()
    prepared = model.prepare(batch)
    assert prepared.num_edges == sum(n * n for n in (3, 7, 2, 1))  # complete + loops
    spd = edge_distances(prepared, 4)
    own = torch.tensor([1 if s != d else 0 for s, d in prepared.edge_index.t().tolist()])
    ethanol = prepared.batch[prepared.dst] == 0
    assert spd[ethanol].tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0]  # C-C-O: distances, not all ones
    salt = prepared.batch[prepared.dst] == 2
    assert spd[salt].tolist() == [0, 5, 5, 0]  # Na+ and Cl- are not bonded: "unreachable" bucket
    assert not torch.equal(spd, own)
    deg_block = model.blocks[0]
    x = torch.zeros(batch.num_nodes, 4, dtype=torch.float64)
    z = deg_block(prepared, {"node.h": x})["node.h"]
    assert torch.equal(z, deg_block.weight[batch.in_degree().clamp(max=3)])  # molecule degrees (phenol C: 3)
    with torch.no_grad():
        out = model(batch)
    assert torch.isfinite(out["node.h"]).all()


def test_graphormer_model_is_permutation_equivariant_and_dense_equals_sparse():
    dense = compile_spec(_spec(), dtype=torch.float64).eval()
    sparse = compile_spec(_spec(lowering="sparse"), dtype=torch.float64).eval()
    sparse.load_state_dict(dense.state_dict())
    batch = _molecules()
    with torch.no_grad():
        a, b = dense(batch), sparse(batch)
    assert (a["node.h"] - b["node.h"]).abs().max() <= 1e-12  # same sums, another order: round-off
    perm = torch.cat([torch.randperm(n, generator=torch.Generator().manual_seed(n)) + o
                      for n, o in zip((3, 7, 2, 1), (0, 3, 10, 12))])
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    permuted = Graph(inv[batch.edge_index], batch.num_nodes, {"node.h": batch["node.h"][perm],
                                                             "edge.e": batch["edge.e"]},
                     batch=batch.batch, num_graphs=batch.num_graphs)
    with torch.no_grad():
        c = dense(permuted)
    assert (a["node.h"][perm] - c["node.h"]).abs().max() <= 1e-12
    assert (a["graph.h"] - c["graph.h"]).abs().max() <= 1e-12


def test_shortest_path_bias_needs_the_complete_graph():
    spec = _spec()
    spec["graph"] = {"kind": "given"}
    with pytest.raises(SpecError, match="shortest_path_bias scores every pair of nodes, so it needs `graph: "
                                        "\\{kind: complete, self_loops: true\\}` \\(found `given`\\)"):
        compile_spec(spec)
