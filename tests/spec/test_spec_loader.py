"""Loader semantics: `extends`, `${...}` references, `import:`, `repeat`/`share_weights`, describe totals."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from graphdl.compile import compile_spec, plan_spec
from graphdl.data.graph import Graph
from graphdl.errors import SpecError
from graphdl.spec.loader import load_spec, load_spec_text
from graphdl.spec.model import parse_spec, parse_spec_text

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted(p for d in ("specs", "examples") for p in (ROOT / d).rglob("*.yaml"))


def _write(dir: Path, name: str, text: str) -> Path:
    path = dir / name
    path.write_text(textwrap.dedent(text))
    return path


# ----------------------------------------------------------------------------- extends
BASE = """\
    graphdl: 1
    name: base
    inputs: {node.h: 8, edge.e: 4}
    graph: {kind: given, self_loops: true}
    model:
      layers:
        - {type: linear, out_dim: 16}
        - {type: relu}
      outputs: [node.h]
    """


def test_extends_merges_mappings_and_replaces_lists_and_scalars(tmp_path):
    _write(tmp_path, "base.yaml", BASE)
    child = _write(tmp_path, "child.yaml", """\
        extends: base.yaml
        name: child
        inputs: {node.h: 5}
        graph: {self_loops: false}
        model:
          layers:
            - {type: linear, out_dim: 3}
        """)
    data = load_spec(child).data
    assert data["name"] == "child"                                   # scalar replaced
    assert data["inputs"] == {"node.h": 5, "edge.e": 4}              # mappings merged key by key
    assert data["graph"] == {"kind": "given", "self_loops": False}
    assert data["model"]["layers"] == [{"type": "linear", "out_dim": 3}]  # lists replaced wholesale
    assert data["model"]["outputs"] == ["node.h"]                    # untouched keys inherited
    assert "extends" not in data


def test_extends_chain_and_list_order(tmp_path):
    _write(tmp_path, "a.yaml", BASE)
    _write(tmp_path, "b.yaml", "name: from-b\ngraph: {kind: complete}\n")
    _write(tmp_path, "c.yaml", "name: from-c\ninputs: {node.h: 2}\n")
    child = _write(tmp_path, "child.yaml", "extends: [a.yaml, b.yaml, c.yaml]\ndescription: later bases win\n")
    data = load_spec(child).data
    assert data["name"] == "from-c"
    assert data["graph"] == {"kind": "complete", "self_loops": True}
    assert data["inputs"] == {"node.h": 2, "edge.e": 4}
    sub = tmp_path / "sub"
    sub.mkdir()
    _write(sub, "grandchild.yaml", "extends: ../child.yaml\nname: gc\n")  # paths relative to each file
    assert load_spec(sub / "grandchild.yaml").data["graph"]["kind"] == "complete"


def test_errors_in_inherited_values_point_at_the_base_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "base.yaml", BASE.replace("out_dim: 16", "out_dim: -16"))
    _write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\n")
    with pytest.raises(SpecError) as info:
        plan_spec("child.yaml")
    assert str(info.value) == ("base.yaml:7:31: model.layers[0].out_dim: expected greater than 0, found `-16`")
    # a value the child overrides points at the child
    _write(tmp_path, "child2.yaml", "extends: base.yaml\ngraph: {kind: radius}\n")
    with pytest.raises(SpecError) as info:
        plan_spec("child2.yaml")
    assert str(info.value).startswith("child2.yaml:2:8: graph: graph kind `radius` needs `cutoff:`")


def test_extends_cycle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "a.yaml", "extends: b.yaml\ngraphdl: 1\n")
    _write(tmp_path, "b.yaml", "extends: c.yaml\n")
    _write(tmp_path, "c.yaml", "extends: a.yaml\n")
    with pytest.raises(SpecError) as info:
        load_spec("a.yaml", trust=True)
    assert str(info.value) == ("c.yaml:1:1: extends: `extends` cycle: a.yaml -> b.yaml -> c.yaml -> a.yaml; "
                               "remove one of the `extends:` entries")
    _write(tmp_path, "self.yaml", "extends: self.yaml\n")
    with pytest.raises(SpecError, match=r"`extends` cycle: self\.yaml -> self\.yaml"):
        load_spec("self.yaml")


def test_extends_missing_base_and_bad_value(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "a.yaml", "graphdl: 1\nextends: nope.yaml\n")
    with pytest.raises(SpecError) as info:
        load_spec("a.yaml", trust=True)
    assert str(info.value) == "a.yaml:2:10: extends: base spec `nope.yaml` not found (looked at nope.yaml)"
    _write(tmp_path, "b.yaml", "graphdl: 1\nextends: [3]\n")
    with pytest.raises(SpecError, match=r"^b\.yaml:2:11: extends\[0\]: `extends` expects a file path"):
        load_spec("b.yaml", trust=True)
    with pytest.raises(SpecError, match=r"`extends` needs a spec file \(paths are relative to it\)"):
        load_spec_text("graphdl: 1\nextends: a.yaml\n")


# -------------------------------------------------------------------------- references
def test_whole_value_references_keep_their_type():
    spec = parse_spec_text(textwrap.dedent("""\
        graphdl: 1
        inputs: {node.h: 8, node.w: 1o}
        graph: {kind: knn, k: 4, positions: node.w, self_loops: true}
        model:
          layers:
            - {type: linear, out_dim: "${inputs.node.h}"}        # keys with dots
            - {type: linear, out_dim: "${graph.k}", bias: "${graph.self_loops}"}
            - type: mlp
              out_dim: 2
              hidden: ["${model.layers[1].out_dim}", "${graph.k}"]
        """))
    layers = spec.doc.data["model"]["layers"]
    assert layers[0]["out_dim"] == 8 and isinstance(layers[0]["out_dim"], int)
    assert layers[1]["out_dim"] == 4 and layers[1]["bias"] is True
    assert layers[2]["hidden"] == [4, 4]
    assert [s.sig.writes["node.h"].dim for s in plan_spec(spec).steps] == [8, 4, 2]
    # defaults are not data: a reference to a key nobody wrote names nothing
    with pytest.raises(SpecError, match=r"^<string>:2:7: name: reference `\$\{graph\.kind\}` names nothing"):
        load_spec_text("graphdl: 1\nname: ${graph.kind}\ngraph: {k: 3}\n")


def test_interpolated_references_and_lists():
    doc = load_spec_text(textwrap.dedent("""\
        graphdl: 1
        name: gin-${inputs.node.h}x${model.layers[0].out_dim}
        description: "${name} (copied)"
        inputs: {node.h: 8}
        model:
          layers: [{type: linear, out_dim: 16}]
          outputs: ["${model.layers[0].type_out}"]
        """).replace("${model.layers[0].type_out}", "node.h"))
    assert doc.data["name"] == "gin-8x16"
    assert doc.data["description"] == "gin-8x16 (copied)"  # references resolve transitively


def test_reference_into_a_base_spec(tmp_path):
    _write(tmp_path, "base.yaml", BASE)
    child = _write(tmp_path, "child.yaml", """\
        extends: base.yaml
        model:
          layers: [{type: linear, out_dim: "${inputs.edge.e}"}]
        """)
    assert load_spec(child).data["model"]["layers"][0]["out_dim"] == 4


@pytest.mark.parametrize("text, message", [
    ("name: ${inputs.node.hh}", ("t.yaml:2:7: name: reference `${inputs.node.hh}` names nothing in the spec; "
                                "did you mean `inputs.node.h`?")),
    ("name: ${nmae}", "t.yaml:2:7: name: reference `${nmae}` names nothing in the spec; did you mean `name`?"),
    ("name: ${description}\ndescription: ${name}",
     "t.yaml:2:7: name: reference cycle: description -> name -> description"),
    ("name: ${name}", "t.yaml:2:7: name: reference cycle: name -> name"),
    ("name: x-${inputs}", ("t.yaml:2:7: name: `${inputs}` is a dict and cannot be spliced into text; use it as "
                          "the whole value")),
    ("name: x-${inputs.node.h", ("t.yaml:2:7: name: unterminated reference in `x-${inputs.node.h`; write "
                                "`${path.to.value}`")),
])
def test_reference_errors(text, message):
    with pytest.raises(SpecError) as info:
        load_spec_text(f"graphdl: 1\n{text}\ninputs: {{node.h: 8}}\n", "t.yaml")
    assert str(info.value) == message


# ------------------------------------------------------------------------------ import
def test_import_registers_a_user_block_and_runs_it():
    model = compile_spec(str(ROOT / "examples" / "custom_block.yaml"), dtype=torch.float64, trust=True)
    from graphdl.nn.base import BLOCKS

    assert "degree_scale" in BLOCKS
    block = model.blocks[2]
    assert type(block).__name__ == "DegreeScale" and block.p.gamma == 0.1
    g = Graph(torch.tensor([[0, 1, 2, 3, 3], [1, 0, 1, 1, 2]]), 4, {"node.h": torch.randn(4, 16, dtype=torch.float64)})
    x = torch.randn(4, 32, dtype=torch.float64)
    deg = torch.tensor([1.0, 3.0, 1.0, 0.0], dtype=torch.float64)
    out = block(g, {"node.h": x})["node.h"]
    assert torch.all(block.gamma == torch.tensor(0.1, dtype=torch.float64))  # built in float64: no float32 step
    # the same float64 formula, |out| ≤ 5: a few ulps (measured 0); 1e-12 fails a float32 step
    torch.testing.assert_close(out, x * (1 + block.gamma * torch.log1p(deg)[:, None]), rtol=0, atol=1e-12)
    assert model(g)["node.y"].shape == (4, 1)
    # loading the spec again neither re-imports nor re-registers
    assert plan_spec(parse_spec(str(ROOT / "examples" / "custom_block.yaml"), trust=True)).steps[2].cls is type(block)


def test_import_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "a.yaml", "graphdl: 1\nimport: [graphdl_no_such_module_xyz]\n")
    with pytest.raises(SpecError) as info:
        load_spec("a.yaml", trust=True)
    assert str(info.value) == ("a.yaml:2:10: import[0]: import `graphdl_no_such_module_xyz`: module not found "
                               "(No module named 'graphdl_no_such_module_xyz'); give a module on the Python path "
                               "or a .py file relative to the spec")
    _write(tmp_path, "b.yaml", "graphdl: 1\nimport: blocks/missing.py\n")
    with pytest.raises(SpecError) as info:
        load_spec("b.yaml", trust=True)
    assert str(info.value) == ("b.yaml:2:9: import: import `blocks/missing.py`: file not found "
                               "(looked at blocks/missing.py)")
    _write(tmp_path, "boom.py", "raise RuntimeError('boom at import')\n")
    _write(tmp_path, "c.yaml", "graphdl: 1\nimport: [boom.py]\n")
    with pytest.raises(SpecError) as info:
        load_spec("c.yaml", trust=True)
    assert str(info.value) == "c.yaml:2:10: import[0]: import `boom.py` failed: RuntimeError: boom at import"


def test_import_of_a_block_name_taken_by_another_module(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "clash.py", """\
        from graphdl.nn.base import Block, register_block

        @register_block("linear")
        class MyLinear(Block):
            pass
        """)
    _write(tmp_path, "a.yaml", "graphdl: 1\nimport: [clash.py]\n")
    with pytest.raises(SpecError) as info:
        load_spec("a.yaml", trust=True)
    assert str(info.value) == ("a.yaml:2:10: import[0]: import `clash.py` failed: ValueError: block type `linear` "
                               "is already registered by graphdl.nn.basic")


# --------------------------------------------------------------- repeat / share_weights
def _counts(extra: str) -> tuple[int, int, str]:
    text = f"graphdl: 1\ninputs: {{node.h: 8}}\nmodel:\n  layers:\n    - {{type: linear, out_dim: 8, {extra}}}\n"
    model = compile_spec(parse_spec_text(text))
    total = sum(p.numel() for p in model.parameters())
    return len(model.plan.steps), total, model.describe()


def test_repeat_with_and_without_shared_weights():
    steps, unshared, text = _counts("repeat: 3")
    assert steps == 3 and unshared == 3 * (8 * 8 + 8)
    assert text.splitlines()[-1] == f"total parameters: {unshared:,}"
    steps, shared, text = _counts("repeat: 3, share_weights: true")
    assert steps == 3 and shared == 8 * 8 + 8
    assert text.splitlines()[-1] == f"total parameters: {shared:,}"
    assert text.count("shared with #0") == 2
    steps, single, _ = _counts("label: one")
    assert steps == 1 and single == 72


def test_shared_repeat_runs_the_same_module():
    text = ("graphdl: 1\ninputs: {node.h: 4}\nmodel:\n  layers:\n"
            "    - {type: linear, out_dim: 4, bias: false, repeat: 2, share_weights: true}\n")
    model = compile_spec(parse_spec_text(text), dtype=torch.float64)
    g = Graph(None, 3, {"node.h": torch.randn(3, 4, dtype=torch.float64)})
    w = model.blocks[0].lin.weight
    # two float64 4×4 products, |h| ≤ 3: ≤ 8·eps·|h|·|w|² ≈ 1e-14 (measured 0); 1e-12 fails a float32 step
    torch.testing.assert_close(model(g)["node.h"], g["node.h"] @ w.T @ w.T, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- every shipped spec
@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_describe_total_equals_parameter_count(path):
    model = compile_spec(parse_spec(str(path), trust=True))  # the project's own specs and examples
    total = sum(p.numel() for p in model.parameters())
    last = model.describe().splitlines()[-1]
    assert last == f"total parameters: {total:,}"


def test_spec_files_found():
    names = {p.name for p in SPEC_FILES}
    assert {"generic_gin.yaml", "graph_network.yaml", "custom_block.yaml"} <= names
