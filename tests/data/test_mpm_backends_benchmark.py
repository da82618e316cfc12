"""Smoke test of ``benchmarks/mpm_backends.py`` (tiny sizes; the timed table is the benchmark's job)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_times_both_backends(tmp_path):
    out = tmp_path / "mpm.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mpm_backends.py"), "--trajectories", "2",
                           "--frames", "2", "--repeat", "1", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| backend | precision | threads | frames/s |" in proc.stdout and "load average" in proc.stdout
    data = json.loads(out.read_text())
    assert data["trajectories"] == 2 and data["frames"] == 2 and data["n_grid"] == 64
    rows = {(r["backend"], r["precision"], r["threads"]): r for r in data["results"]}
    assert set(rows) == {("numpy", "float64", 1), ("taichi", "float64", 1), ("taichi", "float32", 1)}
    assert rows["numpy", "float64", 1]["frames_per_second"] > 0
    if importlib.util.find_spec("taichi") is None:
        assert rows["taichi", "float64", 1]["error"].startswith("taichi not installed")
        return
    for r in rows.values():
        assert r["frames_per_second"] > 0, r
    # the x bound of tests/data/test_mpm_taichi.py over S = 20 substeps: S eps (rounding of x) +
    # dt S² delta / 2, delta = 4 n eps U, with n <= 100 particles per node and U <= 2 here: 2.2e-14
    eps = np.finfo(np.float64).eps
    assert rows["taichi", "float64", 1]["max_abs_dx_vs_numpy"] <= 20 * eps + 2.5e-4 * 400 * 4 * 100 * eps * 2 / 2
