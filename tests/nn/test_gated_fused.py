"""GatedGCN's fused edge gating (:class:`graphdl.nn.conv._GatedAggregate`) against its plain-ops
reference: values, first and second derivatives in float64, and the block's output both ways."""

from __future__ import annotations

import pytest
import torch

from graphdl.data.graph import Graph
from graphdl.nn.base import BLOCKS, load_builtin_blocks
from graphdl.nn.conv import _GatedAggregate, _selector, gated_aggregate_reference


def _graph(n=7, e=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ei = torch.randint(n, (2, e), generator=gen)
    ei[:, -1] = torch.tensor([3, 3])  # a self-loop and (with n=7, e=20) repeated edges / isolated nodes
    return Graph(ei, n), gen


@pytest.mark.parametrize("eps", [None, 1e-3])
@pytest.mark.parametrize("edges", [False, True])
def test_fused_matches_reference_and_gradchecks(eps, edges):
    g, gen = _graph()
    n, e, m = g.num_nodes, g.num_edges, 3
    ax, bx, vx = (torch.randn(n, m, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ce = torch.randn(e, m, generator=gen, dtype=torch.float64, requires_grad=True) if edges else None
    sel_src, sel_dst = _selector(g, "src", ax), _selector(g, "dst", ax)
    ins = (ax, bx, vx) + ((ce,) if edges else ())

    def fused(*t):
        return _GatedAggregate.apply(t[0], t[1], t[2], t[3] if edges else None, g.src, g.dst, sel_src, sel_dst, eps)

    def ref(*t):
        return gated_aggregate_reference(t[0], t[1], t[2], t[3] if edges else None, g.src, g.dst, n, eps)

    for a, b in zip(fused(*ins), ref(*ins)):
        # same sums in a different order: round-off, |values| = O(1), a few terms per node
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    # gradcheck's defaults (atol 1e-5, rtol 1e-3) over O(1) Jacobians; measured error ~1e-10 (round-off/1e-6 step)
    assert torch.autograd.gradcheck(fused, ins)
    if eps is not None and edges:  # the double-backward path is one code path for all four cases; check it once
        assert torch.autograd.gradgradcheck(fused, ins)
    # the aggregate alone (no gradient through the edge output) takes the materialize_grads=False path
    assert torch.autograd.gradcheck(lambda *t: fused(*t)[0], ins)


@pytest.mark.parametrize("params", [
    {"edge_input": "edge.e"},  # the benchmark layer: edge gates, normalised, batch norm, skip, edge update
    {"edge_gates": False, "normalize_gates": False, "update_edges": False, "batch_norm": False, "skip": False,
     "act": "identity"},  # PyG's ResGatedGraphConv
])
def test_block_fused_equals_unfused_path(params, monkeypatch):
    load_builtin_blocks()
    g, gen = _graph(n=9, e=30, seed=1)
    x = torch.randn(9, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    ef = torch.randn(30, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    block = BLOCKS["gated_gcn"].build({"out_dim": 4, **params}, {"node.h": 4, "edge.e": 4}).double()

    def run():
        out = block(g, {"node.h": x, "edge.e": ef})
        loss = sum((v * torch.linspace(-1, 1, v.numel(), dtype=v.dtype).view_as(v)).sum() for v in out.values())
        grads = torch.autograd.grad(loss, [x, ef] + list(block.parameters()), allow_unused=True)
        return list(out.values()), grads

    kernel = run()  # graphdl's C++ kernels (graphdl/ops/fused.py)
    monkeypatch.setenv("GRAPHDL_KERNELS", "0")
    fused = run()  # _GatedAggregate over the selectors
    for a, b in zip(kernel[0] + list(kernel[1]), fused[0] + list(fused[1])):
        if a is None or b is None:
            assert a is None and b is None
            continue
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    import graphdl.nn.conv as conv

    monkeypatch.setattr(conv, "_selector", lambda *a: None)  # forces the gather / segment-sum path
    plain = run()
    for a, b in zip(fused[0] + list(fused[1]), plain[0] + list(plain[1])):
        if a is None or b is None:
            assert a is None and b is None
            continue
        # float64 round-off of sums over a few edges and batch-norm statistics over 9-30 rows
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
