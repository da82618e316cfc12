"""GNS building blocks against hand-written references: field types, embedding, particle features,
MLP with an output LayerNorm, concat broadcast, the interaction-network processor, the whole model."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

from graphdl.compile import compile_spec
from graphdl.compile.compiler import GraphModel
from graphdl.data.graph import Graph
from graphdl.errors import DataError, InferenceError, SpecError
from graphdl.nn.basic import Concat, MLPBlock
from graphdl.nn.embedding import Embedding
from graphdl.nn.generic import GraphNetwork
from graphdl.nn.particles import EdgeDisplacement, HistoryVelocities, Standardize, WallDistances
from graphdl.types import Categorical, FieldTable, Trajectory, parse_type

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# float64 round-off of a few dozen stacked layers, outputs O(1): eps64 · 1e3
TOL64 = 2.2e-16 * 1e3


def test_types_parse_print_and_refuse():
    assert parse_type("categorical(9)") == Categorical(9)
    assert parse_type(" trajectory( 6 , 2 ) ") == Trajectory(6, 2)
    assert str(Categorical(9)) == "categorical(9)" and parse_type(str(Trajectory(6, 3))) == Trajectory(6, 3)
    assert Trajectory(6, 2).shape() == (6, 2) and Categorical(4).shape() == ()
    with pytest.raises(ValueError, match=r"`categorical\(0\)` needs 1 positive integer"):
        parse_type("categorical(0)")
    with pytest.raises(ValueError, match="needs 2 positive integers"):
        parse_type("trajectory(6)")
    t = FieldTable({"node.t": Categorical(9), "node.h": Trajectory(6, 2)})
    with pytest.raises(InferenceError, match=r"holds class indices \(categorical\(9\)\); map it to channels first "
                                             r"with `\{type: embedding"):
        t.need_scalar("node.t", "mlp")
    with pytest.raises(InferenceError, match="is a sequence of 6 frames"):
        t.need_scalar("node.h", "mlp")


def test_embedding_is_a_table_lookup_and_refuses_real_fields():
    blk = Embedding.build({"input": "node.t", "output": "node.e", "out_dim": 4}, {"node.t": "categorical(5)"})
    idx = torch.tensor([0, 4, 2, 2])
    out = blk(None, {"node.t": idx})["node.e"]
    assert torch.equal(out, blk.table.weight[idx])
    with pytest.raises(InferenceError, match=r"declare the input as `node.t: categorical\(K\)`"):
        Embedding.build({"input": "node.t", "out_dim": 4}, {"node.t": 3})


def _categorical_model() -> GraphModel:
    return compile_spec({"graphdl": 1, "inputs": {"node.t": "categorical(3)"},
                         "model": {"layers": [{"type": "embedding", "input": "node.t", "output": "node.h",
                                               "out_dim": 2}]}})


def test_model_input_check_for_categorical_fields():
    m = _categorical_model()
    assert m(Graph(None, 3, {"node.t": torch.tensor([0, 1, 2])}))["node.h"].shape == (3, 2)
    with pytest.raises(DataError, match=r"holds float32 values, but `node.t: categorical\(3\)` is a class index"):
        m(Graph(None, 2, {"node.t": torch.tensor([0.0, 1.0])}))
    with pytest.raises(DataError, match=r"holds class 3, outside 0..2 of `node.t: categorical\(3\)`; declare "
                                        r"`categorical\(4\)`"):
        m(Graph(None, 2, {"node.t": torch.tensor([0, 3])}))
    with pytest.raises(SpecError, match=r"needs 1 positive integer"):
        compile_spec({"graphdl": 1, "inputs": {"node.t": "categorical(x)"},
                      "model": {"layers": [{"type": "embedding", "input": "node.t", "out_dim": 2}]}})


def test_history_velocities_by_hand():
    blk = HistoryVelocities.build({"input": "node.hist", "output": "node.v"}, {"node.hist": "trajectory(4, 2)"}).double()
    assert blk.statistics_needed() == {"velocity": 2}
    mean, std = torch.tensor([0.1, -0.2], dtype=torch.float64), torch.tensor([2.0, 0.5], dtype=torch.float64)
    blk.set_statistics("velocity", mean, std)
    x = torch.randn(5, 4, 2, dtype=torch.float64)
    out = blk(None, {"node.hist": x})["node.v"]
    want = torch.stack([(x[:, k + 1] - x[:, k] - mean) / std for k in range(3)], 1).reshape(5, 6)
    assert out.shape == (5, 6)
    assert torch.allclose(out, want, rtol=0, atol=TOL64)
    with pytest.raises(InferenceError, match=r"must be a `trajectory\(frames, D\)` field, found 8"):
        HistoryVelocities.build({"input": "node.hist"}, {"node.hist": 8})


def test_wall_distances_by_hand_with_clipping():
    bounds = [[0.1, 0.9], [0.0, 2.0]]
    blk = WallDistances.build({"input": "node.p", "output": "node.w", "bounds": bounds, "radius": 0.05},
                              {"node.p": 2}).double()
    x = torch.tensor([[0.12, 1.0], [0.5, 1.99], [0.97, -0.01]], dtype=torch.float64)
    out = blk(None, {"node.p": x})["node.w"]
    lo, hi = torch.tensor([0.1, 0.0], dtype=torch.float64), torch.tensor([0.9, 2.0], dtype=torch.float64)
    want = torch.cat([x - lo, hi - x], -1) / 0.05
    assert torch.allclose(out, want.clamp(-1, 1), rtol=0, atol=TOL64)
    assert out[0, 0] == pytest.approx(0.4) and out[2, 1] == pytest.approx(-0.2)  # inside R of a wall; outside
    assert out[2, 0] == 1.0 and out[2, 2] == -1.0  # far from the lower wall: 1; past the upper by > R: −1
    with pytest.raises(InferenceError, match="has 2 .* pair.* but `node.p` is 3-dimensional"):
        WallDistances.build({"input": "node.p", "bounds": bounds, "radius": 0.05}, {"node.p": 3})
    with pytest.raises(Exception, match=r"needs lower < upper"):
        WallDistances.build({"input": "node.p", "bounds": [[1, 0], [0, 1]], "radius": 0.05}, {"node.p": 2})


def test_edge_displacement_sender_minus_receiver():
    blk = EdgeDisplacement.build({"input": "node.p", "output": "edge.d", "scale": 0.5}, {"node.p": 2}).double()
    x = torch.tensor([[0.0, 0.0], [0.3, 0.4], [1.0, 1.0]], dtype=torch.float64)
    g = Graph(torch.tensor([[1, 2, 0], [0, 0, 0]]), 3)  # edges j -> i: 1->0, 2->0, 0->0 (self)
    out = blk(g, {"node.p": x})["edge.d"]
    rel = (x[g.src] - x[g.dst]) / 0.5
    assert torch.allclose(out[:, :2], rel, rtol=0, atol=TOL64)
    # the smooth norm: within eps²/(2r) of the length, eps (1e-8) on the self-edge
    assert torch.allclose(out[:, 2], rel.norm(dim=-1), rtol=0, atol=1e-8)
    assert out[g.src == g.dst, 2].item() == pytest.approx(1e-8)


def test_standardize_and_statistics_errors():
    m = compile_spec({"graphdl": 1, "inputs": {"graph.c": 2},
                      "model": {"layers": [{"type": "standardize", "input": "graph.c", "statistic": "context"}]}})
    with pytest.raises(DataError, match="standardises with data statistic `context` \\(2 channels\\) but none"):
        m.set_statistics({})
    with pytest.raises(DataError, match="needs 2 channels, found mean 3"):
        m.set_statistics({"context": ([0, 0, 0], [1, 1, 1])})
    with pytest.raises(DataError, match="positive finite std"):
        m.set_statistics({"context": ([0, 0], [1, 0])})
    m.set_statistics({"context": ([1.0, 2.0], [2.0, 4.0])})
    out = m(Graph(None, 1, {"graph.c": torch.tensor([[3.0, 6.0]])}))["graph.c"]
    assert torch.equal(out, torch.tensor([[1.0, 1.0]]))
    assert isinstance(m.blocks[0], Standardize)


def test_mlp_out_norm_is_layer_norm_of_the_output():
    blk = MLPBlock.build({"input": "node.x", "out_dim": 4, "hidden": [8, 8], "out_norm": "layer"}, {"node.x": 3})
    x = torch.randn(6, 3)
    lin = [m for m in blk.mlp if isinstance(m, nn.Linear)]
    h = torch.relu(lin[1](torch.relu(lin[0](x))))
    want = nn.functional.layer_norm(lin[2](h), (4,), blk.mlp[-1].weight, blk.mlp[-1].bias)
    assert isinstance(blk.mlp[-1], nn.LayerNorm)
    assert torch.allclose(blk(None, {"node.x": x})["node.x"], want, atol=1e-6)


def test_concat_broadcasts_graph_fields_to_nodes():
    blk = Concat.build({"inputs": ["node.a", "graph.c"], "output": "node.x"}, {"node.a": 1, "graph.c": 2})
    g = Graph(None, 3, batch=torch.tensor([0, 0, 1]), num_graphs=2)
    a, c = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[10.0, 11.0], [20.0, 21.0]])
    out = blk(g, {"node.a": a, "graph.c": c})["node.x"]
    assert torch.equal(out, torch.tensor([[1.0, 10, 11], [2, 10, 11], [3, 20, 21]]))
    with pytest.raises(InferenceError, match="a graph field joins node fields only"):
        Concat.build({"inputs": ["edge.a", "graph.c"], "output": "edge.x"}, {"edge.a": 1, "graph.c": 2})


def test_interaction_network_step_by_hand():
    """graph_network with edge_model [edge, dst, src] + node_model [agg, node] + residual is one
    GNS processor step: e' = e + φ_e([e, v_i, v_j]), v' = v + φ_v([Σ_j φ_e(...), v])."""
    spec = {"graphdl": 1, "inputs": {"node.h": 4, "edge.e": 4},
            "model": {"layers": [{"type": "graph_network", "node_input": "node.h", "edge_input": "edge.e",
                                  "edge_model": {"inputs": ["edge", "dst", "src"], "hidden": [5], "out_dim": 4,
                                                 "out_norm": "layer"},
                                  "node_model": {"inputs": ["agg", "node"], "hidden": [5], "out_dim": 4,
                                                 "out_norm": "layer"},
                                  "repeat": 2, "residual": True}],
                      "outputs": ["node.h", "edge.e"]}}
    torch.manual_seed(0)
    m = compile_spec(spec, dtype=torch.float64)
    ei = torch.tensor([[1, 2, 0, 2, 0], [0, 0, 1, 1, 2]])
    v, e = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    out = m(Graph(ei, 3, {"node.h": v, "edge.e": e}))
    for blk in m.blocks:
        assert isinstance(blk, GraphNetwork)
        src, dst = ei
        e_new = blk.edge_mlp(torch.cat([e, v[dst], v[src]], -1))
        agg = torch.zeros_like(v).index_add_(0, dst, e_new)
        v_new = blk.node_mlp(torch.cat([agg, v], -1))
        v, e = v + v_new, e + e_new
    assert torch.allclose(out["node.h"], v, rtol=0, atol=TOL64)
    assert torch.allclose(out["edge.e"], e, rtol=0, atol=TOL64)


def test_water_drop_spec_equals_the_reference_implementation():
    """The whole GNS spec (inputs built by blocks, radius graph with self-edges, 10 unshared
    interaction networks) equals benchmarks/gns.py's plain PyTorch reference with copied weights."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import gns as bench
    finally:
        sys.path.pop(0)
    model, stats = bench.graphdl_model()
    ref = bench.ReferenceGNS()
    with torch.no_grad():
        for a, b in zip(model.parameters(), ref.parameters_in_graphdl_order()):
            b.copy_(a)
        ref.vel_mean.copy_(stats["velocity"][0])
        ref.vel_std.copy_(stats["velocity"][1])
    model.double()
    ref.double()
    hist, types, batch = bench.water_batch(2, 40)
    hist = hist.double()
    res = bench.parity(model, ref, hist, types, batch, 2)
    assert res["same_graph"] and res["edges"] > 2 * 40  # self-edges plus neighbours
    # float64 round-off through ~30 layers of width 128 and outputs O(1)
    assert res["max_abs_diff"] < 1e-12, res
