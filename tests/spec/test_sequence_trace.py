"""``type: sequence`` groups of layers (repeat, share_weights) and ``trace`` (a field stacked per repeat)."""

from __future__ import annotations

import pytest
import torch

from graphdl.compile import compile_spec, plan_spec
from graphdl.compile.compiler import resolved_layers
from graphdl.data.graph import Graph
from graphdl.errors import SpecError
from graphdl.spec.model import parse_spec_text
from graphdl.types import FRAME, Scalar, Stacked, parse_type

HEAD = """graphdl: 1
inputs: {node.h: 4}
model:
  layers:
"""

GROUP = HEAD + """    - type: sequence
      repeat: 3
      share_weights: SHARE
      trace: {node.h: node.hs}
      layers:
        - {type: linear, input: node.h, out_dim: 4}
        - {type: relu, input: node.h}
        - {type: linear, input: node.h, out_dim: 4, residual: true}
  outputs: [node.h, node.hs]
"""


def _graph(n=5):
    return Graph(None, n, {"node.h": torch.randn(n, 4, generator=torch.Generator().manual_seed(0))})


@pytest.mark.parametrize("share", [True, False])
def test_sequence_repeats_its_layers_in_order(share):
    model = compile_spec(parse_spec_text(GROUP.replace("SHARE", str(share).lower())))
    plan = model.plan
    assert [s.cls.name for s in plan.steps] == ["linear", "relu", "linear"] * 3
    assert [s.where for s in plan.steps[:4]] == ["model.layers[0]#0.layers[0]", "model.layers[0]#0.layers[1]",
                                                 "model.layers[0]#0.layers[2]", "model.layers[0]#1.layers[0]"]
    n_lin = 2 * (4 * 4 + 4)
    assert sum(p.numel() for p in model.parameters()) == (n_lin if share else 3 * n_lin)
    assert plan.outputs["node.hs"] == Stacked(Scalar(4), 3)
    # by hand: the same three layers, three times; the trace holds h after each repeat
    g = _graph()
    out = model(g)
    h = g["node.h"]
    blocks = list(model.blocks)
    steps = []
    for r in range(3):
        a, b = (blocks[0], blocks[2]) if share else (blocks[3 * r], blocks[3 * r + 2])
        x = torch.relu(a.lin(h))
        h = b.lin(x) + x
        steps.append(h)
    assert torch.allclose(out["node.h"], h, atol=1e-6)
    assert out["node.hs"].shape == (5, 3, 4)
    assert torch.allclose(out["node.hs"], torch.stack(steps, 1), atol=1e-6)


def test_describe_and_resolved_layers_keep_the_group():
    model = compile_spec(parse_spec_text(GROUP.replace("SHARE", "true")))
    text = model.describe()
    assert "model.layers[0]#2.layers[2]" in text and "shared with #2" in text
    layers = resolved_layers(model.plan)
    assert len(layers) == 1 and layers[0]["type"] == "sequence" and layers[0]["repeat"] == 3
    assert layers[0]["share_weights"] is True and layers[0]["trace"] == {"node.h": "node.hs"}
    assert [x["type"] for x in layers[0]["layers"]] == ["linear", "relu", "linear"]
    assert layers[0]["layers"][2]["residual"] is True and layers[0]["layers"][0]["out_dim"] == 4
    # the resolved layers compile to the same plan
    again = compile_spec({"graphdl": 1, "inputs": {"node.h": 4}, "model": {"layers": layers,
                                                                            "outputs": ["node.h", "node.hs"]}})
    assert [s.where for s in again.plan.steps] == [s.where for s in model.plan.steps]


def test_trace_on_a_plain_repeated_block():
    spec = HEAD + """    - {type: linear, input: node.h, out_dim: 4, repeat: 2, trace: {node.h: node.hs}}
  outputs: [node.hs]
"""
    model = compile_spec(parse_spec_text(spec))
    out = model(_graph())
    assert out["node.hs"].shape == (5, 2, 4)


@pytest.mark.parametrize("body,needle", [
    ("    - {type: sequence, repeat: 2}\n", "a `sequence` needs `layers:`"),
    ("    - {type: sequence, layers: []}\n", "a `sequence` needs `layers:`"),
    ("    - {type: sequence, heads: 2, layers: [{type: relu}]}\n", "unknown key `heads` in a `sequence`"),
    ("    - {type: sequence, residual: true, layers: [{type: relu, input: node.h}]}\n",
     "`residual` is not defined for a `sequence`"),
    ("    - {type: sequence, layers: [{type: relu, input: node.h}], trace: node.h}\n", "`trace` must map a field"),
    ("    - {type: sequence, layers: [{type: relu, input: node.h}], trace: {node.x: node.xs}}\n",
     "`trace` records `node.x` after every repeat, but it is not a field here"),
    ("    - {type: sequence, layers: [{type: relu, input: node.h}], trace: {node.h: node.h}}\n",
     "which is already a field"),
    ("    - {type: sequence, layers: [{type: relu, input: node.h}], trace: {node.h: graph.hs}}\n",
     "a field of the same space"),
    ("    - {type: sequence, repeat: 2, share_weights: true, layers: [{type: mlp, input: node.h, out_dim: 8}]}\n",
     "cannot share weights across repeats"),
    ("    - {type: sequence, layers: [{type: gcnn}]}\n", "unknown block type `gcnn`"),
])
def test_sequence_errors_are_one_line_at_the_place(body, needle):
    with pytest.raises(SpecError) as e:
        plan_spec(parse_spec_text(HEAD + body, "s.yaml"))
    msg = str(e.value)
    assert needle in msg and msg.startswith("s.yaml:") and "\n" not in msg


def test_inner_layer_errors_point_into_the_group():
    body = "    - type: sequence\n      repeat: 2\n      layers:\n        - {type: relu, input: node.h}\n" \
           "        - {type: linear, input: node.missing, out_dim: 3}\n"
    with pytest.raises(SpecError) as e:
        plan_spec(parse_spec_text(HEAD + body, "s.yaml"))
    assert str(e.value).startswith("s.yaml:9:") and "model.layers[0].layers[1]" in str(e.value)
    assert "(repeat 0) linear" in str(e.value)


def test_stacked_types_parse_and_print():
    t = parse_type("frame[8]")
    assert t == Stacked(FRAME, 8) and str(t) == "frame[8]" and t.shape() == (8, 4, 3)
    assert parse_type("64[3]") == Stacked(Scalar(64), 3)
    with pytest.raises(ValueError):
        parse_type("frame[0]")


def test_sequence_is_a_reserved_block_name():
    from graphdl.nn.base import Block, register_block

    with pytest.raises(ValueError, match="reserved"):
        register_block("sequence")(type("Seq", (Block,), {}))
