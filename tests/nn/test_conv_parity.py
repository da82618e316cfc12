"""PyG parity of the classic convolutions (float64, weights copied from the PyG layer).

Every layer runs on the graph-case catalogue (isolated nodes, self-loops, multi-edges, a
batch, graphs without edges) and on a larger random graph; outputs must agree to 1e-12.
"""

import pytest
import torch
from torch import nn
from torch_geometric import nn as pyg

from graphdl.data.graph import Graph
from graphdl.nn.conv import GCN, GIN, GINE, SAGE, GatedGCN, MoNet
from graphdl.testing.graph_cases import graph_cases, random_graph

# float64 parity: values and gradients |·| ≤ 25 through ≤ 4 matmuls / softmaxes and sums of ≤ 60 edges
# carry ≤ ~180·eps·25 ≈ 1e-12 (measured ≤ 7e-15); a float32 step (≈ 1e-7) fails it
TOL = 1e-12
D = 6  # node feature width of the test graphs


def _cases():
    cases = graph_cases(feat_dim=D, edge_dim=3)
    cases.append(("random_60", random_graph(60, 240, D, 3, seed=3)))
    # duplicated self-loops with different weights: PyG keeps the last one
    cases.append(("double_loops", Graph([[0, 1, 1, 2, 1, 0], [1, 1, 1, 0, 2, 0]], 4, {
        "node.h": torch.randn(4, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
        "edge.e": torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)),
    })))
    return cases


CASES = _cases()
IDS = [name for name, _ in CASES]


def _weights(g: Graph) -> torch.Tensor:
    """Positive edge weights (E, 1) derived from the edge features."""
    return g["edge.e"][:, :1].abs() + 0.1


