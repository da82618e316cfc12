"""Batches that leave a training statistic undefined: one row for batch norm, one node per
graph for graph norm, one channel for layer norm.

The rule (graphdl.nn.mlp.BatchNorm1d, after PyG's ``BatchNorm(allow_single_element=True)``):
a training batch with at most one value per channel is normalised with the running statistics,
exactly as in evaluation, and leaves them unchanged. Graph norm uses biased per-graph variances
(PyG's ``GraphNorm``), which exist for a one-node graph. No legal batch raises or yields NaN.

Tolerances: float64 throughout; the references compute the same normalisation in another
order of operations, so they agree to a few ulps of the O(1) outputs: 1e-12.
"""

import pytest
import torch
from torch_geometric import nn as pyg

from graphdl.data.graph import Graph, collate
from graphdl.nn.basic import BatchNorm, GraphNorm, LayerNorm
from graphdl.nn.conv import GIN, GINE, GatedGCN
from graphdl.nn.generic import GraphNetwork
from graphdl.nn.mlp import MLP, BatchNorm1d

TOL = 1e-12  # float64 round-off of O(1) values computed in two orders (see the module docstring)
D = 5


def _stats(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every running statistic of every batch norm in ``module``, cloned."""
    return {k: v.clone() for k, v in module.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _warm(module: torch.nn.Module) -> None:
    """Non-trivial running statistics and affine parameters (so that "used the running
    statistics" differs from "used the identity")."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=m.running_mean.dtype))
            m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=m.running_var.dtype) + 0.5)
            m.num_batches_tracked.fill_(7)
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=g, dtype=m.weight.dtype))
                m.bias.copy_(torch.randn(m.num_features, generator=g, dtype=m.bias.dtype))


def _assert_same_stats(before: dict, after: dict) -> None:
    assert before.keys() == after.keys() and before
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


# ------------------------------------------------------------------------ BatchNorm1d
@pytest.mark.parametrize("rows", [0, 1])
def test_batchnorm1d_one_row_in_training_uses_running_stats(rows):
    bn = BatchNorm1d(D).double()
    _warm(bn)
    x = torch.randn(rows, D, dtype=torch.float64, requires_grad=True)
    before = _stats(bn)
    y = bn.train()(x)
    _assert_same_stats(before, _stats(bn))
    expected = (x - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * bn.weight + bn.bias
    assert y.shape == (rows, D)
    torch.testing.assert_close(y, expected, rtol=TOL, atol=TOL)
    torch.testing.assert_close(y, bn.eval()(x), rtol=TOL, atol=TOL)
    bn.train()
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(bn.weight.grad).all()
    # d(sum y)/dx = γ / √(running_var + eps) per channel
    torch.testing.assert_close(x.grad, (bn.weight / (bn.running_var + bn.eps).sqrt()).expand(rows, D).detach(),
                               rtol=TOL, atol=TOL)


def test_batchnorm1d_one_row_matches_pyg_allow_single_element():
    ours = BatchNorm1d(D).double()
    _warm(ours)
    theirs = pyg.BatchNorm(D, allow_single_element=True).double()
    theirs.module.load_state_dict(ours.state_dict())
    x = torch.randn(1, D, dtype=torch.float64)
    torch.testing.assert_close(ours.train()(x), theirs.train()(x), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("shape", [(2, D), (7, D), (1, D, 3)])
def test_batchnorm1d_is_torch_with_two_or_more_values_per_channel(shape):
    ours, ref = BatchNorm1d(D).double(), torch.nn.BatchNorm1d(D).double()
    _warm(ours)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(*shape, dtype=torch.float64)
    assert torch.equal(ours.train()(x), ref.train()(x))
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    # (1, D, 3) holds 3 values per channel: batch statistics, and the running ones moved
    assert int(ours.num_batches_tracked) == 8


def test_batchnorm1d_under_torch_compile():
    """The one-row branch is a shape test, so torch.compile traces both paths (a guard each)."""
    ours, ref = BatchNorm1d(D).double(), BatchNorm1d(D).double()
    _warm(ours)
    ref.load_state_dict(ours.state_dict())
    compiled = torch.compile(ours.train(), backend="aot_eager", fullgraph=True)
    for rows in (4, 1, 3, 0):
        x = torch.randn(rows, D, dtype=torch.float64)
        torch.testing.assert_close(compiled(x), ref.train()(x), rtol=TOL, atol=TOL)
        for k, v in ref.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[k], v, rtol=TOL, atol=TOL)


def test_batchnorm1d_state_dict_is_torchs():
    """Checkpoints written with torch.nn.BatchNorm1d load unchanged."""
    ref = torch.nn.BatchNorm1d(D)
    assert set(BatchNorm1d(D).state_dict()) == set(ref.state_dict())
    BatchNorm1d(D).load_state_dict(ref.state_dict())


def test_torch_batchnorm_still_raises_on_one_row():
    """The reason for BatchNorm1d: if torch starts accepting one row, revisit it."""
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch.nn.BatchNorm1d(D).train()(torch.randn(1, D))


# ------------------------------------------------------------------ blocks using it
def _methane(dtype=torch.float64) -> Graph:
    """One node, no edges (a methane with implicit hydrogens)."""
    g = torch.Generator().manual_seed(3)
    return Graph(None, 1, {"node.h": torch.randn(1, D, generator=g, dtype=dtype),
                           "edge.e": torch.zeros(0, D, dtype=dtype),
                           "graph.u": torch.randn(1, D, generator=g, dtype=dtype)})


def _one_bond(dtype=torch.float64) -> Graph:
    """Two nodes, one directed edge: one edge row."""
    g = torch.Generator().manual_seed(4)
    return Graph([[0], [1]], 2, {"node.h": torch.randn(2, D, generator=g, dtype=dtype),
                                 "edge.e": torch.randn(1, D, generator=g, dtype=dtype),
                                 "graph.u": torch.randn(1, D, generator=g, dtype=dtype)})


BLOCK_CASES = [
    ("batch_norm_node", BatchNorm, {"input": "node.h"}),
    ("batch_norm_graph", BatchNorm, {"input": "graph.u"}),
    ("gin", GIN, {"out_dim": D}),  # MLP with norm: batch (GIN's default)
    ("gine", GINE, {"out_dim": D, "last_act": True}),
    ("gated_gcn", GatedGCN, {"out_dim": D}),  # batch norm on nodes and on edges
    ("graph_network", GraphNetwork, {
        "node_input": "node.h", "edge_input": "edge.e", "global_input": "graph.u",
        "edge_model": {"hidden": [D], "out_dim": D, "norm": "batch"},
        "node_model": {"hidden": [D], "out_dim": D, "norm": "batch"},
        "global_model": {"hidden": [D], "out_dim": D, "norm": "batch"}}),
]


@pytest.mark.parametrize("name, cls, params", BLOCK_CASES, ids=[c[0] for c in BLOCK_CASES])
def test_block_on_one_single_atom_graph_trains_like_eval(name, cls, params):
    """Every batch norm of the block sees one row: training output = evaluation output,
    running statistics unchanged, gradients finite."""
    g = _methane()
    block = cls.build(params, {"node.h": D, "edge.e": D, "graph.u": D}).double()
    _warm(block)
    before = _stats(block)
    f = {k: v.clone().requires_grad_(v.numel() > 0) for k, v in g.fields.items()}
    out = block.train()(g, f)
    _assert_same_stats(before, _stats(block))
    ref = block.eval()(g, dict(g.fields))
    assert out.keys() == ref.keys()
    for k in out:
        assert torch.isfinite(out[k]).all(), k
        torch.testing.assert_close(out[k], ref[k], rtol=TOL, atol=TOL)
    sum(v.sum() for v in out.values()).backward()
    for n, p in block.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), n


