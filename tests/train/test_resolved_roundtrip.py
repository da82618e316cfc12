"""A run's resolved spec.yaml rebuilds the same model, and no block parameter can shadow a
layer option (`repeat`, `share_weights`, `residual`, `label`)."""

from pathlib import Path

import pytest
import torch
import yaml

from graphdl.compile.compiler import compile_spec
from graphdl.nn.base import Block, BlockParams, register_block
from graphdl.testing.equivariance import random_graph_for
from graphdl.train.runner import prepare

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["nbody/egnn.yaml", "molecular/gated_gcn_freesolv.yaml",
                                  "molecular/gine_freesolv.yaml", "nbody/tfn.yaml", "mmff/egnn.yaml"])
def test_resolved_spec_rebuilds_the_same_model(name, tmp_path):
    exp = prepare(str(ROOT / "specs" / name))
    again = tmp_path / "spec.yaml"
    again.write_text(yaml.safe_dump(exp.resolved, sort_keys=False))
    exp2 = prepare(str(again))
    assert exp2.resolved == exp.resolved
    torch.manual_seed(0)
    a = compile_spec(exp.plan, dtype=torch.float64)
    torch.manual_seed(0)
    b = compile_spec(exp2.plan, dtype=torch.float64)
    assert [s.entry.residual for s in exp.plan.steps] == [s.entry.residual for s in exp2.plan.steps]
    b.load_state_dict(a.state_dict())
    g = random_graph_for(a.input_fields, (5, 6), scale=1.5)
    a.eval()
    b.eval()
    for k, v in a(g).items():
        torch.testing.assert_close(b(g)[k], v, rtol=0, atol=0)


def test_gated_gcn_spec_adds_its_input_once():
    """The block's own skip connection, not also the layer option (which would give 2h + h')."""
    from graphdl.spec.model import parse_spec

    spec = parse_spec(str(ROOT / "specs" / "gated_gcn.yaml"))
    from graphdl.compile.compiler import plan_spec

    steps = [s for s in plan_spec(spec).steps if s.params.type == "gated_gcn"]
    assert len(steps) == 4 and all(s.params.skip and not s.entry.residual for s in steps)


def test_a_block_parameter_named_like_a_layer_option_is_refused():
    with pytest.raises(ValueError, match=r"block `shadowing`: parameter\(s\) `residual` shadow the layer option"):

        @register_block("shadowing")
        class Shadowing(Block):
            class Params(BlockParams):
                residual: bool = True
