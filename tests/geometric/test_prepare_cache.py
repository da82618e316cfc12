"""GraphModel.prepare caches the built graph on the batch, and never serves a stale one."""

import torch

from graphdl.compile.compiler import compile_spec
from graphdl.data.graph import Graph, collate
from graphdl.spec.model import parse_spec_text

SPEC = """\
graphdl: 1
inputs: {{node.pos: 1o, node.h: 4}}
graph: {graph}
model:
  layers:
    - {{type: edge_geometry, pos: node.pos, basis: gaussian, num_basis: 4, cutoff: 3.0}}
    - {{type: egnn, input: node.h, pos: node.pos, edge_input: edge.rbf, hidden: 8}}
  outputs: [node.pos, node.h]
"""


def _model(graph):
    torch.manual_seed(0)
    return compile_spec(parse_spec_text(SPEC.format(graph=graph)), dtype=torch.float64)


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    gs = []
    for n in (5, 7):
        pos = torch.randn(n, 3, generator=gen, dtype=torch.float64)
        h = torch.randn(n, 4, generator=gen, dtype=torch.float64)
        gs.append(Graph(torch.zeros(2, 0, dtype=torch.long), n, {"node.pos": pos, "node.h": h}))
    return collate(gs)


def test_complete_graph_is_built_once_per_batch():
    m = _model("{kind: complete}")
    g = _batch()
    a = m.prepare(g)
    assert a is m.prepare(g)  # cached
    assert a.num_edges == 5 * 4 + 7 * 6
    torch.testing.assert_close(m(g)["node.h"], m(g)["node.h"])


def test_replaced_positions_are_not_served_the_old_graph():
    m = _model("{kind: radius, cutoff: 1.5}")
    g = _batch()
    a = m.prepare(g)
    moved = g.replace(node__pos=g.fields["node.pos"] * 3.0)  # shares g's cache
    b = m.prepare(moved)
    assert b is not a and b.fields["node.pos"] is moved.fields["node.pos"]
    assert b.num_edges != a.num_edges
    fresh = m.prepare(_batch().replace(node__pos=g.fields["node.pos"] * 3.0))
    assert torch.equal(b.edge_index, fresh.edge_index)


def test_positions_moved_in_place_rebuild_the_radius_graph():
    m = _model("{kind: radius, cutoff: 1.5}")
    g = _batch()
    a = m.prepare(g)
    with torch.no_grad():
        g.fields["node.pos"].mul_(3.0)
    b = m.prepare(g)
    assert b is not a and b.num_edges < a.num_edges


def test_forces_style_requires_grad_copy_reaches_the_blocks():
    """A copy of the positions that requires grad (forces by autograd) must be the tensor the blocks see."""
    m = _model("{kind: complete}")
    g = _batch()
    m(g)
    pos = g.fields["node.pos"].detach().requires_grad_(True)
    out = m(g.replace(node__pos=pos))
    (grad,) = torch.autograd.grad(out["node.h"].sum(), pos)
    assert grad.abs().sum() > 0
