"""Readouts against PyG (global pools, AttentionalAggregation, Set2Set with copied weights,
float64, 1e-12); invariance to node order, equivariance to graph order; batch consistency."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.nn import (
    AttentionalAggregation,
    Set2Set,
    global_add_pool,
    global_max_pool,
    global_mean_pool,
)

from graphdl.data.graph import Graph, collate
from graphdl.errors import InferenceError
from graphdl.nn.readout import EdgeReadout, Readout
from graphdl.testing.graph_cases import graph_cases, permute_graph, random_graph, random_node_permutation

DT = torch.float64
# float64 parity: values and gradients |·| ≤ 6 through ≤ 4 matmuls / softmaxes and sums of ≤ 60 nodes
# carry ≤ ~750·eps·6 ≈ 1e-12 (measured ≤ 9e-16); a float32 step (≈ 1e-7) fails it
TOL = 1e-12
D = 5
FIELDS = {"node.h": D, "edge.e": 3}


def _batch(seed: int = 0) -> Graph:
    """Graphs of 7, 1, 4, 0 edges... and a graph whose nodes have no edges at all."""
    parts = [random_graph(n, e, D, 3, seed=seed + i) for i, (n, e) in enumerate([(7, 12), (1, 0), (4, 5), (3, 0),
                                                                                (9, 20)])]
    return collate(parts)


def _randomize(m: nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)


def _read(block, g: Graph) -> torch.Tensor:
    return block(g, dict(g.fields))[block.p.out_key]


_POOLS = {"sum": global_add_pool, "mean": global_mean_pool, "max": global_max_pool}


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_simple_pools_match_pyg(reduce):
    g = _batch()
    blk = Readout.build({"reduce": reduce}, FIELDS)
    out = _read(blk, g)
    want = _POOLS[reduce](g["node.h"], g.batch, size=g.num_graphs)
    assert blk.p.out_key == "graph.h" and out.shape == (g.num_graphs, D)
    assert (out - want).abs().max().item() <= TOL


def _set2set_pair(steps=3):
    blk = Readout.build({"reduce": "set2set", "steps": steps, "output": "graph.r"}, FIELDS).to(DT)
    _randomize(blk)
    ref = Set2Set(D, processing_steps=steps).to(DT)
    ref.load_state_dict(blk.state_dict())  # lstm.weight_ih_l0, ... in both
    return blk, ref


@pytest.mark.parametrize("steps", [1, 3])
def test_set2set_matches_pyg(steps):
    g = _batch()
    blk, ref = _set2set_pair(steps)
    out = _read(blk, g)
    want = ref(g["node.h"], g.batch, dim_size=g.num_graphs)
    assert out.shape == (g.num_graphs, 2 * D)
    assert (out - want).abs().max().item() <= TOL


def test_set2set_gradients_match_pyg():
    g = _batch()
    blk, ref = _set2set_pair()
    x1 = g["node.h"].clone().requires_grad_()
    x2 = g["node.h"].clone().requires_grad_()
    out = blk(g, {"node.h": x1})["graph.r"]
    want = ref(x2, g.batch, dim_size=g.num_graphs)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (want * w).sum().backward()
    assert (x1.grad - x2.grad).abs().max().item() <= TOL
    for (k, p), q in zip(blk.named_parameters(), ref.parameters()):
        assert (p.grad - q.grad).abs().max().item() <= TOL, k


@pytest.mark.parametrize("gate_hidden, value_dim", [([], None), ([8], None), ([8], 6)])
def test_attention_readout_matches_pyg(gate_hidden, value_dim):
    g = _batch()
    params = {"reduce": "attention", "gate_hidden": gate_hidden}
    if value_dim:
        params["value_dim"] = value_dim
    blk = Readout.build(params, FIELDS).to(DT)
    _randomize(blk)
    gate = nn.Sequential(*([nn.Linear(D, 8), nn.ReLU(), nn.Linear(8, 1)] if gate_hidden else [nn.Linear(D, 1)]))
    val = nn.Sequential(nn.Linear(D, value_dim)) if value_dim else None
    ref = AttentionalAggregation(gate, val).to(DT)
    ref.load_state_dict(blk.state_dict())  # gate_nn.*, nn.*
    out = _read(blk, g)
    want = ref(g["node.h"], g.batch, dim_size=g.num_graphs)
    assert out.shape == (g.num_graphs, value_dim or D)
    assert (out - want).abs().max().item() <= TOL


_ALL = [{"reduce": "sum"}, {"reduce": "mean"}, {"reduce": "max"}, {"reduce": "attention", "gate_hidden": [8]},
        {"reduce": "attention", "value_dim": 4, "value_hidden": [6]}, {"reduce": "set2set", "steps": 2}]
_IDS = [p["reduce"] + ("_value" if "value_dim" in p else "") for p in _ALL]


@pytest.mark.parametrize("params", _ALL, ids=_IDS)
def test_invariant_to_node_order_within_graphs(params):
    g = _batch()
    blk = Readout.build(params, FIELDS).to(DT)
    pg = permute_graph(g, random_node_permutation(g, 7))
    assert (_read(blk, pg.graph) - _read(blk, g)).abs().max().item() <= 1e-12


@pytest.mark.parametrize("params", _ALL, ids=_IDS)
def test_batched_equals_one_by_one_and_graph_order_permutes_rows(params):
    graphs = [random_graph(n, e, D, 3, seed=10 + i) for i, (n, e) in enumerate([(6, 9), (2, 1), (5, 0), (8, 15)])]
    blk = Readout.build(params, FIELDS).to(DT)
    batched = _read(blk, collate(graphs))
    single = torch.cat([_read(blk, g) for g in graphs])
    assert (batched - single).abs().max().item() <= 1e-12
    order = [2, 0, 3, 1]
    shuffled = _read(blk, collate([graphs[i] for i in order]))
    assert (shuffled - batched[order]).abs().max().item() <= 1e-12


@pytest.mark.parametrize("params", _ALL, ids=_IDS)
def test_graph_without_nodes_in_batch_gives_zeros_or_finite(params):
    # a batch whose graph 1 has no nodes: sums/means/max pool to 0; no NaN anywhere
    g1 = random_graph(4, 5, D, 3, seed=1)
    g = Graph(g1.edge_index, 4, {"node.h": g1["node.h"]}, batch=torch.tensor([0, 0, 2, 2]), num_graphs=3)
    blk = Readout.build(params, FIELDS).to(DT)
    x = g["node.h"].clone().requires_grad_()
    out = blk(g, {"node.h": x})[blk.p.out_key]
    assert torch.isfinite(out).all()
    if params["reduce"] in ("sum", "mean", "max", "attention"):
        assert (out[1] == 0).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "attention", "set2set"])
def test_edge_readout_pools_edges_per_graph(reduce):
    g = collate([c for _, c in graph_cases("batch", feat_dim=D, edge_dim=3)])
    blk = EdgeReadout.build({"reduce": reduce}, FIELDS).to(DT)
    assert blk.p.out_key == "graph.e"
    out = _read(blk, g)
    # reference: the node readout of the same block applied to a graph whose "nodes" are the edges
    eb = g.edge_batch
    as_nodes = Graph(None, g.num_edges, {"node.e": g["edge.e"]}, batch=eb, num_graphs=g.num_graphs)
    node_blk = Readout.build({"reduce": reduce, "input": "node.e"}, {"node.e": 3}).to(DT)
    node_blk.load_state_dict(blk.state_dict())
    want = _read(node_blk, as_nodes)
    assert (out - want).abs().max().item() <= 1e-12
    if reduce == "sum":
        assert (out - global_add_pool(g["edge.e"], eb, size=g.num_graphs)).abs().max().item() <= TOL


def test_readout_errors():
    with pytest.raises(InferenceError, match="pools a node field; `edge.e` is not one"):
        Readout.build({"input": "edge.e"}, FIELDS)
    with pytest.raises(InferenceError, match="writes a graph field"):
        Readout.build({"output": "node.z"}, FIELDS)
    with pytest.raises(InferenceError, match="only apply to `reduce: attention`"):
        Readout.build({"reduce": "sum", "gate_hidden": [4]}, FIELDS)
    with pytest.raises(InferenceError, match="needs `value_dim`"):
        Readout.build({"reduce": "attention", "value_hidden": [4]}, FIELDS)
