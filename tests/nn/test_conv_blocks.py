"""Conv blocks: permutation equivariance, graphs without edges, type errors, caching, specs."""

from pathlib import Path

import pytest
import torch

from graphdl.compile.compiler import compile_spec, plan_spec
from graphdl.data.graph import Graph, collate
from graphdl.errors import InferenceError, SpecError
from graphdl.nn.base import BLOCKS, load_builtin_blocks
from graphdl.nn.conv import GCN, GIN, GINE, SAGE, GatedGCN, MoNet, gcn_norm
from graphdl.spec.model import parse_spec_text
from graphdl.testing.graph_cases import graph_cases, permute_graph, random_graph, random_node_permutation
from graphdl.testing.tolerance import roundoff

D = 6
FIELDS = {"node.h": D, "edge.e": D, "edge.w": 1}

CONFIGS = [
    ("gcn", GCN, {"out_dim": 5}),
    ("gcn_weighted_improved", GCN, {"out_dim": 5, "edge_weight": "edge.w", "improved": True}),
    ("gcn_raw", GCN, {"out_dim": 5, "normalize": False}),
    ("sage_mean", SAGE, {"out_dim": 5, "normalize": True}),
    ("sage_sum", SAGE, {"out_dim": 5, "aggr": "sum"}),
    ("sage_max_pool", SAGE, {"out_dim": 5, "aggr": "max_pool"}),
    ("gin", GIN, {"out_dim": 5, "train_eps": True, "eps": 0.2}),
    ("gine", GINE, {"out_dim": 5, "norm": "layer"}),
    ("gine_projected", GINE, {"out_dim": 5, "project_edges": True, "edge_input": "edge.w"}),
    ("gated_gcn", GatedGCN, {"out_dim": D}),
    ("gated_gcn_core", GatedGCN, {"out_dim": 5, "edge_gates": False, "update_edges": False, "skip": False}),
    ("monet_degree", MoNet, {"out_dim": 5, "pseudo_dim": 2}),
    ("monet_edge_max", MoNet, {"out_dim": 5, "pseudo": "edge.e", "aggr": "max"}),
    ("monet_separate", MoNet, {"out_dim": 5, "pseudo": "edge.w", "separate_gaussians": True}),
]
CONFIG_IDS = [c[0] for c in CONFIGS]


def _graph(g: Graph) -> Graph:
    gen = torch.Generator().manual_seed(g.num_edges)
    w = torch.rand(g.num_edges, 1, generator=gen, dtype=torch.float64) + 0.1
    return g.replace(edge__w=w, edge__e=torch.randn(g.num_edges, D, generator=gen, dtype=torch.float64))


def _build(cls, params):
    torch.manual_seed(0)
    block = cls.build(params, FIELDS).double()
    for m in block.modules():  # non-trivial affine norms and biases
        for name in ("bias",):
            t = getattr(m, name, None)
            if isinstance(t, torch.nn.Parameter):
                t.data.normal_()
    return block


