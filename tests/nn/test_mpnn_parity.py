"""NNConv against PyG ``NNConv`` and one MPNN step against PyG NNConv + ``torch.nn.GRUCell``
(copied weights, float64, 1e-12); permutation equivariance; graphs without edges; the spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch_geometric.nn import NNConv as PygNNConv

from graphdl.compile import compile_spec, plan_spec
from graphdl.data.graph import Graph, collate
from graphdl.errors import InferenceError
from graphdl.nn.mpnn import MPNN, NNConv
from graphdl.testing.graph_cases import graph_cases, permute_graph, random_graph, random_node_permutation

ROOT = Path(__file__).resolve().parents[2]
DT = torch.float64
# float64 parity: values and gradients |·| ≤ 20 through ≤ 4 matmuls / softmaxes and sums of ≤ 60 edges
# carry ≤ ~225·eps·20 ≈ 1e-12 (measured 0); a float32 step (≈ 1e-7) fails it
TOL = 1e-12
D, DE = 6, 3
FIELDS = {"node.h": D, "edge.e": DE}
CASES = graph_cases(feat_dim=D, edge_dim=DE)
CASE_IDS = [n for n, _ in CASES]


def _randomize(m: nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.4)


def _pyg_nnconv(conv, out_dim: int, aggr: str, root_weight: bool, bias: bool) -> PygNNConv:
    edge_nn = nn.Sequential(nn.Linear(DE, 16), nn.ReLU(), nn.Linear(16, D * out_dim))
    ref = PygNNConv(D, out_dim, edge_nn, aggr={"sum": "add", "mean": "mean"}[aggr],
                    root_weight=root_weight, bias=bias).to(DT)
    ref.load_state_dict(conv.state_dict())  # same names: nn.0, nn.2, lin, bias
    return ref


@pytest.mark.parametrize("name, g", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("aggr, root_weight, bias", [("sum", True, True), ("mean", True, True),
                                                     ("sum", False, False), ("mean", False, True)])
def test_nnconv_matches_pyg(name, g, aggr, root_weight, bias):
    blk = NNConv.build({"out_dim": 5, "hidden": [16], "aggr": aggr, "root_weight": root_weight, "bias": bias},
                       FIELDS).to(DT)
    _randomize(blk)
    ref = _pyg_nnconv(blk.conv, 5, aggr, root_weight, bias)
    out = blk(g, dict(g.fields))["node.h"]
    want = ref(g["node.h"], g.edge_index, g["edge.e"])
    assert out.shape == want.shape == (g.num_nodes, 5)
    assert (out - want).abs().max().item() <= TOL


def test_nnconv_gradients_match_pyg():
    _, g = graph_cases("random", feat_dim=D, edge_dim=DE)[0]
    blk = NNConv.build({"out_dim": 5, "hidden": [16], "aggr": "mean"}, FIELDS).to(DT)
    _randomize(blk)
    ref = _pyg_nnconv(blk.conv, 5, "mean", True, True)
    f = {k: v.clone().requires_grad_() for k, v in g.fields.items()}
    x, e = g["node.h"].clone().requires_grad_(), g["edge.e"].clone().requires_grad_()
    out = blk(g, f)["node.h"]
    want = ref(x, g.edge_index, e)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (want * w).sum().backward()
    assert (f["node.h"].grad - x.grad).abs().max().item() <= TOL
    assert (f["edge.e"].grad - e.grad).abs().max().item() <= TOL
    for (k, p), q in zip(blk.conv.named_parameters(), ref.parameters()):
        assert (p.grad - q.grad).abs().max().item() <= TOL, k


@pytest.mark.parametrize("name, g", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("aggr, act", [("sum", "relu"), ("mean", "identity")])
def test_mpnn_step_matches_nnconv_plus_grucell(name, g, aggr, act):
    blk = MPNN.build({"hidden": [16], "aggr": aggr, "act": act}, FIELDS).to(DT)
    _randomize(blk)
    conv = _pyg_nnconv(blk.conv, D, aggr, True, True)
    gru = nn.GRUCell(D, D).to(DT)
    gru.load_state_dict(blk.gru.state_dict())
    h = g["node.h"]
    m = conv(h, g.edge_index, g["edge.e"])
    want = gru(torch.relu(m) if act == "relu" else m, h)
    out = blk(g, dict(g.fields))["node.h"]
    assert out.shape == (g.num_nodes, D)
    assert (out - want).abs().max().item() <= TOL


def test_mpnn_repeat_with_shared_weights_is_three_applications_of_one_step():
    text = f"""
