"""vector_norm / vector_dot: the invariants a non-equivariant block may read, and the hint that names them."""

from __future__ import annotations

import pytest
import torch

from graphdl.compile.compiler import compile_spec
from graphdl.data.graph import Graph
from graphdl.errors import SpecError
from graphdl.spec.model import parse_spec_text
from graphdl.testing.equivariance import random_rotation

SPEC = """\
graphdl: 1
inputs: {{node.vel: 1o, node.force: 1o, node.f: "2x0e + 2x1o"}}
model:
  layers:
{layers}
  outputs: [node.y]
"""


def _model(layers: str):
    return compile_spec(parse_spec_text(SPEC.format(layers=layers), "t.yaml"), dtype=torch.float64)


def _graph():
    gen = torch.Generator().manual_seed(0)
    n = 5
    return Graph(torch.zeros(2, 0, dtype=torch.long), n, {
        "node.vel": torch.randn(n, 3, generator=gen, dtype=torch.float64),
        "node.force": torch.randn(n, 3, generator=gen, dtype=torch.float64),
        "node.f": torch.randn(n, 8, generator=gen, dtype=torch.float64)})


def test_norms_and_dots_are_the_values_and_rotation_invariant():
    m = _model("""\
    - {type: vector_norm, input: node.vel, output: node.speed}
    - {type: vector_dot, inputs: [node.vel, node.force], output: node.power}
    - {type: concat, inputs: [node.speed, node.power], output: node.y}""")
    g = _graph()
    y = m(g)["node.y"]
    v, F = g["node.vel"], g["node.force"]
    # sqrt(|v|² + ε²), ε = 1e-8, moves |v| ≥ 0.1 by ≤ ε²/(2|v|) = 5e-16; plus round-off of a 3-term sum
    torch.testing.assert_close(y[:, 0], v.norm(dim=1), rtol=0, atol=1e-14)
    torch.testing.assert_close(y[:, 1], (v * F).sum(1), rtol=0, atol=1e-14)
    R = random_rotation(torch.float64, torch.Generator().manual_seed(1), improper=True)  # O(3), not only SO(3)
    yr = m(g.replace(node__vel=v @ R.T, node__force=F @ R.T))["node.y"]
    torch.testing.assert_close(yr, y, rtol=0, atol=1e-14)  # 3-term sums of rotated values: a few ulp


def test_norm_of_several_vector_copies():
    m = _model("""\
    - {type: irreps_select, input: node.f, select: 1o, output: node.v2}
    - {type: vector_norm, input: node.v2, output: node.y}""")
    g = _graph()
    y = m(g)["node.y"]
    assert y.shape == (5, 2)


def test_the_refusal_names_the_blocks_that_make_invariants():
    with pytest.raises(SpecError) as info:
        _model("    - {type: mlp, input: node.vel, output: node.y, hidden: [8], out_dim: 1}")
    assert str(info.value) == (
        "t.yaml:5:7: model.layers[0]: mlp is not equivariant and cannot read field `node.vel` of type 1x1o (it would "
        "break rotation symmetry); feed it its length (`{type: vector_norm, input: node.vel, output: "
        "node.vel_norm}`) or its dot product with another vector field (`{type: vector_dot, inputs: [node.vel, ...], "
        "output: ...}`)")
    with pytest.raises(SpecError, match=r"feed it its `0e` part \(`\{type: irreps_select, input: node.f, select: 0e"):
        _model("    - {type: mlp, input: node.f, output: node.y, hidden: [8], out_dim: 1}")
    with pytest.raises(SpecError, match=r"vector_norm reads vectors \(`1o` or `Nx1o`\), but `node.f` is 2x0e \+ 2x1o"):
        _model("    - {type: vector_norm, input: node.f, output: node.y}")