@pytest.mark.parametrize("name, cls, params", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("case", ["random_mixed", "batch"])
def test_permutation_equivariance(name, cls, params, case):
    g = _graph(dict(graph_cases(feat_dim=D, edge_dim=D))[case])
    block = _build(cls, params)  # training mode: batch statistics are permutation invariant
    out = block(g, dict(g.fields))
    pg = permute_graph(g, random_node_permutation(g, seed=1))
    out_p = block(pg.graph, dict(pg.graph.fields))
    assert set(out) == set(out_p)
    for k, v in out.items():
        perm = pg.node_perm if k.startswith("node.") else pg.edge_perm
        # float64, |out| ≤ 9, the same sums in another order: measured ≤ 2e-15; 1e-10 fails a float32 step
        assert torch.allclose(out_p[k], v[perm], atol=1e-10, rtol=0), k
        assert not torch.allclose(v, v.roll(1, 0)), f"{k}: output does not depend on the node"


def _isolated_formula(name, block, x):
    """What each block gives a node with no in-edges (eval mode)."""
    if name.startswith("gcn"):
        if block.p.normalize:  # only its own loop: coefficient λ / λ = 1
            return block.lin(x) + block.bias
        return block.bias.expand(x.size(0), -1)
    if name.startswith("sage"):
        out = block.lin_l.bias + block.lin_r(x)
        return torch.nn.functional.normalize(out, dim=-1) if block.p.normalize else out
    if name.startswith("gin"):
        return block.mlp((1 + block.eps) * x)
    if name.startswith("gated_gcn"):
        h = block.bias + (block.U(x) if block.U is not None else 0)
        if block.bn_h is not None:
            h = block.bn_h(h)
        h = block.act(h)
        return x + h if block.p.skip else h
    if name.startswith("monet"):
        return block.root(x) + block.bias
    raise AssertionError(name)


@pytest.mark.parametrize("name, cls, params", CONFIGS, ids=CONFIG_IDS)
def test_graph_without_edges_gives_the_isolated_node_formula(name, cls, params):
    g = _graph(dict(graph_cases(feat_dim=D, edge_dim=D))["no_edges"])
    block = _build(cls, params)
    block.eval()
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    x = g["node.h"].clone().requires_grad_(True)
    out = block(g, {**g.fields, "node.h": x})
    h = out["node.h"]
    assert torch.isfinite(h).all()
    # float64, |h| ≤ 4, the same linear maps by hand: measured ≤ 4e-16; 1e-12 ≈ 1100 eps·|h|
    assert torch.allclose(h, _isolated_formula(name, block, x), atol=1e-12, rtol=0)
    h.sum().backward()
    assert torch.isfinite(x.grad).all()
    if "edge.e" in out:
        assert out["edge.e"].shape == (0, block.p.out_dim)


def test_no_edges_in_training_mode_runs_batch_norm_on_nodes_only():
    g = _graph(dict(graph_cases(feat_dim=D, edge_dim=D))["no_edges"])
    out = _build(GatedGCN, {"out_dim": D})(g, dict(g.fields))
    assert torch.isfinite(out["node.h"]).all() and out["edge.e"].shape == (0, D)


# ---------------------------------------------------------------------------- lowering
@pytest.mark.parametrize("side", ["src", "dst"])
def test_gather_backward_is_exact_and_twice_differentiable(side):
    from graphdl.nn.conv import _gather

    g = dict(graph_cases(feat_dim=3, edge_dim=1))["random_mixed"]
    x = torch.randn(g.num_nodes, 3, dtype=torch.float64, requires_grad=True)
    assert g._cache.get(("gather_selector", side, torch.float64)) is None
    # gradcheck's defaults: a gather is linear (no truncation error), round-off only (measured ≤ 3e-10)
    torch.autograd.gradcheck(lambda t: _gather(g, t, side), (x,))
    torch.autograd.gradgradcheck(lambda t: _gather(g, t, side), (x,))
    assert g._cache.get(("gather_selector", side, torch.float64)) is not None  # the selector lowering ran
    index = g.src if side == "src" else g.dst
    w = torch.randn(g.num_edges, 3, dtype=torch.float64)
    (grad,) = torch.autograd.grad((_gather(g, x, side) * w).sum(), x)
    # the same float64 additions in another order: ≤ deg·eps·Σ|w| ≪ 1e-12 (measured 0)
    assert torch.allclose(grad, torch.zeros_like(x).index_add_(0, index, w), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name, cls, params", [c for c in CONFIGS if c[0] in
                                               ("gine", "gated_gcn", "sage_max_pool", "monet_degree", "gcn")],
                         ids=["gcn", "sage_max_pool", "gine", "gated_gcn", "monet_degree"])
def test_gradcheck_small_graph(name, cls, params):
    g = _graph(dict(graph_cases(feat_dim=D, edge_dim=D))["multi_edges"])
    block = _build(cls, params).eval()
    x = g["node.h"].clone().requires_grad_(True)
    e = g["edge.e"].clone().requires_grad_(True)

    def fn(x, e):
        return tuple(block(g, {**g.fields, "node.h": x, "edge.e": e}).values())

    torch.autograd.gradcheck(fn, (x, e))


