"""Every way a spec can be wrong gives one line: `file:line:col: path: message` with the fix."""

from __future__ import annotations

import textwrap

import pytest

from graphdl.compile import plan_spec
from graphdl.errors import SpecError
from graphdl.spec.model import parse_spec, parse_spec_text


def _err(text: str, file: str = "t.yaml") -> str:
    """The one-line message of the SpecError a spec text raises (parse + plan)."""
    with pytest.raises(SpecError) as info:
        plan_spec(parse_spec_text(textwrap.dedent(text), file))
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def _spec(layers: str, inputs: str = "{node.h: 8, edge.e: 4}") -> str:
    return f"graphdl: 1\ninputs: {inputs}\nmodel:\n  layers:\n{textwrap.indent(textwrap.dedent(layers), '    ')}"


# ------------------------------------------------------------------------------ YAML
def test_malformed_yaml_reports_line_and_column():
    msg = _err("graphdl: 1\nmodel:\n  layers: [\n    {type: linear, out_dim: 4}\n")
    assert msg.startswith("t.yaml:5:1: malformed YAML: ")
    assert "flow sequence" in msg
    msg = _err("graphdl: 1\ninputs:\n  node.h: 8\n   edge.e: 4\n")
    assert msg.startswith("t.yaml:4:10: malformed YAML: mapping values are not allowed here")
    msg = _err("graphdl: 1\n\tmodel: x\n")
    assert msg.startswith("t.yaml:2:1: malformed YAML: found character '\\t' that cannot start any token")


def test_empty_and_non_mapping_specs():
    assert _err("") == "t.yaml:1:1: the spec is empty; expected a mapping starting with `graphdl: 1`"
    assert _err("- 1\n- 2\n") == "t.yaml:1:1: a spec must be a mapping (key: value lines), found a list"
    assert _err("model: {layers: []}\n") == (
        "t.yaml:1:1: missing `graphdl: 1` at the top of the spec (the spec format version)")
    assert _err("graphdl: 2\nmodel: {layers: []}\n") == (
        "t.yaml:1:10: graphdl: unsupported spec version `2`; this graphdl reads `graphdl: 1`")


def test_duplicate_keys_are_refused():
    msg = _err(_spec("""\
        - type: linear
          out_dim: 4
          out_dim: 8
        """))
    assert msg == ("t.yaml:7:7: model.layers[0].out_dim: duplicate key `out_dim` (first at line 6); "
                   "YAML would silently keep only the last one—remove one of them")


@pytest.mark.parametrize("value", ["!!python/object/apply:os.system ['echo hacked']",
                                   "!!python/object:os.system {cmd: 1}",
                                   "!!python/name:os.system ''",
                                   "!!python/object/new:os.system [x]",
                                   "!!set {a, b}"])
def test_python_tags_are_refused(value):
    msg = _err(f"graphdl: 1\nname: {value}\nmodel: {{layers: [{{type: relu}}]}}\n")
    assert msg.startswith("t.yaml:2:7: name: cannot read value")
    assert msg.endswith("(specs are plain YAML; tags like `!!python/...` are never executed)")


# ---------------------------------------------------------------------- top level
def test_unknown_top_level_key_did_you_mean():
    msg = _err("graphdl: 1\ninptus: {node.h: 3}\nmodel: {layers: [{type: relu}]}\n")
    assert msg == "t.yaml:2:1: inptus: unknown top-level key `inptus`; did you mean `inputs`?"


def test_bad_input_declarations():
    assert _err(_spec("- {type: relu}", "{node.h: -3}")) == (
        "t.yaml:2:18: inputs.node.h: a field dim must be a positive integer, found -3")
    assert _err(_spec("- {type: relu}", "{nodes.h: 3}")).startswith(
        "t.yaml:2:10: inputs.nodes.h: field `nodes.h` must be written `<space>.<name>` with space one of "
        "node, edge, graph")
    assert "`3x1q` is not an irreps string; expected terms like `16x0e + 8x1o + 2e`" in _err(
        _spec("- {type: relu}", "{node.h: 3x1q}"))


def test_missing_model_and_empty_layers():
    assert _err("graphdl: 1\ninputs: {node.h: 3}\n") == "t.yaml:1:1: missing `model:` section (with `layers:`)"
    assert _err("graphdl: 1\ninputs: {node.h: 3}\nmodel: {layers: []}\n") == (
        "t.yaml:3:17: model.layers: `model.layers` is empty; add at least one block")


# ------------------------------------------------------------------------- blocks
def test_unknown_block_type_did_you_mean():
    assert _err(_spec("- {type: lineer, out_dim: 3}")) == (
        "t.yaml:5:14: model.layers[0].type: unknown block type `lineer`; did you mean `linear`?")
    assert _err(_spec("- {type: gcnn, out_dim: 3}")) == (
        "t.yaml:5:14: model.layers[0].type: unknown block type `gcnn`; did you mean `gcn`?")
    assert _err(_spec("- {out_dim: 3}")) == (
        "t.yaml:5:7: model.layers[0]: layer has no `type:`; name a block, e.g. `type: gcn`")


