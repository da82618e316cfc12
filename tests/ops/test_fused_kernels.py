"""graphdl's fused CPU edge kernels (graphdl/ops/csrc/edge_kernels.cpp) against torch-op references.

float64: forward equal to the reference to 1e-12 (sums of a few O(1) terms: round-off ~1e-15),
gradcheck and gradgradcheck of every autograd function (first derivatives from the kernels,
second from the reference). float32: each output element within the rounding bound
``(6 + d) · u · Σ_k |term_k|`` of its float64 value (d = the row's entries, u = 2^-24: each term
costs at most ~6 roundings — the add, exp (Cephes' polynomial, about 2 ulp), the sigmoid's add and
division, the product — and recursive summation of d terms at most (d - 1) u Σ|t|).
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from graphdl.data.graph import Graph
from graphdl.nn.base import BLOCKS, load_builtin_blocks
from graphdl.nn.conv import _csr_pair, gated_aggregate_reference
from graphdl.ops import kernels
from graphdl.ops.fused import (
    edge_gather_add,
    edge_gather_add_reference,
    gated_edge,
    gated_sum,
    gated_sum_reference,
    max_aggregate,
    max_aggregate_reference,
    relu_edge_sum,
)

U32 = 2.0**-24


def _graph(n=7, seed=0):
    """Multi-edges, self-loops, a node without in-edges (0) and one without out-edges (n - 1)."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n - 1, (30,), generator=gen)
    dst = torch.randint(1, n, (30,), generator=gen)
    src = torch.cat([src, torch.tensor([3, 3, 2])])
    dst = torch.cat([dst, torch.tensor([3, 5, 5])])
    return Graph(edge_index=torch.stack([src, dst]), num_nodes=n)


def test_the_kernels_build_on_this_machine():
    # CI has a C++ compiler: a silent fallback here would hide a broken kernel behind torch ops
    assert kernels.build(), "the fused kernels did not build (see the warning above)"
    assert kernels.usable(torch.zeros(1))


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("GRAPHDL_KERNELS", "0")
    assert not kernels.usable(torch.zeros(1))
    assert not kernels.usable(torch.zeros(1, dtype=torch.float16))


def _ref_relu(x, e, g):
    msg = torch.relu(x[g.src] + e)
    return torch.zeros(g.num_nodes, x.size(1), dtype=x.dtype).index_add(0, g.dst, msg)


def test_relu_edge_sum_float64_and_gradients():
    g = _graph()
    x = torch.randn(g.num_nodes, 5, dtype=torch.float64, requires_grad=True)
    e = torch.randn(g.num_edges, 5, dtype=torch.float64, requires_grad=True)
    csr, csr_t = _csr_pair(g)
    torch.testing.assert_close(relu_edge_sum(x, e, csr, csr_t), _ref_relu(x, e, g), rtol=0, atol=1e-12)
    assert gradcheck(lambda a, b: relu_edge_sum(a, b, csr, csr_t), (x, e))
    assert gradgradcheck(lambda a, b: relu_edge_sum(a, b, csr, csr_t), (x, e))