@pytest.mark.parametrize("name, g", graph_cases(feat_dim=2, edge_dim=1), ids=lambda v: v if isinstance(v, str) else "")
def test_looped_csr_is_a_plus_identity_with_sorted_columns(name, g):
    from graphdl.nn.conv import _looped_pair

    n, e = g.num_nodes, g.num_edges
    csr, csr_t, take = _looped_pair(g)
    dense = torch.zeros(n, n)
    dense.index_put_((g.dst, g.src), torch.ones(e), accumulate=True)
    dense += torch.eye(n)
    for m, want in ((csr, dense), (csr_t, dense.t())):
        rowptr = m.rowptr.long()
        rows = torch.repeat_interleave(torch.arange(n), rowptr[1:] - rowptr[:-1])
        assert torch.equal(rows, m.row)
        got = torch.zeros(n, n).index_put_((m.row, m.col.long()), torch.ones(e + n), accumulate=True)
        assert torch.equal(got, want)
        key = m.row * max(n, 1) + m.col.long()  # columns ascending within each row
        assert bool((key[1:] >= key[:-1]).all())
    # values in cat([edges, diagonal]) order land on their entries, in both orders
    vals = torch.cat([torch.arange(e, dtype=torch.float64) + 1, -(torch.arange(n, dtype=torch.float64) + 1)])
    v = vals.index_select(0, take)
    loop = v < 0
    assert int(loop.sum()) == n
    assert torch.equal((-v[loop] - 1).long(), csr.row[loop]) and torch.equal(csr.col.long()[loop], csr.row[loop])
    edge_at = torch.where(v > 0, v.long() - 1, -1)
    ok = edge_at >= 0
    assert torch.equal(g.src[edge_at[ok]], csr.col.long()[ok]) and torch.equal(g.dst[edge_at[ok]], csr.row[ok])
    assert torch.equal(csr.row[csr_t.perm], csr_t.col.long()) and torch.equal(csr.col.long()[csr_t.perm], csr_t.row)


@pytest.mark.parametrize("kernels", ["on", "off"])
def test_gine_fused_aggregate_is_twice_differentiable(kernels, monkeypatch):
    if kernels == "off":
        monkeypatch.setenv("GRAPHDL_KERNELS", "0")
    g = _graph(dict(graph_cases(feat_dim=D, edge_dim=D))["multi_edges"])
    block = _build(GINE, {"out_dim": 3, "hidden": [4], "norm": None, "act": "tanh"})
    x = g["node.h"].clone().requires_grad_(True)
    e = g["edge.e"].clone().requires_grad_(True)

    def fn(x, e):
        return block(g, {"node.h": x, "edge.e": e})["node.h"]

    torch.autograd.gradcheck(fn, (x, e))
    torch.autograd.gradgradcheck(fn, (x, e))
    # which fused CPU path ran: the C++ kernel (no selectors built) or the selector products
    assert (("gather_selector", "dst", torch.float64) in g._cache) == (kernels == "off")


def test_gcn_caches_graph_only_normalisation_on_the_batch():
    g = random_graph(20, 60, D, 1, seed=2)
    block = GCN.build({"out_dim": 4}, {"node.h": D}).double()
    out1 = block(g, dict(g.fields))["node.h"]
    keys = [k for k in g._cache if isinstance(k, tuple) and k[0] == "gcn_norm"]
    assert keys == [("gcn_norm", False, True, torch.float64, g.device)]
    values, diag = g._cache[keys[0]]
    ref_values, ref_diag = gcn_norm(g, None, dtype=torch.float64)
    assert torch.equal(values, ref_values) and torch.equal(diag, ref_diag)
    assert torch.equal(block(g, dict(g.fields))["node.h"], out1)
    # a different setting gets its own entry; edge weights are never cached
    GCN.build({"out_dim": 4, "improved": True}, {"node.h": D}).double()(g, dict(g.fields))
    GCN.build({"out_dim": 4, "edge_weight": "edge.e"}, {"node.h": D, "edge.e": 1}).double()(g, dict(g.fields))
    assert len([k for k in g._cache if isinstance(k, tuple) and k[0] == "gcn_norm"]) == 2


def test_gcn_norm_rows_sum_to_one_on_a_regular_graph():
    # ring with both directions: every node has in-degree 2, +1 loop -> coefficients 1/3
    n = 6
    src = torch.arange(n).repeat(2)
    dst = torch.cat([(torch.arange(n) + 1) % n, (torch.arange(n) - 1) % n])
    g = Graph(torch.stack([src, dst]), n)
    values, diag = gcn_norm(g, dtype=torch.float64)
    # deg^-1/2 · deg^-1/2 of exact integer degrees: a few ulps of 1/3 (measured 1 ulp); factor 8
    assert torch.allclose(values, torch.full_like(values, 1 / 3), atol=roundoff(1.0, 8), rtol=0)
    assert torch.allclose(diag, torch.full_like(diag, 1 / 3), atol=roundoff(1.0, 8), rtol=0)


