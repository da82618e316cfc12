"""`graphdl verify` names the first block that breaks a symmetry, and says when rotations act trivially."""

from __future__ import annotations

from pathlib import Path

from graphdl.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_a_failing_spec_names_the_first_breaking_block(capsys):
    assert main(["verify", str(ROOT / "specs" / "nbody" / "gnn.yaml")]) == 1
    out = capsys.readouterr().out.splitlines()
    for check in ("rotation", "reflection", "translation"):
        line = next(x for x in out if x.startswith(f"{check}: first broken by"))
        assert line.startswith(f"{check}: first broken by model.layers[0] (raw_coordinates), which writes `node.xv`")
    assert out[-1] == "NOT equivariant: see FAIL rows"


def test_a_break_deep_in_the_stack_is_located_there(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("""\
graphdl: 1
inputs: {node.h: 4, node.pos: 1o}
graph: {kind: complete}
model:
  layers:
    - {type: egnn, hidden: 8}
    - {type: egnn, hidden: 8}
    - {type: raw_coordinates, inputs: [node.pos], output: node.raw}
    - {type: concat, inputs: [node.h, node.raw], output: node.y}
  outputs: [node.y]
""")
    assert main(["verify", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "rotation: first broken by model.layers[2] (raw_coordinates), which writes `node.raw`" in out


def test_a_spec_without_directions_checks_permutations_only(capsys):
    assert main(["verify", str(ROOT / "specs" / "gcn.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == ("no input carries a direction (no 1o or l > 0 irreps field): rotations, reflections and "
                      "translations act trivially on every input, so they are symmetries of any model; checking "
                      "node permutations only")
    rows = [x.split()[1] for x in out[3:-1]]
    assert rows and set(rows) == {"permutation"}
    assert out[-1] == "equivariant"
