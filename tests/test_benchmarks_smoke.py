"""Every script in ``benchmarks/`` runs at a tiny size, so a renamed parameter breaks a test, not a
benchmark a user runs later.

The tiny arguments are :data:`docs_runner.BENCH_TINY` (one source for these tests and the
documentation runner); a script without an entry fails :func:`test_every_script_has_tiny_arguments`.
A script run here must print the machine banner of :mod:`graphdl.benchmarking` (threads, versions,
load average) and write its ``--json`` file with the same facts. Scripts that another test already
runs at a tiny size are listed in :data:`COVERED_ELSEWHERE` with that test, so they do not run twice;
for them this file checks that the test still names the script and that the script still offers
``--device`` and ``--json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from docs_runner import BENCH_TINY, ROOT, scratch

SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "benchmarks").glob("*.py"))

COVERED_ELSEWHERE = {
    "benchmarks/gns.py": "tests/simulate/test_gns_scripts.py",  # --smoke --json, parity asserted there
    "benchmarks/gns_table.py": "tests/simulate/test_gns_scripts.py",  # needs a trained run: that test trains one
    "benchmarks/ipa.py": "tests/test_ipa_benchmark.py",
    "benchmarks/compile_specs.py": "tests/test_compile.py",  # --smoke: one spec through torch.compile
    "benchmarks/molecular_full_runs.py": "tests/train/test_specs_single_atom.py",  # trains a spec end to end
    "benchmarks/ddp.py": "tests/test_scale_benchmarks.py",  # trains a spec in 1 and 2 processes
    "benchmarks/sampling.py": "tests/test_scale_benchmarks.py",  # trains a sampled spec
    # README lines `python benchmarks/X.py ...`, run by tests/test_readme.py with BENCH_TINY appended
    "benchmarks/nbody.py": "README.md",
    "benchmarks/nbody_table.py": "README.md",
}
"""Script -> the test (or the executed README) that runs it at a tiny size."""

NO_DEVICE = {
    "benchmarks/mmff_table.py": "tabulates metrics files and a mean-energy baseline: no model runs on a device",
    "benchmarks/mpm_backends.py": "times the MLS-MPM data generator (NumPy, Taichi's CPU backend): no torch device",
}
"""Scripts without ``--device``, each with its reason."""


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                MPLBACKEND="Agg", OMP_NUM_THREADS="1")


def test_the_script_list_is_what_is_on_disk():
    assert len(SCRIPTS) >= 11, SCRIPTS  # benchmarks/*.py as of this test; a wrong glob finds none
    assert set(COVERED_ELSEWHERE) <= set(SCRIPTS) and set(NO_DEVICE) <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_tiny_arguments(script):
    assert script in BENCH_TINY, (f"{script} has no tiny arguments: add an entry to tests/docs_runner.py's "
                                  "BENCH_TINY so the smoke test can run it")


@pytest.mark.parametrize("script", sorted(COVERED_ELSEWHERE))
def test_scripts_covered_elsewhere_are_still_run_there(script):
    test_file = ROOT / COVERED_ELSEWHERE[script]
    assert test_file.exists(), f"{script} is said to be run by {test_file}, which does not exist"
    needle = f"python {script}" if test_file.name == "README.md" else os.path.basename(script)
    assert needle in test_file.read_text(), f"{test_file} no longer runs {script}"
    proc = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                          cwd=ROOT, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--json" in proc.stdout and ("--device" in proc.stdout) == (script not in NO_DEVICE), proc.stdout


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s not in COVERED_ELSEWHERE])
def test_script_runs_tiny_with_banner_and_json(script, tmp_path):
    assert script in BENCH_TINY, f"{script}: no tiny arguments in BENCH_TINY"
    cwd = scratch(tmp_path)
    out = tmp_path / "out.json"
    device = [] if script in NO_DEVICE else ["--device", "cpu"]
    proc = subprocess.run([sys.executable, script, *BENCH_TINY[script], *device, "--json", str(out)],
                          capture_output=True, text=True, cwd=cwd, env=_env(), timeout=600)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    # the banner: machine, versions, threads and load average beside the table
    assert "torch threads" in proc.stdout and "load average" in proc.stdout, proc.stdout[:2000]
    assert f"torch {torch.__version__}" in proc.stdout, proc.stdout[:2000]
    data = json.loads(out.read_text())
    m = data["machine"]
    assert m["threads"] >= 1 and m["torch"] and m["load_average"] and m["device"] == "cpu", m
    assert len(data) > 1, f"{script} wrote only the machine to --json: {data}"


def test_gpu_check_script_parses_and_its_commands_exist():
    """``benchmarks/gpu_check.sh`` cannot run here (no GPU): its shell syntax is checked with
    ``bash -n`` and every command it would run (``DRY_RUN=1``) names an existing test file or
    benchmark script, and only options that script's ``--help`` lists."""
    script = ROOT / "benchmarks" / "gpu_check.sh"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=dict(_env(), DRY_RUN="1"),
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    benches = [ln.split()[1:] for ln in lines if " benchmarks/" in ln]
    assert {b[0] for b in benches} >= {"benchmarks/pyg_layers.py", "benchmarks/kernels.py", "benchmarks/nbody.py"}
    for ln in lines:
        if " -m pytest " in ln:
            paths = [w for w in ln.split() if w.startswith("tests/")]
            assert paths and all((ROOT / p).exists() for p in paths), ln
    helps = {}
    for argv in benches:
        name = argv[0]
        assert (ROOT / name).exists(), name
        if name not in helps:
            helps[name] = subprocess.run([sys.executable, str(ROOT / name), "--help"], capture_output=True,
                                         text=True, cwd=ROOT, env=_env(), timeout=300).stdout
        flags = [w for w in argv[1:] if w.startswith("--")]
        missing = [f for f in flags if f not in helps[name]]
        assert not missing and "--device" in flags and "--json" in flags, (name, missing, flags)
