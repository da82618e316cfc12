"""EGNN / radial field against dense hand-written references of the paper's equations; edge cases."""

import torch

from graphdl.data.graph import Graph, collate
from graphdl.nn.base import block_type
from graphdl.ops.neighbors import complete_graph, radius_graph

FIELDS = {"node.h": 5, "node.pos": "1o", "node.vel": "1o", "edge.a": 1}


def _systems(b=2, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(b, n, 5, generator=g, dtype=torch.float64)
    x = torch.randn(b, n, 3, generator=g, dtype=torch.float64)
    v = torch.randn(b, n, 3, generator=g, dtype=torch.float64)
    q = torch.randn(b, n, generator=g, dtype=torch.float64)
    a = q[:, :, None] * q[:, None, :]  # a[b, i, j]
    graphs = []
    for s in range(b):
        ei = complete_graph(torch.zeros(n, dtype=torch.long))
        graphs.append(Graph(ei, n, {"node.h": h[s], "node.pos": x[s], "node.vel": v[s],
                                    "edge.a": a[s][ei[1], ei[0]][:, None]}))
    return collate(graphs), (h, x, v, a)


def test_egnn_matches_dense_equations():
    # the paper's layer (egnn's defaults add log1p distances, normalised r and a tanh bound)
    blk = block_type("egnn").build({"hidden": 8, "vel": "node.vel", "edge_input": "edge.a", "distance_feature": "squared",
                                    "normalize": False, "tanh": False}, FIELDS).double()
    torch.nn.init.normal_(blk.phi_x[-1].weight)  # the paper's 1e-3 init would make the x update tiny
    g, (h, x, v, a) = _systems()
    out = blk(g, dict(g.fields))
    b, n = h.shape[:2]
    hi, hj = h[:, :, None].expand(b, n, n, 5), h[:, None, :].expand(b, n, n, 5)
    r = x[:, :, None] - x[:, None, :]  # r[b, i, j] = x_i - x_j
    m = blk.phi_e(torch.cat([hi, hj, (r * r).sum(-1, keepdim=True), a[..., None]], -1))
    off = ~torch.eye(n, dtype=torch.bool)[None, :, :, None]
    m = m * off
    h_ref = h + blk.phi_h(torch.cat([h, m.sum(2)], -1))
    x_ref = x + (r * blk.phi_x(m) * off).sum(2) / (n - 1) + blk.phi_v(h) * v
    # float64, |out| ≤ 3: the same MLPs on the same rows, sums of ≤ 3 messages in another order:
    # ≤ ~10 eps·|out| ≈ 7e-15 (measured 0); 1e-12 ≈ 1500 eps·|out| still fails a float32 step
    torch.testing.assert_close(out["node.h"], h_ref.reshape(-1, 5), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["node.pos"], x_ref.reshape(-1, 3), rtol=1e-12, atol=1e-12)
    assert (out["node.pos"] - x.reshape(-1, 3)).abs().max() > 1e-2


def test_radial_field_matches_dense_equations():
    blk = block_type("radial_field").build({"hidden": 8, "edge_input": "edge.a"}, FIELDS).double()
    g, (_, x, _, a) = _systems(seed=1)
    out = blk(g, dict(g.fields))["node.pos"]
    n = x.shape[1]
    r = x[:, :, None] - x[:, None, :]
    w = blk.phi(torch.cat([r.norm(dim=-1, keepdim=True), a[..., None]], -1))
    w = w * (~torch.eye(n, dtype=torch.bool))[None, :, :, None]
    torch.testing.assert_close(out, (x + (r * w).sum(2) / (n - 1)).reshape(-1, 3), rtol=1e-12, atol=1e-12)  # as above


def test_egnn_without_edges_keeps_positions_and_updates_h():
    g = Graph(None, 3, {"node.h": torch.randn(3, 5, dtype=torch.float64),
                        "node.pos": torch.randn(3, 3, dtype=torch.float64)})
    blk = block_type("egnn").build({"hidden": 8}, {"node.h": 5, "node.pos": "1o"}).double()
    out = blk(g, dict(g.fields))
    assert torch.equal(out["node.pos"], g["node.pos"])
    assert out["node.h"].shape == (3, 5) and torch.isfinite(out["node.h"]).all()


def test_radius_graph_large_matches_cdist_reference():
    g = torch.Generator().manual_seed(5)
    pos = torch.rand(3000, 3, generator=g, dtype=torch.float64) * 10
    ei = radius_graph(pos, None, 0.7)
    d = torch.cdist(pos, pos)
    dst, src = ((d < 0.7) & ~torch.eye(3000, dtype=torch.bool)).nonzero(as_tuple=True)
    assert ei.size(1) > 10000
    assert torch.equal(ei, torch.stack([src, dst]))
