"""Smoke tests of benchmarks/gns.py (speed and parity vs the plain PyTorch reference) and
benchmarks/gns_table.py (accuracy table of a run), on tiny settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "train"))
from test_simulate_task import _spec  # noqa: E402

sys.path.pop(0)


def _env(tmp_path):
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "GRAPHDL_CACHE": str(tmp_path / "cache")}


def test_benchmark_script_smoke(tmp_path):
    out = tmp_path / "res.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gns.py"), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    assert "same graph as cKDTree: True" in proc.stdout
    assert "| train step (graph + fwd + bwd + Adam) |" in proc.stdout and "cKDTree" in proc.stdout
    import json

    res = json.loads(out.read_text())
    assert res["parity"]["max_abs_diff"] <= res["parity"]["bound"]


def test_accuracy_table_script_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHDL_CACHE", str(tmp_path / "cache"))
    from graphdl.train.runner import run

    spec = _spec(tmp_path, layers=1)
    run(spec, out=str(tmp_path / "run"))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gns_table.py"), "--run", str(tmp_path / "run"),
                           "--steps", "6"], capture_output=True, text=True, env=_env(tmp_path), timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| MSE5 |" in proc.stdout and "| full-rollout MSE |" in proc.stdout
    assert "training wall:" in proc.stdout


@pytest.mark.parametrize("name", ["water_drop_2d.yaml", "water_drop_2d_paper.yaml", "nbody.yaml"])
def test_gns_specs_check(name):
    from graphdl.cli import main as cli

    assert cli(["check", str(ROOT / "specs" / "gns" / name)]) == 0