graphdl: 1
inputs: {{node.h: {D}, edge.e: {DE}}}
model:
  layers:
    - {{type: mpnn, repeat: 3, share_weights: true, hidden: [16]}}
"""
    from graphdl.spec.model import parse_spec_text

    model = compile_spec(parse_spec_text(text), dtype=DT)
    assert len(model.blocks) == 1
    _, g = graph_cases("batch", feat_dim=D, edge_dim=DE)[0]
    step = model.blocks[0]
    h = g["node.h"]
    for _ in range(3):
        h = step(g, {"node.h": h, "edge.e": g["edge.e"]})["node.h"]
    out = model(g)["node.h"]
    assert (out - h).abs().max().item() <= 1e-12


@pytest.mark.parametrize("cls, params", [(NNConv, {"out_dim": 4, "hidden": [8]}), (MPNN, {"hidden": [8]})])
@pytest.mark.parametrize("name", ["random_mixed", "batch", "multi_edges"])
def test_permutation_equivariance(cls, params, name):
    g = dict(CASES)[name]
    blk = cls.build(params, FIELDS).to(DT)
    pg = permute_graph(g, random_node_permutation(g, 3))
    a = blk(g, dict(g.fields))["node.h"]
    b = blk(pg.graph, dict(pg.graph.fields))["node.h"]
    assert (b - a[pg.node_perm]).abs().max().item() <= 1e-10  # float64, |out| ≤ 4: measured 4e-16


@pytest.mark.parametrize("aggr", ["sum", "mean"])
def test_no_edges_is_finite_and_keeps_the_root_term(aggr):
    g = Graph(None, 3, {"node.h": torch.randn(3, D, dtype=DT), "edge.e": torch.zeros(0, DE, dtype=DT)})
    blk = NNConv.build({"out_dim": 4, "aggr": aggr}, FIELDS).to(DT)
    out = blk(g, dict(g.fields))["node.h"]
    want = blk.conv.lin(g["node.h"]) + blk.conv.bias
    assert (out - want).abs().max().item() <= 1e-12
    step = MPNN.build({"aggr": aggr}, FIELDS).to(DT)
    f = {k: v.clone().requires_grad_() for k, v in g.fields.items()}
    h = step(g, f)["node.h"]
    assert torch.isfinite(h).all()
    h.sum().backward()
    assert torch.isfinite(f["node.h"].grad).all()


def test_edge_input_errors():
    with pytest.raises(InferenceError, match="needs field `edge.e`"):
        MPNN.build({}, {"node.h": D})
    with pytest.raises(InferenceError, match="`edge_input` must be an edge field"):
        NNConv.build({"out_dim": 3, "edge_input": "node.h"}, FIELDS)


def test_mpnn_spec_compiles_and_runs():
    plan = plan_spec(str(ROOT / "specs" / "mpnn.yaml"))
    assert [s.shares for s in plan.steps if s.cls is MPNN] == [None, 2, 2]
    model = compile_spec(plan)
    g = collate([random_graph(n, e, 11, 4, seed=i, dtype=torch.float32)
                 for i, (n, e) in enumerate([(7, 14), (5, 8), (9, 18), (3, 2)])])
    y = model(g)["graph.y"]
    assert y.shape == (4, 1) and torch.isfinite(y).all()
    y.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
