"""CSR sparse x dense products: values, gradients (once and twice), fallbacks and errors."""

from __future__ import annotations

import importlib

import pytest
import torch

from graphdl.data.graph import Graph
from graphdl.errors import DataError
from graphdl.ops import CSR, gather_scatter_reference, sddmm, spmm

spmm_module = importlib.import_module("graphdl.ops.spmm")  # the package re-exports the function `spmm`

pyg_utils = pytest.importorskip("torch_geometric.utils")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# float64 against the dense, loop and PyG references (values and gradients): sums of ≤ 45 products
# of |x| ≤ 5 and |v| ≤ 1 carry ≤ 45·eps·Σ|terms| ≈ 1e-12 (measured ≤ 4e-15, outputs |y| ≤ 20;
# rtol covers the larger gradients of pow(2)). The default 1e-7 would pass a float32 step (≈ 6e-8).
F64 = {"rtol": 1e-12, "atol": 1e-12}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: a second intra-op thread only adds OpenMP spin-waits on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_graph(kind: str, seed: int = 0) -> Graph:
    """Awkward small graphs: isolated nodes, self-loops and multi-edges, or no edges at all."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "no_edges":
        return Graph(None, 5)
    if kind == "no_nodes":
        return Graph(None, 0)
    if kind == "single":
        return Graph([[0], [0]], 1)
    n, e = {"small": (9, 30), "dense": (6, 40)}[kind]
    active = n - 2  # nodes n-2 and n-1 stay isolated
    ei = torch.randint(0, active, (2, e), generator=gen)
    ei = torch.cat([ei, torch.tensor([[0, 0, 1, 3, 3], [0, 0, 1, 2, 2]])], 1)  # loops + multi-edges
    return Graph(ei, n)


KINDS = ["small", "dense", "no_edges", "no_nodes", "single"]


def dense_adjacency(csr: CSR, values: torch.Tensor | None, dtype) -> torch.Tensor:
    """``(rows, cols[, H])`` dense matrix built entry by entry (reference)."""
    shape = (csr.num_rows, csr.num_cols) + (tuple(values.shape[1:]) if values is not None else ())
    a = torch.zeros(shape, dtype=dtype)
    for k in range(csr.nnz):
        r, c = int(csr.row[k]), int(csr.col[k])
        a[r, c] += 1.0 if values is None else values[k]
    return a


def dense_product(csr, x, values, reduce):
    a = dense_adjacency(csr, values, x.dtype)
    if a.dim() == 3:  # heads
        out = torch.einsum("rch,chf->rhf", a, x)
    else:
        out = torch.einsum("rc,c...->r...", a, x)
    if reduce == "mean":
        deg = csr.degree().clamp(min=1).to(x.dtype)
        out = out / deg.view((-1,) + (1,) * (out.dim() - 1))
    return out


def inputs(g: Graph, layout: str, dtype=torch.float64, requires_grad=False):
    n, e = g.num_nodes, g.num_edges
    if layout == "plain":
        x, v = torch.randn(n, 5, dtype=dtype), None
    elif layout == "weighted":
        x, v = torch.randn(n, 5, dtype=dtype), torch.rand(e, dtype=dtype)
    elif layout == "heads_shared":
        x, v = torch.randn(n, 3, 4, dtype=dtype), torch.rand(e, dtype=dtype)
    else:  # "heads"
        x, v = torch.randn(n, 3, 4, dtype=dtype), torch.rand(e, 3, dtype=dtype)
    x.requires_grad_(requires_grad)
    if v is not None:
        v.requires_grad_(requires_grad)
    return x, v


LAYOUTS = ["plain", "weighted", "heads_shared", "heads"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_spmm_matches_dense_reference_and_pyg(kind, layout, reduce):
    g = random_graph(kind)
    csr = g.csr()
    x, v = inputs(g, layout)
    out = spmm(csr, x, v, reduce)
    assert out.shape == (g.num_nodes,) + tuple(x.shape[1:])
    torch.testing.assert_close(out, dense_product(csr, x, v, reduce), **F64)
    torch.testing.assert_close(out, gather_scatter_reference(csr, x, v, reduce), **F64)
    msg = x[g.src]
    if v is not None:
        msg = msg * v.view(v.shape + (1,) * (x.dim() - v.dim()))
    ref = pyg_utils.scatter(msg, g.dst, 0, dim_size=g.num_nodes, reduce=reduce)
    torch.testing.assert_close(out, ref, **F64)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("given_t", [False, True])
def test_spmm_gradcheck(layout, reduce, given_t):
    g = random_graph("small", seed=1)
    x, v = inputs(g, layout, requires_grad=True)
    csr_t = g.csr_t() if given_t else None
    args = (x,) if v is None else (x, v)
    fn = lambda x, v=None: spmm(g.csr(), x, v, reduce, csr_t)
    # gradcheck's defaults (eps 1e-6, atol 1e-5, rtol 1e-3): spmm is linear in x and in v, so the central
    # difference has no truncation error, only round-off ~eps·|y|/1e-6 ≈ 1e-9 (measured ≤ 5e-10)
    # fast mode (random projections of the Jacobian) keeps the heads cases quick; the plain
    # weighted case also runs the full element-by-element check
    assert torch.autograd.gradcheck(fn, args, fast_mode=True)
    if layout == "weighted":
        assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("layout", ["weighted", "heads"])
def test_spmm_double_backward(layout):
    g = random_graph("dense", seed=2)
    x, v = inputs(g, layout, requires_grad=True)
    fn = lambda x, v: spmm(g.csr(), x, v, "mean", g.csr_t())
    assert torch.autograd.gradgradcheck(fn, (x, v), fast_mode=layout == "heads")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_spmm_grads_match_reference(kind, layout):
    g = random_graph(kind, seed=3)
    x, v = inputs(g, layout, requires_grad=True)
    args = [x] if v is None else [x, v]
    for reduce in ("sum", "mean"):
        w = torch.randn((g.num_nodes,) + tuple(x.shape[1:]), dtype=x.dtype)
        got = torch.autograd.grad((spmm(g.csr(), x, v, reduce) * w).sum(), args)
        ref = torch.autograd.grad((gather_scatter_reference(g.csr(), x, v, reduce) * w).sum(), args)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, **F64)


def test_csr_with_permutation_and_bipartite():
    """A CSR whose entries are not in edge order (perm set), rectangular, with a given transpose."""
    gen = torch.Generator().manual_seed(4)
    rows, cols, e = 7, 4, 25
    r = torch.randint(0, rows - 1, (e,), generator=gen)
    c = torch.randint(0, cols, (e,), generator=gen)
    csr = CSR.from_coo(r, c, rows, cols)  # entry k is edge csr.perm[k]
    csr_t = CSR.from_coo(c, r, cols, rows)  # perm: entry -> edge id
    x = torch.randn(cols, 3, dtype=torch.float64, requires_grad=True)
    v_edge = torch.rand(e, dtype=torch.float64)
    v = v_edge[csr.perm].clone().requires_grad_(True)  # values in CSR entry order
    for t in (None, csr_t):
        assert torch.autograd.gradcheck(lambda x, v, t=t: spmm(csr, x, v, "sum", t), (x, v))
        out = spmm(csr, x, v, csr_t=t)
        ref = torch.zeros(rows, 3, dtype=torch.float64).index_add_(0, r, x[c] * v_edge[:, None])
        torch.testing.assert_close(out, ref, **F64)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gather_scatter_fallback_matches(monkeypatch, layout):
    g = random_graph("small", seed=5)
    x, v = inputs(g, layout, requires_grad=True)
    args = [x] if v is None else [x, v]
    out = spmm(g.csr(), x, v)
    grads = torch.autograd.grad(out.pow(2).sum(), args)
    monkeypatch.setattr(spmm_module, "_SPARSE_DTYPES", {})
    monkeypatch.setattr(spmm_module, "_SDDMM_DTYPES", {})
    out2 = spmm(g.csr(), x, v)
    torch.testing.assert_close(out2, out, **F64)
    for a, b in zip(torch.autograd.grad(out2.pow(2).sum(), args), grads):
        torch.testing.assert_close(a, b, **F64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("device", DEVICES)
def test_spmm_dtypes_devices(dtype, device):
    g = random_graph("small", seed=6)
    x, v = inputs(g, "heads", dtype=torch.float64)
    ref = gather_scatter_reference(g.csr(), x, v)
    out = spmm(g.csr().to(device), x.to(device, dtype), v.to(device, dtype), csr_t=g.csr_t().to(device))
    assert out.dtype == dtype and out.device.type == device
    # inputs rounded to dtype (2u), ≤ 10 in-edges accumulated in dtype (10u), output rounded (u), u = eps/2:
    # |out − ref| ≤ 6.5·eps·Σ|x v| per entry (measured ≤ 1.1); factor 8
    bound = 8 * torch.finfo(dtype).eps * gather_scatter_reference(g.csr(), x.abs(), v.abs())
    assert (g.csr().degree() <= 10).all()
    err = (out.double().cpu() - ref).abs()
    assert (err <= bound).all(), float((err / bound).max())


def test_spmm_errors():
    g = random_graph("small")
    csr = g.csr()
    x = torch.randn(g.num_nodes, 4)
    with pytest.raises(DataError, match=r"x must have shape \(9, C\)"):
        spmm(csr, x[:-1])
    with pytest.raises(DataError, match=r"values must have shape \(35,\)"):
        spmm(csr, x, torch.ones(3))
    with pytest.raises(DataError, match=r"or \(35, 2\) for x with heads"):
        spmm(csr, x.view(-1, 2, 2), torch.ones(g.num_edges, 3))
    with pytest.raises(DataError, match="must match x"):
        spmm(csr, x, torch.ones(g.num_edges, dtype=torch.float64))
    with pytest.raises(DataError, match="floating point"):
        spmm(csr, torch.ones(g.num_nodes, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown reduce `max`; valid names are `sum`, `mean`"):
        spmm(csr, x, reduce="max")
    with pytest.raises(DataError, match="csr_t is 9x9 with 0 entries"):
        spmm(csr, x, csr_t=Graph(None, 9).csr_t())


def test_ops_trace_without_graph_breaks():
    """Under torch.compile the kernels take traceable paths (no sparse tensors, no lazy caches)."""
    import torch._dynamo as dynamo

    from graphdl.ops import segment_max, segment_softmax, segment_sum

    g = random_graph("small", seed=7)
    csr, csr_t = g.csr(), g.csr_t()

    def block(x, w):
        h = x @ w
        att = segment_softmax((h[g.src] * h[g.dst]).sum(-1), g.dst, g.num_nodes, csr.rowptr)
        msg = h[g.src]
        return (
            spmm(csr, h, att, "sum", csr_t)
            + spmm(csr, h, None, "mean")
            + segment_max(msg, g.dst, g.num_nodes, csr.rowptr)
            + segment_sum(msg, g.dst, g.num_nodes, csr.rowptr)
        )

    x = torch.randn(g.num_nodes, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    dynamo.reset()
    assert dynamo.explain(block)(x, w).graph_break_count == 0
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    out, ref = compiled(x, w), block(x, w)
    torch.testing.assert_close(out, ref, **F64)
    got = torch.autograd.grad(out.pow(2).sum(), (x, w))
    for a, b in zip(got, torch.autograd.grad(ref.pow(2).sum(), (x, w))):
        torch.testing.assert_close(a, b, **F64)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("heads", [None, 3])
def test_sddmm_matches_gather_and_gradchecks(kind, heads):
    g = random_graph(kind, seed=8)
    csr = g.csr()
    shape = (4,) if heads is None else (heads, 4)
    a = torch.randn((g.num_nodes,) + shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn((g.num_nodes,) + shape, dtype=torch.float64, requires_grad=True)
    out = sddmm(csr, a, b, g.csr_t())
    assert out.shape == (g.num_edges,) + shape[:-1]
    torch.testing.assert_close(out, (a[g.dst] * b[g.src]).sum(-1), **F64)
    if g.num_edges:
        fn = lambda a, b: sddmm(csr, a, b)
        assert torch.autograd.gradcheck(fn, (a, b), fast_mode=True)
        assert torch.autograd.gradgradcheck(fn, (a, b), fast_mode=True)


def test_sddmm_errors():
    g = random_graph("small")
    a = torch.randn(g.num_nodes, 4)
    with pytest.raises(DataError, match="same trailing shape"):
        sddmm(g.csr(), a, torch.randn(g.num_nodes, 5))
    with pytest.raises(DataError, match="share one floating dtype"):
        sddmm(g.csr(), a, a.double())