def test_gated_gcn_one_edge_row_keeps_edge_stats_and_updates_node_stats():
    g = _one_bond()
    block = GatedGCN.build({"out_dim": D}, {"node.h": D, "edge.e": D}).double()
    _warm(block)
    e_before, h_before = _stats(block.bn_e), _stats(block.bn_h)
    out = block.train()(g, dict(g.fields))
    _assert_same_stats(e_before, _stats(block.bn_e))  # one edge: running statistics
    assert not torch.equal(h_before["running_mean"], block.bn_h.running_mean)  # two nodes: batch statistics
    assert all(torch.isfinite(v).all() for v in out.values())


def test_mlp_batch_norm_one_row_on_3d_input():
    """MLP flattens (*, d) inputs for batch norm: (1, 1, d) is one row."""
    mlp = MLP([D, 4, 3], norm="batch").double()
    _warm(mlp)
    x = torch.randn(1, 1, D, dtype=torch.float64)
    torch.testing.assert_close(mlp.train()(x), mlp.eval()(x), rtol=TOL, atol=TOL)


# ------------------------------------------------------------------------ GraphNorm
def test_graph_norm_one_node_graph_is_beta_with_alpha_one():
    """σ²_G of a one-node graph is 0 after subtracting μ_G (α = 1): the output is β exactly."""
    block = GraphNorm.build({}, {"node.h": D}).double()
    with torch.no_grad():
        block.weight.normal_()
        block.bias.normal_()
    g = _methane()
    out = block.train()(g, dict(g.fields))["node.h"]
    assert torch.equal(out, block.bias.detach().expand(1, D))


def test_graph_norm_matches_pyg_on_graphs_of_one_to_three_nodes():
    """A batch of graphs with 1, 3 and 1 nodes, α ≠ 1: PyG's GraphNorm with copied weights."""
    gen = torch.Generator().manual_seed(5)
    graphs = [Graph(None, n, {"node.h": torch.randn(n, D, generator=gen, dtype=torch.float64)}) for n in (1, 3, 1)]
    b = collate(graphs)
    ours = GraphNorm.build({}, {"node.h": D}).double()
    theirs = pyg.GraphNorm(D).double()
    with torch.no_grad():
        for p in (ours.weight, ours.bias, ours.alpha):
            p.normal_(generator=gen)
        theirs.weight.copy_(ours.weight)
        theirs.bias.copy_(ours.bias)
        theirs.mean_scale.copy_(ours.alpha)
    x = b.fields["node.h"].clone().requires_grad_()
    out = ours.train()(b, {"node.h": x})["node.h"]
    ref = theirs(b.fields["node.h"], b.batch, b.num_graphs)
    torch.testing.assert_close(out, ref, rtol=TOL, atol=TOL)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


# ------------------------------------------------------------------------ LayerNorm
def test_layer_norm_of_one_channel_is_beta():
    """One channel: its (biased) variance over channels is 0; the output is β, finite."""
    block = LayerNorm.build({}, {"node.h": 1}).double()
    with torch.no_grad():
        block.norm.bias.fill_(0.25)
    x = torch.randn(3, 1, dtype=torch.float64, requires_grad=True)
    g = Graph(None, 3, {"node.h": x.detach()})
    out = block.train()(g, {"node.h": x})["node.h"]
    assert torch.equal(out, torch.full((3, 1), 0.25, dtype=torch.float64))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
