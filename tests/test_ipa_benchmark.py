"""Smoke test of ``benchmarks/ipa.py`` (tiny sizes; the timed table is the benchmark's job, not a test's)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("invariant_point_attention", reason="test extra: invariant-point-attention==0.2.2")

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_runs_both_implementations(tmp_path):
    out = tmp_path / "ipa.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ipa.py"), "--sizes", "16", "--repeats", "1",
                           "--warmup", "0", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    head = [c.strip() for c in proc.stdout.splitlines()[-3].strip("|").split("|")]
    assert head == ["N", "ours ms", "theirs ms", "speed-up", "ours MiB", "theirs MiB", "memory ratio"]
    data = json.loads(out.read_text())
    impls = {r["impl"] for r in data["results"]}
    assert impls == {"graphdl", "invariant_point_attention"}
    for r in data["results"]:
        assert "error" not in r, r
        assert r["n"] == 16 and r["ms"] > 0 and r["peak_mib"] >= 0