def test_describe_names_the_lowering():
    assert GCN.build({"out_dim": 4}, {"node.h": D}).describe_extra() == "spmm over A+I (CSR)"
    weighted = GCN.build({"out_dim": 4, "edge_weight": "edge.w"}, {"node.h": D, "edge.w": 1})
    assert weighted.describe_extra() == "spmm (CSR) + diag self-loops"
    assert SAGE.build({"out_dim": 4, "aggr": "max_pool"}, {"node.h": D}).describe_extra() == "gather + segment max"
    assert GIN.build({"out_dim": 4}, {"node.h": D}).describe_extra() == "spmm over A+(1+eps)I (CSR)"
    assert GIN.build({"out_dim": 4, "train_eps": True}, {"node.h": D}).describe_extra() == "spmm sum (CSR)"
    assert MoNet.build({"out_dim": 4}, {"node.h": D}).describe_extra() == "spmm mean (CSR) x 3 kernels"


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("cls, params, fields, needle", [
    (GINE, {"out_dim": 4}, {"node.h": 6, "edge.e": 3},
     "`edge.e` has dim 3 and `node.h` has dim 6; set `project_edges: true`"),
    (GINE, {"out_dim": 4}, {"node.h": 6}, "needs field `edge.e`, but the stack has none"),
    (GatedGCN, {"out_dim": 6}, {"node.h": 6},
     "the stack has no `edge.e`; set `edge_input` to an edge field, embed one first, or set `edge_gates: false`"),
    (GatedGCN, {"out_dim": 8}, {"node.h": 6, "edge.e": 8}, "adds `node.h` (dim 6) to the output (dim 8)"),
    (GatedGCN, {"out_dim": 6}, {"node.h": 6, "edge.e": 3}, "adds `edge.e` (dim 3) to the updated edges (dim 6)"),
    (GCN, {"out_dim": 4, "edge_weight": "edge.e"}, {"node.h": 6, "edge.e": 3}, "must be one weight per edge (dim 1)"),
    (GCN, {"out_dim": 4, "normalize": False, "add_self_loops": True}, {"node.h": 6},
     "cannot add self-loops without normalisation"),
    (SAGE, {"out_dim": 4, "input": "graph.u"}, {"graph.u": 6}, "`input: graph.u` is a graph field"),
    (MoNet, {"out_dim": 4, "pseudo": "node.p"}, {"node.h": 6, "node.p": 2}, "`pseudo: node.p` must be an edge field"),
    (GIN, {"out_dim": 4}, {"node.h": "1o"}, "cannot read field `node.h` of type 1x1o"),
])
def test_inference_errors_say_what_and_how(cls, params, fields, needle):
    with pytest.raises(InferenceError) as err:
        cls.build(params, fields)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_spec_error_points_at_the_layer():
    text = """graphdl: 1
inputs: {node.h: 6, edge.e: 3}
model:
  layers:
    - {type: gine, out_dim: 4}
"""
    with pytest.raises(SpecError) as err:
        plan_spec(parse_spec_text(text))
    assert str(err.value).startswith("<string>:5:")
    assert "model.layers[0]" in str(err.value) and "project_edges: true" in str(err.value)


def test_sage_rejects_unknown_aggregator_with_choices():
    with pytest.raises(Exception) as err:
        SAGE.build({"out_dim": 4, "aggr": "maxpool"}, {"node.h": 6})
    assert "max_pool" in str(err.value)


def test_blocks_are_registered_with_capabilities():
    load_builtin_blocks()
    names = {"gcn": GCN, "sage": SAGE, "gin": GIN, "gine": GINE, "gated_gcn": GatedGCN, "monet": MoNet}
    for name, cls in names.items():
        assert BLOCKS[name] is cls and cls.family == "conv"
    assert [n for n, c in names.items() if c.uses_edge_features] == ["gine", "gated_gcn", "monet"]
    assert GCN.uses_edge_weight