def test_unknown_block_key_did_you_mean():
    assert _err(_spec("- {type: linear, outdim: 3}")) == (
        "t.yaml:5:22: model.layers[0].outdim: unknown key `outdim` in block `linear`; did you mean `out_dim`?")


def test_wrong_value_types():
    assert _err(_spec("- {type: linear, out_dim: abc}")) == (
        "t.yaml:5:31: model.layers[0].out_dim: expected a valid integer, unable to parse string as an "
        "integer, found `abc` (text)")
    assert _err(_spec("- {type: linear, out_dim: 4, bias: maybe}")) == (
        "t.yaml:5:40: model.layers[0].bias: expected a valid boolean, unable to interpret input, "
        "found `maybe` (text)")
    assert _err(_spec("- {type: mlp, out_dim: 4, hidden: 16}")) == (
        "t.yaml:5:39: model.layers[0].hidden: expected a valid list, found `16`")
    assert _err(_spec("- {type: linear, out_dim: 4, repeat: two}")) == (
        "t.yaml:5:42: model.layers[0].repeat: `repeat` must be a positive integer, found `two` (text)")
    assert _err(_spec("- {type: linear, out_dim: 4, residual: 1}")) == (
        "t.yaml:5:44: model.layers[0].residual: `residual` must be true or false, found `1`")


def test_negative_dims():
    assert _err(_spec("- {type: linear, out_dim: -4}")) == (
        "t.yaml:5:31: model.layers[0].out_dim: expected greater than 0, found `-4`")
    assert _err(_spec("- {type: mlp, out_dim: 4, hidden: [8, 0]}")) == (
        "t.yaml:5:43: model.layers[0].hidden[1]: expected greater than 0, found `0`")


def test_missing_required_key():
    assert _err(_spec("- {type: linear}")) == (
        "t.yaml:5:7: model.layers[0]: missing required key `out_dim` for block `linear`")


def test_missing_field():
    msg = _err(_spec("- {type: linear, input: node.x, out_dim: 4}"))
    assert msg.startswith("t.yaml:5:7: model.layers[0]: linear needs field `node.x`, but the stack has none "
                          "(fields here: `node.h`: 8, `edge.e`: 4)")
    assert msg.endswith("declare it under `inputs:` or produce it in an earlier layer")


def test_equivariance_type_error():
    msg = _err(_spec("- {type: linear, input: node.pos, out_dim: 4}", "{node.h: 8, node.pos: 1o}"))
    assert msg.startswith("t.yaml:5:7: model.layers[0]: linear is not equivariant and cannot read field "
                          "`node.pos` of type 1x1o")


def test_residual_across_width_change():
    msg = _err(_spec("""\
        - {type: linear, out_dim: 8}
        - {type: linear, out_dim: 16, residual: true}
        """))
    assert msg == ("t.yaml:6:45: model.layers[1].residual: `residual: true` adds the input of `node.h` to the "
                   "block's output, but they differ (8 -> 16); keep the width, or drop `residual`")


def test_edge_dim_mismatch_between_blocks():
    # an earlier block makes edge.e 16 wide; the product message needs it as wide as node.h (8)
    msg = _err(_spec("""\
        - {type: linear, input: edge.e, out_dim: 16}
        - {type: message_passing, message: product, edge_input: edge.e}
        """))
    assert msg == ("t.yaml:6:7: model.layers[1]: message_passing: message `product` combines `node.h` (8) and "
                   "`edge.e` (16) channel by channel, so they need the same dim; map the edge field to 8 "
                   "with a `linear` block first")


def test_repeat_errors_name_the_repeat():
    # repeat 0 maps node.h 4 -> 6; repeat 1 then multiplies a 6-wide node by a 4-wide edge
    msg = _err(_spec("- {type: message_passing, message: product, edge_input: edge.e, "
                     "update: {op: mlp, out_dim: 6}, repeat: 2}", "{node.h: 4, edge.e: 4}"))
    assert msg.startswith("t.yaml:5:7: model.layers[0]: (repeat 1) message_passing: message `product` combines "
                          "`node.h` (6) and `edge.e` (4)")
    msg = _err(_spec("- {type: linear, out_dim: 4, repeat: 2, share_weights: true}"))
    assert msg == ("t.yaml:5:60: model.layers[0].share_weights: cannot share weights across repeats: repeat 1 "
                   "sees node.h:4 -> node.h:4 but repeat 0 saw node.h:8 -> node.h:4; make the block map its "
                   "fields to the same types, or drop `share_weights`")
    assert _err(_spec("- {type: linear, out_dim: 8, share_weights: true}")) == (
        "t.yaml:5:49: model.layers[0].share_weights: `share_weights: true` only means something with "
        "`repeat: N` (N > 1)")


def test_outputs_must_exist():
    assert _err("graphdl: 1\ninputs: {node.h: 3}\nmodel:\n  layers: [{type: relu}]\n  outputs: [graph.y]\n") == (
        "t.yaml:5:13: model.outputs[0]: output `graph.y` is never produced; fields at the end of the stack: "
        "`node.h`")


def test_file_errors(tmp_path):
    with pytest.raises(SpecError, match=r"^spec file `.*nope\.yaml` does not exist$"):
        parse_spec(str(tmp_path / "nope.yaml"))