def test_gated_sum_float64_and_gradients():
    g = _graph()
    csr, csr_t = _csr_pair(g)
    k, q, v = (torch.randn(g.num_nodes, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    torch.testing.assert_close(gated_sum(k, q, v, csr, csr_t), gated_sum_reference(k, q, v, csr), rtol=0, atol=1e-12)
    assert gradcheck(lambda a, b, c: gated_sum(a, b, c, csr, csr_t), (k, q, v))
    assert gradgradcheck(lambda a, b, c: gated_sum(a, b, c, csr, csr_t), (k, q, v))


@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("with_ce", [True, False])
def test_gated_edge_float64_and_gradients(eps, with_ce):
    g = _graph()
    csr, csr_t = _csr_pair(g)
    ax, bx, vx = (torch.randn(g.num_nodes, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ce = torch.randn(g.num_edges, 3, dtype=torch.float64, requires_grad=True) if with_ce else None
    agg, e_hat = gated_edge(ax, bx, vx, ce, csr, csr_t, eps)
    ref_agg, ref_e = gated_aggregate_reference(ax, bx, vx, ce, g.src, g.dst, g.num_nodes, eps)
    torch.testing.assert_close(agg, ref_agg, rtol=0, atol=1e-12)
    torch.testing.assert_close(e_hat, ref_e, rtol=0, atol=1e-12)
    ins = (ax, bx, vx) + ((ce,) if with_ce else ())

    def f(*t):
        return gated_edge(t[0], t[1], t[2], t[3] if with_ce else None, csr, csr_t, eps)

    assert gradcheck(f, ins)
    assert gradgradcheck(f, ins)
    # only the edge output's gradient flows (the aggregate unused), and only the aggregate's
    assert gradcheck(lambda *t: f(*t)[1].sin().sum(), ins)
    assert gradcheck(lambda *t: f(*t)[0], ins)


def test_max_aggregate_float64_gradients_ties_and_nan():
    g = _graph()
    csr, csr_t = _csr_pair(g)
    x = torch.randn(g.num_nodes, 5, dtype=torch.float64, requires_grad=True)
    out = max_aggregate(x, csr, csr_t)
    torch.testing.assert_close(out, max_aggregate_reference(x, csr), rtol=0, atol=0)  # a max is exact
    assert (out[0] == 0).all()  # node 0 has no in-edges
    assert gradcheck(lambda a: max_aggregate(a, csr, csr_t), (x,))
    assert gradgradcheck(lambda a: max_aggregate(a, csr, csr_t), (x,))
    # ties (ReLU zeros, equal rows, multi-edges): the gradient is split as segment_max splits it
    xt = torch.relu(torch.randn(g.num_nodes, 5, dtype=torch.float64)).round()
    xt[2] = xt[4]
    xt.requires_grad_()
    w = torch.randn(g.num_nodes, 5, dtype=torch.float64)
    (ga,) = torch.autograd.grad((max_aggregate(xt, csr, csr_t) * w).sum(), xt)
    (gb,) = torch.autograd.grad((max_aggregate_reference(xt, csr) * w).sum(), xt)
    torch.testing.assert_close(ga, gb, rtol=0, atol=1e-14)
    # NaN in a message: that destination's maximum is NaN, never a finite value
    xn = x.detach().clone()
    j = int(g.src[0])
    xn[j, 1] = float("nan")
    out = max_aggregate(xn, csr, csr_t)
    hit = g.dst[g.src == j].unique()
    assert torch.isnan(out[hit, 1]).all() and not torch.isnan(out[:, 0]).any()


def test_gated_edge_writing_into_ce_gives_the_same_values_and_gradients():
    g = _graph()
    csr, csr_t = _csr_pair(g)
    ax, bx, vx = (torch.randn(g.num_nodes, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    e = torch.randn(g.num_edges, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)

    def f(overwrite, *t):
        ce = t[3] @ t[4]  # a fresh non-leaf: may be overwritten
        agg, e_hat = gated_edge(t[0], t[1], t[2], ce, csr, csr_t, 1e-6, overwrite_ce=overwrite)
        if overwrite:
            assert e_hat.data_ptr() == ce.data_ptr()
        return agg, e_hat

    ins = (ax, bx, vx, e, w)
    for a, b in zip(f(True, *ins), f(False, *ins)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert gradcheck(lambda *t: f(True, *t), ins)
    # a leaf that requires grad is never overwritten
    leaf = torch.randn(g.num_edges, 3, dtype=torch.float64, requires_grad=True)
    before = leaf.detach().clone()
    gated_edge(ax, bx, vx, leaf, csr, csr_t, None, overwrite_ce=True)
    assert torch.equal(leaf.detach(), before)


@pytest.mark.parametrize("parts", ["bds", "ds", "bd", "b", "s"])
def test_edge_gather_add_float64_and_gradients(parts):
    g = _graph()
    csr, csr_t = _csr_pair(g)
    gen = torch.Generator().manual_seed(2)

    def mk(rows, on):
        return torch.randn(rows, 3, generator=gen, dtype=torch.float64, requires_grad=True) if on else None

    base, yd, ys = mk(g.num_edges, "b" in parts), mk(g.num_nodes, "d" in parts), mk(g.num_nodes, "s" in parts)
    bias = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    ins = [t for t in (base, yd, ys, bias) if t is not None]

    def split(t):
        it = iter(t)
        return [next(it) if x is not None else None for x in (base, yd, ys, bias)]

    torch.testing.assert_close(edge_gather_add(base, yd, ys, bias, csr, csr_t),
                               edge_gather_add_reference(base, yd, ys, bias, csr), rtol=0, atol=1e-14)
    assert gradcheck(lambda *t: edge_gather_add(*split(t), csr, csr_t), ins)
    assert gradgradcheck(lambda *t: edge_gather_add(*split(t), csr, csr_t).pow(2), ins)
    if base is not None:  # written into a fresh, non-leaf base: the same values and gradients
        def into(*t):
            b, d, s_, bi = split(t)
            return edge_gather_add(b * 1.0, d, s_, bi, csr, csr_t, overwrite_base=True)

        torch.testing.assert_close(into(*ins), edge_gather_add(base, yd, ys, bias, csr, csr_t), rtol=0, atol=0)
        assert gradcheck(into, ins)


def test_gns_processor_step_equals_its_torch_op_path(monkeypatch):
    """graph_network with an edge MLP over [edge, dst, src] (the GNS processor): the fused first
    layer and segment sums against GRAPHDL_KERNELS=0."""
    _assert_block_equals_torch_op_path("graph_network", {
        "node_input": "node.h", "edge_input": "edge.e",
        "edge_model": {"inputs": ["edge", "dst", "src"], "hidden": [8], "out_dim": 6, "out_norm": "layer"},
        "node_model": {"inputs": ["agg", "node"], "hidden": [8], "out_dim": 6, "out_norm": "layer"},
        "edge_to_node": "sum"}, width=6, seed=4, monkeypatch=monkeypatch)


def _assert_block_equals_torch_op_path(block_name, params, width, seed, monkeypatch):
    """Build ``block_name`` in float64, run it with the kernels and with ``GRAPHDL_KERNELS=0``:
    outputs and the gradients of inputs and parameters equal to float64 round-off (sums over a
    few edges in another order: ~1e-15)."""
    load_builtin_blocks()
    g = _graph(n=9, seed=seed)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(g.num_nodes, width, generator=gen, dtype=torch.float64, requires_grad=True)
    ef = torch.randn(g.num_edges, width, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    block = BLOCKS[block_name].build(params, {"node.h": width, "edge.e": width}).double()

    def run():
        out = block(g, {"node.h": x, "edge.e": ef})
        loss = sum((v * torch.linspace(-1, 1, v.numel(), dtype=v.dtype).view_as(v)).sum() for v in out.values())
        grads = torch.autograd.grad(loss, [x, ef] + list(block.parameters()), allow_unused=True)
        return list(out.values()) + list(grads)

    with_kernels = run()
    monkeypatch.setenv("GRAPHDL_KERNELS", "0")
    without = run()
    assert len(with_kernels) == len(without)
    for a, b in zip(with_kernels, without):
        if a is None or b is None:
            assert a is None and b is None
            continue
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _bound(terms_abs_sum: torch.Tensor, degree: torch.Tensor) -> torch.Tensor:
    return (6 + degree.view(-1, 1).double()) * U32 * terms_abs_sum


def test_float32_within_the_rounding_bound():
    torch.manual_seed(1)
    n, c = 300, 16
    src = torch.randint(0, n, (3000,))
    dst = torch.randint(0, n, (3000,))
    g = Graph(edge_index=torch.stack([src, dst]), num_nodes=n)
    csr, csr_t = _csr_pair(g)
    deg = torch.bincount(g.dst, minlength=n)
    k, q, v = (torch.randn(n, c) * 4 for _ in range(3))
    out = gated_sum(k, q, v, csr, csr_t).double()
    k64, q64, v64 = k.double(), q.double(), v.double()
    ref = gated_sum_reference(k64, q64, v64, csr)
    terms = torch.sigmoid(k64[g.dst] + q64[g.src]) * v64[g.src]
    abs_sum = torch.zeros(n, c, dtype=torch.float64).index_add(0, g.dst, terms.abs())
    assert ((out - ref).abs() <= _bound(abs_sum, deg)).all()
    x, e = torch.randn(n, c), torch.randn(g.num_edges, c)
    out = relu_edge_sum(x, e, csr, csr_t).double()
    ref = _ref_relu(x.double(), e.double(), g)
    assert ((out - ref).abs() <= _bound(ref.abs(), deg)).all()


def test_sigmoid_over_the_whole_float_range_and_nan():
    # one edge per node: out = sigmoid(k + q) * 1, compared with float64 sigmoid
    n = 4001
    z = torch.cat([torch.linspace(-120, 120, n - 3), torch.tensor([float("inf"), -float("inf"), float("nan")])])
    g = Graph(edge_index=torch.stack([torch.arange(n), torch.arange(n)]), num_nodes=n)
    csr, csr_t = _csr_pair(g)
    out = gated_sum(z.view(-1, 1), torch.zeros(n, 1), torch.ones(n, 1), csr, csr_t).view(-1)
    ref = torch.sigmoid(z.double())
    finite = ~torch.isnan(z)
    # relative error of 1 / (1 + exp(-z)): exp's ~2 ulp plus the add and the division; below
    # exp's clamp at -87 (z > 87, sigmoid = 1 in float32) and beyond 88 (sigmoid < 1e-38) absolute
    err = (out.double() - ref).abs()[finite]
    assert (err <= 8 * U32 * ref[finite] + 1e-37).all(), err.max()
    assert torch.isnan(out[~finite]).all()  # NaN in, NaN out: never silently finite


@pytest.mark.parametrize("name, params", [
    ("gine", {"out_dim": 8}),
    ("gated_gcn", {"out_dim": 8, "edge_input": "edge.e"}),  # edge gates, normalised, batch norm, edge update
    ("gated_gcn", {"out_dim": 8, "edge_gates": False, "normalize_gates": False, "update_edges": False,
                   "skip": False}),  # ResGatedGraphConv's form
    ("sage", {"out_dim": 8, "aggr": "max_pool"}),
    ("sage", {"out_dim": 8, "aggr": "max"}),
], ids=["gine", "gated_gcn", "res_gated", "sage_max_pool", "sage_max"])
def test_layers_agree_with_their_torch_op_paths(name, params, monkeypatch):
    """The block with the kernels and with GRAPHDL_KERNELS=0 (selector / gather paths)."""
    _assert_block_equals_torch_op_path(name, params, width=8, seed=3, monkeypatch=monkeypatch)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("n, e", [(50, 400), (1000, 30), (5, 0), (0, 0)])
def test_counting_sort_transpose_equals_the_stable_sort(dtype, n, e, monkeypatch):
    from graphdl.ops.csr import CSR

    gen = torch.Generator().manual_seed(n + e)
    src = torch.randint(0, max(n, 1), (e,), generator=gen).to(dtype)
    dst = torch.randint(0, max(n, 1), (e,), generator=gen).sort().values.to(dtype)
    fast = CSR.from_sorted_cols(src, dst, n, n)
    monkeypatch.setenv("GRAPHDL_KERNELS", "0")
    slow = CSR.from_sorted_cols(src, dst, n, n)
    for f in ("rowptr", "col", "row", "perm"):
        a, b = getattr(fast, f), getattr(slow, f)
        assert torch.equal(a.long(), b.long()), f


def test_counting_sort_refuses_keys_outside_the_bins():
    with pytest.raises(RuntimeError, match=r"outside \[0, 3\)"):
        kernels.ops().counting_sort(torch.tensor([0, 3, 1]), torch.tensor([0, 1, 2]), 3)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("improved", [False, True])
@pytest.mark.parametrize("loops", [False, True])
def test_gcn_norm_kernel_equals_the_torch_op_path(weighted, improved, loops, monkeypatch):
    """Existing loops (node 3 has two: the last one's weight is its diagonal), a node without
    in-edges, isolated nodes: coefficients and diagonal equal to the torch-op path to 2 ulp
    (D^-1/2 as 1/sqrt in C++ against pow(-0.5): each may round differently by an ulp)."""
    from graphdl.nn.conv import gcn_norm

    g = _graph()
    w = torch.rand(g.num_edges, dtype=torch.float64) + 0.1 if weighted else None
    a = gcn_norm(g, w, improved=improved, add_self_loops=loops, dtype=torch.float64)
    monkeypatch.setenv("GRAPHDL_KERNELS", "0")
    b = gcn_norm(g, w, improved=improved, add_self_loops=loops, dtype=torch.float64)
    torch.testing.assert_close(a[0], b[0], rtol=4 * 2.0**-52, atol=0)
    assert (a[1] is None) == (b[1] is None) == (not loops)
    if loops:
        torch.testing.assert_close(a[1], b[1], rtol=4 * 2.0**-52, atol=0)


@pytest.mark.parametrize("n, rows", [(6, [0, 0, 2, 2, 2, 5]), (4, []), (3, [2, 2]), (5, [0, 1, 2, 3, 4])])
def test_rowptr_from_sorted_rows(n, rows, monkeypatch):
    from graphdl.ops.csr import _rowptr

    r = torch.tensor(rows, dtype=torch.long)
    fast = _rowptr(r, n)
    monkeypatch.setenv("GRAPHDL_KERNELS", "0")
    assert torch.equal(fast, _rowptr(r, n))
