"""`graphdl check | describe | schema`: outputs, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from graphdl.cli import main
from graphdl.compile import compile_spec
from graphdl.spec.schema import spec_schema

ROOT = Path(__file__).resolve().parents[2]
GIN = str(ROOT / "specs" / "generic_gin.yaml")
GN = str(ROOT / "specs" / "graph_network.yaml")
BAD = """\
    graphdl: 1
    inputs: {node.h: 8}
    model:
      layers:
        - {type: message_passing, aggregate: summ}
    """


def _params(path: str) -> int:
    return sum(p.numel() for p in compile_spec(path).parameters())


def test_check_ok(capsys):
    assert main(["check", GIN, GN]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"ok: {GIN} (3 layers, {_params(GIN):,} parameters)",
                                f"ok: {GN} (7 layers, {_params(GN):,} parameters)"]
    assert err == ""
    assert main(["check", "-q", GIN]) == 0
    assert capsys.readouterr().out == ""


def test_check_error_is_one_located_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(textwrap.dedent(BAD))
    assert main(["check", "bad.yaml", GIN, "nope.yaml"]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"ok: {GIN} (3 layers, {_params(GIN):,} parameters)"]  # the others still run
    assert err.splitlines() == [
        ("bad.yaml:5:42: model.layers[0].aggregate: expected 'sum', 'mean', 'max', 'min' or 'softmax_attention', "
        "found `summ` (text); did you mean `sum`?"),
        "nope.yaml: spec file `nope.yaml` does not exist",
    ]


def test_describe_text_and_json(capsys):
    assert main(["describe", GIN]) == 0
    text = capsys.readouterr().out
    assert text == compile_spec(GIN).describe() + "\n"
    assert "csr spmm (sum)" in text
    assert main(["describe", "--json", GN]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_parameters"] == _params(GN)
    assert sum(s["parameters"] for s in data["steps"]) == data["total_parameters"]
    assert [s["block"] for s in data["steps"]] == ["mlp"] * 3 + ["graph_network"] * 3 + ["mlp"]
    assert data["steps"][3]["writes"] == {"edge.e": "64", "node.h": "64", "graph.u": "64"}
    assert data["outputs"] == {"graph.y": "1"} and data["inputs"] == {"node.h": "8", "edge.e": "4", "graph.u": "2"}


def test_describe_json_counts_shared_weights_once(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("graphdl: 1\ninputs: {node.h: 4}\nmodel:\n  layers:\n"
                    "    - {type: linear, out_dim: 4, repeat: 3, share_weights: true}\n")
    assert main(["describe", "--json", str(spec)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["parameters"] for s in data["steps"]] == [20, 0, 0]
    assert [s["shared_with"] for s in data["steps"]] == [None, 0, 0]
    assert data["total_parameters"] == 20


def test_describe_error_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(textwrap.dedent(BAD))
    assert main(["describe", "bad.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad.yaml:5:42: model.layers[0].aggregate: expected 'sum'")
    assert err.count("\n") == 1


def test_schema_to_file_and_stdout(tmp_path, capsys):
    out = tmp_path / "graphdl.schema.json"
    assert main(["schema", "-o", str(out)]) == 0
    assert capsys.readouterr().err.startswith(f"wrote {out} (")
    assert json.loads(out.read_text()) == spec_schema()
    assert main(["schema", "--no-references"]) == 0
    assert json.loads(capsys.readouterr().out) == spec_schema(references=False)
    assert main(["schema", "-o", str(tmp_path / "missing" / "dir" / "s.json")]) == 2
    assert "cannot write the schema to" in capsys.readouterr().err


def test_schema_import_adds_user_blocks(capsys):
    assert main(["schema", "--import", str(ROOT / "examples" / "custom_block.py")]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$defs"]["block.degree_scale"]["properties"]["type"]["const"] == "degree_scale"
    assert main(["schema", "--import", "graphdl_no_such_module_xyz"]) == 2
    assert "module not found" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["check", "describe", "schema"])
def test_help_teaches_with_examples(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"graphdl {command} " in text


def test_console_entry_point_exit_codes(tmp_path):
    (tmp_path / "bad.yaml").write_text(textwrap.dedent(BAD))
    run = subprocess.run([sys.executable, "-m", "graphdl.cli", "check", "bad.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2
    assert run.stderr.startswith("bad.yaml:5:42: model.layers[0].aggregate:")
    assert run.stdout == ""


def test_every_spec_named_in_the_help_exists():
    import re

    from graphdl.cli import EPILOG

    named = re.findall(r"\b(specs/[\w/]+\.yaml)", EPILOG)
    assert len(named) >= 5
    root = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
    missing = [p for p in named if not os.path.exists(os.path.join(root, p))]
    assert not missing, missing
