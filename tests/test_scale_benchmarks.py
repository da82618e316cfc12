"""Smoke tests of ``benchmarks/ddp.py`` and ``benchmarks/sampling.py`` (tiny sizes; the measured
tables are the benchmarks' job, in benchmarks/results/scale, not a test's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str, args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def _header(stdout: str) -> list[str]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("| "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_ddp_benchmark_times_a_case(tmp_path):
    # one process: the two-process launcher is tested in tests/train/test_ddp.py
    out = tmp_path / "ddp.json"
    proc = _script("ddp.py", ["--spec", str(ROOT / "specs/molecular/gine_freesolv.yaml"), "--cases", "1x1",
                              "--epochs", "2", "--limit", "40", "--runs", str(tmp_path / "runs"), "--json", str(out)],
                   tmp_path)
    assert _header(proc.stdout) == ["processes x threads", "device", "samples/s", "vs 1x1", "s per epoch (train)",
                                    "test RMSE"]
    (rec,) = json.loads(out.read_text())["records"]
    assert rec["processes"] == 1 and rec["epochs_timed"] == 1 and rec["train_graphs"] == 32
    assert rec["samples_per_s"] > 0 and rec["command"].startswith("graphdl run ")


def test_sampling_benchmark_reports_time_memory_and_accuracy(tmp_path):
    (tmp_path / "data.yaml").write_text("graphdl: 1\ntype: dc_sbm\nname: sbm_tiny\nnum_nodes: 1000\nnum_edges: 8000\n"
                                        "num_blocks: 4\nfeatures: 8\nseed: 0\n")
    spec = (ROOT / "specs/sampling/sage_sbm_1m.yaml").read_text()
    spec = spec.replace("../../datasets/sbm_1m.yaml", "data.yaml").replace("node.feat: 32", "node.feat: 8")
    (tmp_path / "tiny.yaml").write_text(spec.replace("num_classes: 16", "num_classes: 4")
                                        .replace("out_dim: 16", "out_dim: 4"))
    out = tmp_path / "sampling.json"
    proc = _script("sampling.py", ["--specs", "tiny.yaml", "--epochs", "1", "--runs", "runs", "--json", str(out)],
                   tmp_path, GRAPHDL_CACHE=str(tmp_path / "cache"))
    assert _header(proc.stdout) == ["spec", "graph", "training", "epochs", "s/epoch", "train s/epoch", "total s",
                                    "peak RSS MiB", "test acc"]
    (rec,) = json.loads(out.read_text())["records"]
    assert rec["loader"] == "sampled [15, 10]" and rec["split"] == {"train": 100, "val": 100, "test": 800}
    assert rec["peak_rss_mib"] > 50 and 0 <= rec["test_accuracy"] <= 1 and rec["epochs"] == 1