def _copy(dst: nn.Module, src: nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    assert diff <= TOL, f"max abs diff {diff:.3e} > {TOL}"


# ------------------------------------------------------------------------------- GCN
GCN_CONFIGS = [
    ({}, {}, False),
    ({"normalize": False}, {"normalize": False}, False),
    ({}, {}, True),
    ({"improved": True}, {"improved": True}, True),
    ({"add_self_loops": False}, {"add_self_loops": False}, True),
    ({"normalize": False}, {"normalize": False}, True),
    ({"bias": False, "out_dim": 9}, {"bias": False}, False),  # out_dim > in_dim: Θ after the product
]


@pytest.mark.parametrize("ours, theirs, weighted", GCN_CONFIGS)
@pytest.mark.parametrize("name, g", CASES, ids=IDS)
def test_gcn_matches_pyg(name, g, ours, theirs, weighted):
    params = {"out_dim": 4, **ours}
    fields = {"node.h": D}
    if weighted:
        params["edge_weight"] = "edge.w"
        fields["edge.w"] = 1
        g = g.replace(edge__w=_weights(g))
    block = GCN.build(params, fields).double()
    ref = pyg.GCNConv(D, params["out_dim"], **theirs).double()
    block.lin.weight.data.copy_(ref.lin.weight)
    if ref.bias is not None:
        ref.bias.data.normal_()
        block.bias.data.copy_(ref.bias)
    w = g["edge.w"].reshape(-1) if weighted else None
    _close(block(g, dict(g.fields))["node.h"], ref(g["node.h"], g.edge_index, w))


def test_gcn_improved_without_weights_is_a_plus_2i():
    """PyG 2.8 ignores ``improved`` without edge weights; with explicit unit weights it
    applies A + 2I, which is what the block does (documented departure)."""
    g = CASES[IDS.index("self_loops")][1]
    g = Graph(g.edge_index[:, 1:], g.num_nodes, {"node.h": g["node.h"]})  # node 0 loses its loop
    block = GCN.build({"out_dim": 4, "improved": True}, {"node.h": D}).double()
    ref = pyg.GCNConv(D, 4, improved=True).double()
    block.lin.weight.data.copy_(ref.lin.weight)
    ones = torch.ones(g.num_edges, dtype=torch.float64)
    _close(block(g, dict(g.fields))["node.h"], ref(g["node.h"], g.edge_index, ones))
    plain = ref(g["node.h"], g.edge_index)
    assert (block(g, dict(g.fields))["node.h"] - plain).abs().max() > 1e-3


@pytest.mark.parametrize("weighted", [False, True])
def test_gcn_gradients_match_pyg(weighted):
    g = random_graph(40, 160, D, 3, seed=5)
    x = g["node.h"].clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    w = _weights(g).clone().requires_grad_(True)
    w_ref = w.detach().clone().reshape(-1).requires_grad_(True)
    params, fields = {"out_dim": 5}, {"node.h": D}
    if weighted:
        params["edge_weight"], fields["edge.w"] = "edge.w", 1
    block = GCN.build(params, fields).double()
    ref = pyg.GCNConv(D, 5).double()
    block.lin.weight.data.copy_(ref.lin.weight)
    out = block(g, {"node.h": x, "edge.w": w})["node.h"]
    out_ref = ref(x_ref, g.edge_index, w_ref if weighted else None)
    gout = torch.randn_like(out)
    out.backward(gout)
    out_ref.backward(gout)
    _close(x.grad, x_ref.grad)
    _close(block.lin.weight.grad, ref.lin.weight.grad)
    if weighted:
        # A self-loop repeated at one node counts once (the last copy's weight), so the
        # earlier copies have no effect and gradient 0. PyG's index_put backward hands them
        # the used copy's gradient anyway; compare the other edges, and check the zeros.
        src, dst = g.edge_index
        loop_ids = torch.where(src == dst, torch.arange(g.num_edges), -1)
        last = torch.full((g.num_nodes,), -1).scatter_reduce(0, dst, loop_ids, "amax")
        unused = (src == dst) & (last[dst] != torch.arange(g.num_edges))
        assert unused.any(), "the test graph should repeat a self-loop"
        _close(w.grad.reshape(-1)[~unused], w_ref.grad[~unused])
        assert torch.equal(w.grad.reshape(-1)[unused], torch.zeros(int(unused.sum()), dtype=torch.float64))


# ------------------------------------------------------------------------------ SAGE
SAGE_CONFIGS = [
    ({"aggr": "mean"}, {"aggr": "mean"}),
    ({"aggr": "mean", "out_dim": 3}, {"aggr": "mean"}),  # narrowing: W_l before the product
    ({"aggr": "sum", "normalize": True}, {"aggr": "sum", "normalize": True}),
    ({"aggr": "mean", "root_weight": False, "bias": False}, {"aggr": "mean", "root_weight": False, "bias": False}),
    ({"aggr": "max_pool"}, {"aggr": "max", "project": True}),
    ({"aggr": "max"}, {"aggr": "max"}),
    ({"aggr": "mean", "project": True}, {"aggr": "mean", "project": True}),
]


@pytest.mark.parametrize("ours, theirs", SAGE_CONFIGS)
@pytest.mark.parametrize("name, g", CASES, ids=IDS)
def test_sage_matches_pyg(name, g, ours, theirs):
    params = {"out_dim": 8, **ours}
    block = SAGE.build(params, {"node.h": D}).double()
    ref = pyg.SAGEConv(D, params["out_dim"], **theirs).double()
    if ref.lin_l.bias is not None:
        ref.lin_l.bias.data.normal_()
    _copy(block.lin_l, ref.lin_l)
    if block.lin_r is not None:
        _copy(block.lin_r, ref.lin_r)
    if block.lin is not None:
        _copy(block.lin, ref.lin)
    _close(block(g, dict(g.fields))["node.h"], ref(g["node.h"], g.edge_index))


# ------------------------------------------------------------------------- GIN, GINE
def _pyg_mlp(dims, batch_norm):
    layers = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double()


# ε = −0.25 is exact in float32: PyG keeps a fixed ε in a float32 buffer (−0.2 became −0.2000000030)
@pytest.mark.parametrize("norm, eps, train", [(None, 0.0, False), (None, 0.3, True), ("batch", -0.25, False)])
@pytest.mark.parametrize("name, g", CASES, ids=IDS)
def test_gin_matches_pyg(name, g, norm, eps, train):
    block = GIN.build({"out_dim": 5, "hidden": [7], "norm": norm, "eps": eps, "train_eps": train},
                      {"node.h": D}).double()
    ref = pyg.GINConv(_pyg_mlp([D, 7, 5], norm == "batch"), eps=eps, train_eps=train).double()
    _copy(block.mlp, ref.nn)
    if g.num_nodes < 2:  # batch statistics of one row are undefined: compare in eval mode
        block.eval(), ref.eval()
    _close(block(g, dict(g.fields))["node.h"], ref(g["node.h"], g.edge_index))


def test_gin_gradients_match_pyg():
    g = random_graph(40, 160, D, 3, seed=6)
    block = GIN.build({"out_dim": 5, "hidden": [7], "norm": "batch", "train_eps": True, "eps": 0.1},
                      {"node.h": D}).double()
    ref = pyg.GINConv(_pyg_mlp([D, 7, 5], True), eps=0.1, train_eps=True).double()
    _copy(block.mlp, ref.nn)
    x = g["node.h"].clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, out_ref = block(g, {"node.h": x})["node.h"], ref(x_ref, g.edge_index)
    gout = torch.randn_like(out)
    out.backward(gout)
    out_ref.backward(gout)
    _close(x.grad, x_ref.grad)
    _close(block.eps.grad, ref.eps.grad)
    _close(block.mlp[0].weight.grad, ref.nn[0].weight.grad)


@pytest.mark.parametrize("project", [False, True])
@pytest.mark.parametrize("name, g", CASES, ids=IDS)
def test_gine_matches_pyg(name, g, project):
    edge_dim = 3 if project else D
    if not project:
        g = g.replace(edge__e=torch.randn(g.num_edges, D, dtype=torch.float64))
    block = GINE.build({"out_dim": 5, "hidden": [7], "norm": None, "eps": 0.25, "project_edges": project},
                       {"node.h": D, "edge.e": edge_dim}).double()
    ref = pyg.GINEConv(_pyg_mlp([D, 7, 5], False), eps=0.25, edge_dim=3 if project else None).double()
    _copy(block.mlp, ref.nn)
    if project:
        _copy(block.lin_edge, ref.lin)
    _close(block(g, dict(g.fields))["node.h"], ref(g["node.h"], g.edge_index, g["edge.e"]))


def test_gine_gradients_match_pyg():
    g = random_graph(40, 160, D, 3, seed=8)
    block = GINE.build({"out_dim": 5, "hidden": [7], "norm": None, "project_edges": True},
                       {"node.h": D, "edge.e": 3}).double()
    ref = pyg.GINEConv(_pyg_mlp([D, 7, 5], False), edge_dim=3).double()
    _copy(block.mlp, ref.nn)
    _copy(block.lin_edge, ref.lin)
    x, e = g["node.h"].clone().requires_grad_(True), g["edge.e"].clone().requires_grad_(True)
    x_ref, e_ref = x.detach().clone().requires_grad_(True), e.detach().clone().requires_grad_(True)
    out, out_ref = block(g, {"node.h": x, "edge.e": e})["node.h"], ref(x_ref, g.edge_index, e_ref)
    gout = torch.randn_like(out)
    out.backward(gout)
    out_ref.backward(gout)
    _close(x.grad, x_ref.grad)
    _close(e.grad, e_ref.grad)
    _close(block.lin_edge.weight.grad, ref.lin.weight.grad)


# -------------------------------------------------------------------------- GatedGCN
RES_GATED = {"edge_gates": False, "normalize_gates": False, "update_edges": False,
             "batch_norm": False, "skip": False, "act": "identity"}


@pytest.mark.parametrize("root, bias", [(True, True), (False, False)])
@pytest.mark.parametrize("name, g", CASES, ids=IDS)
def test_gated_gcn_core_matches_res_gated_graph_conv(name, g, root, bias):
    block = GatedGCN.build({"out_dim": 5, "root_weight": root, "bias": bias, **RES_GATED}, {"node.h": D}).double()
    ref = pyg.ResGatedGraphConv(D, 5, root_weight=root, bias=bias).double()
    for ours, theirs in (("A", "lin_key"), ("B", "lin_query"), ("V", "lin_value")):
        getattr(block, ours).weight.data.copy_(getattr(ref, theirs).weight)
        if bias:
            getattr(block, ours).bias.data.copy_(getattr(ref, theirs).bias)
    # ResGatedGraphConv always has biases on key/query/value; without bias ours has none
    if not bias:
        for theirs in ("lin_key", "lin_query", "lin_value"):
            getattr(ref, theirs).bias.data.zero_()
    if root:
        block.U.weight.data.copy_(ref.lin_skip.weight)
    if bias:
        ref.bias.data.normal_()
        block.bias.data.copy_(ref.bias)
    _close(block(g, dict(g.fields))["node.h"], ref(g["node.h"], g.edge_index))


def test_gated_gcn_core_gradients_match_pyg():
    g = random_graph(40, 160, D, 3, seed=9)
    block = GatedGCN.build({"out_dim": 5, **RES_GATED}, {"node.h": D}).double()
    ref = pyg.ResGatedGraphConv(D, 5).double()
    for ours, theirs in (("A", "lin_key"), ("B", "lin_query"), ("V", "lin_value")):
        _copy(getattr(block, ours), getattr(ref, theirs))
    block.U.weight.data.copy_(ref.lin_skip.weight)
    x = g["node.h"].clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, out_ref = block(g, {"node.h": x})["node.h"], ref(x_ref, g.edge_index)
    gout = torch.randn_like(out)
    out.backward(gout)
    out_ref.backward(gout)
    _close(x.grad, x_ref.grad)
    _close(block.A.weight.grad, ref.lin_key.weight.grad)
    _close(block.B.weight.grad, ref.lin_query.weight.grad)
    _close(block.V.weight.grad, ref.lin_value.weight.grad)


def _gated_reference(block, x, edge_index, e, eps):
    """Dwivedi et al.'s GatedGCN written edge by edge (test-only; eval-mode batch norm)."""
    A, B, C, U, V = (lambda t, m=m: m(t) for m in (block.A, block.B, block.C, block.U, block.V))
    n, m = x.size(0), block.p.out_dim
    num = torch.zeros(n, m, dtype=x.dtype)
    den = torch.zeros(n, m, dtype=x.dtype)
    e_hat = []
    for k, (j, i) in enumerate(edge_index.t().tolist()):
        eh = A(x[i]) + B(x[j]) + C(e[k])
        s = torch.sigmoid(eh)
        num[i] += s * V(x[j])
        den[i] += s
        e_hat.append(eh)
    h = U(x) + block.bias + num / (den + eps)
    e_hat = torch.stack(e_hat) if e_hat else torch.zeros(0, m, dtype=x.dtype)

    def post(y, bn, skip):
        y = (y - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        return skip + torch.relu(y)

    return post(h, block.bn_h, x), post(e_hat, block.bn_e, e)


@pytest.mark.parametrize("name, g", CASES, ids=IDS)
def test_gated_gcn_full_matches_dense_reference(name, g):
    g = g.replace(edge__e=torch.randn(g.num_edges, D, dtype=torch.float64))
    block = GatedGCN.build({"out_dim": D, "eps": 1e-6}, {"node.h": D, "edge.e": D}).double()
    for bn in (block.bn_h, block.bn_e):  # non-trivial running statistics and affine maps
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    block.eval()
    out = block(g, dict(g.fields))
    h_ref, e_ref = _gated_reference(block, g["node.h"], g.edge_index, g["edge.e"], 1e-6)
    _close(out["node.h"], h_ref)
    _close(out["edge.e"], e_ref)


# ----------------------------------------------------------------------------- MoNet
def _degree_pseudo_by_hand(g: Graph) -> torch.Tensor:
    deg = torch.bincount(g.edge_index[1], minlength=g.num_nodes).double()
    s, d = g.edge_index.tolist()
    return torch.tensor([[1 / (deg[j] + 1) ** 0.5, 1 / (deg[i] + 1) ** 0.5] for j, i in zip(s, d)],
                        dtype=torch.float64).reshape(-1, 2)


MONET_CONFIGS = [
    ({"pseudo": "edge.e"}, {}),
    ({"pseudo": "degree"}, {}),
    ({"pseudo": "edge.e", "aggr": "sum", "root_weight": False, "bias": False},
     {"aggr": "add", "root_weight": False, "bias": False}),
    ({"pseudo": "edge.e", "aggr": "max"}, {"aggr": "max"}),
    ({"pseudo": "edge.e", "separate_gaussians": True}, {"separate_gaussians": True}),
    ({"pseudo": "degree", "separate_gaussians": True, "aggr": "sum"}, {"separate_gaussians": True, "aggr": "add"}),
]


@pytest.mark.parametrize("ours, theirs", MONET_CONFIGS)
@pytest.mark.parametrize("name, g", CASES, ids=IDS)
def test_monet_matches_gmm_conv(name, g, ours, theirs):
    pseudo = _degree_pseudo_by_hand(g) if ours["pseudo"] == "degree" else g["edge.e"]
    block = MoNet.build({"out_dim": 4, "kernel_size": 3, **ours}, {"node.h": D, "edge.e": 3}).double()
    ref = pyg.GMMConv(D, 4, dim=pseudo.size(1), kernel_size=3, **theirs).double()
    if not theirs.get("root_weight", True):
        ref.root = None  # PyG 2.8.1 reads `self.root` in forward but never sets it when root_weight=False
    for k in ("g", "mu", "sigma"):
        getattr(block, k).data.copy_(getattr(ref, k))
    if block.root is not None:
        block.root.weight.data.copy_(ref.root.weight)
    if block.bias is not None:
        ref.bias.data.normal_()
        block.bias.data.copy_(ref.bias)
    _close(block(g, dict(g.fields))["node.h"], ref(g["node.h"], g.edge_index, pseudo))


def test_monet_gradients_match_gmm_conv():
    g = random_graph(30, 120, D, 3, seed=7)
    block = MoNet.build({"out_dim": 4, "pseudo": "edge.e"}, {"node.h": D, "edge.e": 3}).double()
    ref = pyg.GMMConv(D, 4, dim=3, kernel_size=3).double()
    for k in ("g", "mu", "sigma"):
        getattr(block, k).data.copy_(getattr(ref, k))
    block.root.weight.data.copy_(ref.root.weight)
    e = g["edge.e"].clone().requires_grad_(True)
    e_ref = e.detach().clone().requires_grad_(True)
    out = block(g, {"node.h": g["node.h"], "edge.e": e})["node.h"]
    out_ref = ref(g["node.h"], g.edge_index, e_ref)
    gout = torch.randn_like(out)
    out.backward(gout)
    out_ref.backward(gout)
    _close(e.grad, e_ref.grad)
    _close(block.mu.grad, ref.mu.grad)
    _close(block.sigma.grad, ref.sigma.grad)
