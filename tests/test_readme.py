"""The README is executed: YAML blocks parse (and full specs pass `graphdl check`, equal to the file
they name), shell lines run on a tiny budget in document order, Python blocks run (tests/docs_runner.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from docs_runner import ROOT, blocks, command_of, needs_gpu, run_command, scratch

from graphdl.nn.base import BLOCKS, load_builtin_blocks
from graphdl.spec.model import SEQUENCE

README = (ROOT / "README.md").read_text()
MAKE_TARGETS = ("demo", "test", "install", "lint", "bench", "clean")


def _check_layers(layers: list) -> None:
    load_builtin_blocks()
    for item in layers:
        assert isinstance(item, dict), f"not a layer: {item}"
        if item.get("type") == SEQUENCE:
            _check_layers(item["layers"])
        else:
            assert item.get("type") in BLOCKS, f"not a registered block: {item}"


def test_readme_yaml_blocks_are_specs_or_valid_fragments(tmp_path):
    found = 0
    for lang, body in blocks(README):
        if lang != "yaml":
            continue
        data = yaml.safe_load(body)
        if isinstance(data, list):  # a fragment of `layers:`: every item names a registered block
            _check_layers(data)
            continue
        assert isinstance(data, dict), body[:200]
        first = body.splitlines()[0]
        if first.startswith("# ") and first[2:].strip().endswith(".yaml") and " " not in first[2:].strip():
            named = ROOT / first[2:].strip()
            assert named.exists(), f"the README shows {named}, which does not exist"
            assert yaml.safe_load(named.read_text()) == data, f"README block differs from {named}"
        if "graphdl" in data:
            found += 1
            path = tmp_path / f"readme_{found}.yaml"
            path.write_text(body)
            proc = subprocess.run([sys.executable, "-m", "graphdl.cli", "check", "--trust", str(path)],
                                  capture_output=True, text=True, cwd=ROOT, timeout=300)
            if proc.returncode and "dataset" in data:  # a named example: check it where it lives
                proc = subprocess.run([sys.executable, "-m", "graphdl.cli", "check", first[2:].strip()],
                                      capture_output=True, text=True, cwd=ROOT, timeout=300)
            assert proc.returncode == 0, proc.stderr
    assert found >= 2


def test_readme_commands_and_python_blocks_run_in_order(tmp_path):
    cwd = scratch(tmp_path)
    ran = 0
    for lang, body in blocks(README):
        if lang == "bash":
            for line in body.splitlines():
                if line.strip().startswith("make "):
                    target = line.split()[1]
                    assert target in MAKE_TARGETS and f"\n{target}:" in (ROOT / "Makefile").read_text()
                    continue
                cmd = command_of(line)
                if cmd is None or needs_gpu(cmd):
                    continue
                proc = run_command(cmd, cwd)
                assert proc.returncode == 0, f"README line `{cmd}` failed:\n{proc.stderr[-3000:]}"
                ran += 1
        elif lang == "python":
            proc = subprocess.run([sys.executable, "-c", body], cwd=cwd, capture_output=True, text=True, timeout=600,
                                  env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"})
            assert proc.returncode == 0, f"README Python block failed:\n{body}\n{proc.stderr[-3000:]}"
            ran += 1
    assert ran >= 15


@pytest.mark.parametrize("line", ["graphdl run specs/molecular/dmpnn_freesolv.yaml --out runs/x   explanation",
                                  "graphdl check specs/gin.yaml      # exit 0"])
def test_command_parsing_cuts_explanations(line):
    assert command_of(line).split()[-1] in ("runs/x", "specs/gin.yaml")
