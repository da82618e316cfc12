"""`make lint` holds on a fresh clone: ruff is in the test extra and the tree passes its rules (pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_passes_on_the_tree():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed: it is part of the `test` extra (pip install -e '.[test]')"
    proc = subprocess.run([ruff, "check", "graphdl", "tests", "benchmarks"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
