"""Structural feature blocks write the model's dtype (float64 models, float32 models)."""

import networkx as nx
import pytest
import torch

from graphdl.compile.compiler import compile_spec
from graphdl.data.convert import from_networkx
from graphdl.spec.model import parse_spec_text

SPEC = """\
graphdl: 1
inputs: {{node.h: 2}}
model:
  layers:
    - {{type: {block}, output: node.s}}
    - {{type: concat, inputs: [node.h, node.s], output: node.z}}
    - {{type: gin, input: node.z, output: node.y, out_dim: 8}}
  outputs: [node.y]
"""


@pytest.mark.parametrize("block", ["cycle_counts", "laplacian_pe", "random_features"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_structural_features_follow_the_model_dtype(block, dtype):
    model = compile_spec(parse_spec_text(SPEC.format(block=block)), dtype=dtype)
    g = from_networkx(nx.cycle_graph(6))
    g = g.replace(node__h=torch.ones(6, 2, dtype=dtype))
    model.eval()
    y = model(g)["node.y"]
    assert y.dtype == dtype and torch.isfinite(y).all()
    feats = model.blocks[0](model.prepare(g), {})["node.s"]
    assert feats.dtype == dtype
    # the same batch evaluated in the other dtype gets features of that dtype too (no stale cache)
    other = torch.float64 if dtype == torch.float32 else torch.float32
    model.to(other)
    assert model(g.replace(node__h=torch.ones(6, 2, dtype=other)))["node.y"].dtype == other
