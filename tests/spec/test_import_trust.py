"""A spec's `import:` runs code only when whoever runs graphdl says so (`--trust`, `trust=True`).

Without it, every command that reads specs refuses the spec with one line naming the modules,
exits 2 and executes nothing (the module below would write a file if it ever ran).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import graphdl
from graphdl.cli import main
from graphdl.errors import SpecError
from graphdl.spec.loader import imports_trusted, load_spec, trusted_imports

EVIL = """\
import pathlib
pathlib.Path(__file__).with_name("pwned.txt").write_text("ran")
from graphdl.nn.base import Block, register_block
"""

MODEL = """\
graphdl: 1
import: [{imports}]
inputs: {{node.h: 4}}
model:
  layers:
    - {{type: linear, out_dim: 2}}
  outputs: [node.h]
"""

EXPERIMENT = MODEL + """\
task: {{type: regression, target: node.h}}
dataset: {{type: molecule_table, path: mols.csv, targets: [y]}}
"""


def _spec(tmp_path: Path, imports: str = "evil.py", text: str = MODEL) -> Path:
    (tmp_path / "evil.py").write_text(EVIL)
    path = tmp_path / "s.yaml"
    path.write_text(text.format(imports=imports))
    return path


def _message(path: Path, names: str) -> str:
    return (f"{path}:2:9: import: this spec imports Python code ({names}), which would run with your permissions; "
            "nothing was imported. If you trust this spec, pass `--trust` (Python: `trust=True`, or "
            "`with graphdl.trusted_imports(): ...`)")


@pytest.mark.parametrize("argv", [
    ["check", "SPEC"], ["describe", "SPEC"], ["verify", "SPEC"], ["run", "SPEC"], ["bench", "SPEC"],
    ["wl", "check", "SPEC"], ["predict", "SPEC", "--checkpoint", "best.pt", "--smiles", "C"],
], ids=lambda a: "-".join(a[:2]) if a[0] == "wl" else a[0])
def test_every_command_refuses_an_untrusted_import_and_runs_nothing(tmp_path, capsys, argv):
    spec = _spec(tmp_path, text=EXPERIMENT)
    assert main([str(spec) if a == "SPEC" else a for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].removeprefix("error: ") == _message(spec, "`evil.py`")
    assert not (tmp_path / "pwned.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.py", "s.yaml"]  # no run directory either


def test_a_module_name_is_refused_too_and_listed(tmp_path):
    spec = _spec(tmp_path, imports="os, evil.py")
    with pytest.raises(SpecError) as info:
        load_spec(str(spec))
    assert str(info.value) == _message(spec, "`os`, `evil.py`")
    assert not (tmp_path / "pwned.txt").exists()


def test_an_import_in_a_base_spec_is_refused_at_the_base(tmp_path):
    base = _spec(tmp_path)
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {base.name}\nname: child\n")
    with pytest.raises(SpecError) as info:
        load_spec(str(child))
    assert str(info.value) == _message(base, "`evil.py`")
    assert not (tmp_path / "pwned.txt").exists()


def test_the_command_line_process_exits_2_and_writes_nothing(tmp_path):
    spec = _spec(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "graphdl.cli", "check", str(spec)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == _message(spec, "`evil.py`")
    assert not (tmp_path / "pwned.txt").exists()


def test_trust_runs_the_import(tmp_path, capsys):
    spec = _spec(tmp_path)
    assert main(["check", "--trust", str(spec)]) == 0
    assert (tmp_path / "pwned.txt").read_text() == "ran"
    assert capsys.readouterr().out.startswith(f"ok: {spec}")
    assert not imports_trusted()  # the switch does not outlive the command


def test_python_api_trust_keyword_and_context_manager(tmp_path):
    spec = _spec(tmp_path, imports=str(Path(__file__).parents[2] / "examples" / "custom_block.py"))
    with pytest.raises(SpecError, match="this spec imports Python code"):
        graphdl.compile_spec(str(spec))
    assert graphdl.compile_spec(str(spec), trust=True) is not None
    with trusted_imports():
        assert imports_trusted()
        with trusted_imports(False):
            assert not imports_trusted()
            with pytest.raises(SpecError, match="nothing was imported"):
                graphdl.parse_spec(str(spec))
        assert graphdl.parse_spec(str(spec)).name is None
    assert not imports_trusted()


def test_help_says_how_to_trust(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert textwrap.dedent("""\
        specs that run code:
          A spec's `import:` names Python modules""") in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--trust" in capsys.readouterr().out