# ------------------------------------------------------------------------------- specs
SPEC_DIR = Path(__file__).resolve().parents[2] / "specs"
SPECS = {
    # spec: (node dim, edge dim or None, output field, output width)
    "gcn": (1433, None, "node.y", 7),
    "sage": (602, None, "node.y", 41),
    "sage_pool": (3, None, "graph.y", 2),
    "gin": (7, None, "graph.y", 2),
    "gine": (9, 3, "graph.y", 1),
    "gated_gcn": (28, 4, "graph.y", 1),
    "monet": (28, None, "graph.y", 1),
}

# the last GatedGCN layer's edge update feeds nothing downstream
UNUSED = {"gated_gcn": ["blocks.5.bn_e.bias", "blocks.5.bn_e.weight"]}


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_specs_compile_and_run_on_a_collated_batch(spec):
    node_dim, edge_dim, out_key, width = SPECS[spec]
    plan = plan_spec(SPEC_DIR / f"{spec}.yaml")
    assert dict(plan.outputs) == {out_key: plan.outputs[out_key]} and plan.outputs[out_key].dim == width
    model = compile_spec(plan)
    graphs = []
    for i, (n, e) in enumerate([(7, 14), (5, 8), (9, 20)]):
        g = random_graph(n, e, node_dim, edge_dim or 1, seed=i, dtype=torch.float32)
        if edge_dim is None:
            g = Graph(g.edge_index, n, {"node.h": g["node.h"]}, sort=False)
        graphs.append(g)
    batch = collate(graphs)
    out = model(batch)[out_key]
    rows = batch.num_graphs if out_key.startswith("graph.") else batch.num_nodes
    assert out.shape == (rows, width) and torch.isfinite(out).all()
    out.square().mean().backward()
    unused = sorted(k for k, p in model.named_parameters() if p.grad is None)
    assert unused == UNUSED.get(spec, [])
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    one = model(graphs[1])[out_key]
    # batching is consistent: the second graph alone gives its rows of the batch (eval mode)
    full = model(batch)[out_key]
    sl = slice(1, 2) if out_key.startswith("graph.") else slice(7, 12)
    # float32 spec models, |out| ≤ 2: the same rows in a larger batch (other summation order), measured
    # ≤ 1.2e-7 ≈ 1 eps32·|out|; atol 1e-5 + rtol 1e-5 ≈ 84 eps32
    assert torch.allclose(one, full[sl], atol=1e-5)


@pytest.mark.parametrize("name, cls, params", [("gcn", GCN, {"out_dim": 5}), ("gin_fixed_eps", GIN, {"out_dim": 5, "eps": 0.3})],
                         ids=["gcn", "gin_fixed_eps"])
@pytest.mark.parametrize("case", ["multi_edges", "batch"])
def test_a_batch_switches_to_the_looped_product_after_its_uses_pay_for_it(name, cls, params, case):
    """A fresh batch runs the plain CSR product plus the diagonal (nothing to build); the
    :data:`LOOPED_AFTER_USES`-th use of the same batch builds ``A + I`` and runs over it from
    then on. Both paths are the same sum in another order: float64, ≤ (deg + 1)·eps relative
    per output (roundoff of the largest row), far below 1e-12 here."""
    from graphdl.nn.conv import LOOPED_AFTER_USES

    g = _graph(dict(graph_cases(feat_dim=D, edge_dim=D))[case])
    block = _build(cls, params).eval()
    x = g["node.h"].clone().requires_grad_(True)
    gr = torch.randn(g.num_nodes, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    results = []
    for use in range(1, LOOPED_AFTER_USES + 2):
        out = block(g, {"node.h": x})["node.h"]
        (dx,) = torch.autograd.grad(out, x, gr)
        results.append((out.detach(), dx))
        assert ("csr_loops_int32" in g._cache) == (use >= LOOPED_AFTER_USES), use
    for out, dx in results[1:]:
        assert torch.allclose(out, results[0][0], rtol=0, atol=1e-12)
        assert torch.allclose(dx, results[0][1], rtol=0, atol=1e-12)
    # and a batch seen once never pays for A + I
    fresh = _graph(dict(graph_cases(feat_dim=D, edge_dim=D))[case])
    block(fresh, {"node.h": fresh["node.h"]})
    assert "csr_loops_int32" not in fresh._cache
