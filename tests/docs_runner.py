"""Run the documentation: README code blocks and ``--help`` examples, on a tiny budget.

Commands run in a scratch directory whose ``specs``, ``datasets``, ``examples`` and ``benchmarks``
link to the repository, so a documented relative path works and every output lands in the scratch
directory. The budget is added, never a different command: ``graphdl run`` gets ``--epochs 1``
(unless the line sets its own), ``--limit 200`` and ``--steps-per-epoch 2``; ``graphdl rollout`` 4 steps; ``graphdl wl check`` one epoch and one pair;
``python benchmarks/X.py`` the tiny sizes of :data:`BENCH_TINY` (a script missing there fails the
test: add its tiny arguments when you document it).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LINKED = ("specs", "datasets", "examples", "benchmarks")
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)

BENCH_TINY = {
    "benchmarks/nbody_table.py": ["--models", "linear", "--runs", "runs/nbody_table", "--epochs", "1", "--limit",
                                  "200", "--train"],
    "benchmarks/nbody.py": ["--batch", "2", "--repeat", "1", "--warmup", "0"],
    "benchmarks/molecular.py": ["--seeds", "0", "--epochs", "1", "--our-epochs", "1", "--skip-huuskonen",
                                "--skip-chemprop", "--out", "runs/molecular_bench"],
    "benchmarks/mmff_table.py": ["--max-molecules", "8"],
    "benchmarks/dgl_interop.py": ["--nodes", "60", "--edges", "300", "--dim", "8", "--repeats", "1", "--warmup", "0",
                                  "--sections", "lowering"],
    "benchmarks/pyg_layers.py": ["--nodes", "200", "--edges", "1000", "--repeats", "1", "--warmup", "0", "--all"],
    "benchmarks/kernels.py": ["--nodes", "200", "--edges", "1000", "--repeat", "1"],
    "benchmarks/cueq_tfn.py": ["--graphs", "2", "--nodes", "5", "--repeat", "1"],
    "benchmarks/molecular_full_runs.py": ["--epochs", "1", "--limit", "40"],
    "benchmarks/char_lm.py": ["--epochs", "1", "--max-steps", "2", "--max-val", "4", "--noise-seeds"],
    "benchmarks/graphormer_freesolv.py": ["--seeds", "0", "--epochs", "1", "--out", "runs/graphormer_bench"],
    "benchmarks/transformer.py": ["--batch", "2", "--tokens", "16", "--dim", "32", "--ff", "64", "--layers", "1",
                                  "--iters", "1"],
    "benchmarks/gns.py": ["--smoke"],
    "benchmarks/geometric.py": ["--graphs", "2", "--atoms", "6", "--repeats", "1", "--warmup", "0"],
    "benchmarks/compile_specs.py": ["--smoke"],
    "benchmarks/gns_table.py": ["--steps", "4"],
    "benchmarks/ipa.py": ["--sizes", "16", "--repeats", "1", "--warmup", "0"],
    "benchmarks/mpm_backends.py": ["--trajectories", "2", "--frames", "2", "--repeat", "1", "--threads", "1"],
    "benchmarks/ddp.py": ["--cases", "1x1", "2x1", "--epochs", "2", "--limit", "40", "--runs", "runs/ddp"],
    "benchmarks/sampling.py": ["--specs", "specs/sampling/sage_sbm_100k.yaml", "--epochs", "1", "--steps-per-epoch",
                               "2", "--runs", "runs/scale"],
}


def scratch(tmp: Path) -> Path:
    for name in LINKED:
        (tmp / name).symlink_to(ROOT / name)
    return tmp


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block, in document order."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(text)]


def _budget(argv: list[str]) -> list[str]:
    if argv[:2] == ["graphdl", "run"]:
        extra = [] if "--epochs" in argv else ["--epochs", "1"]
        extra += [] if "--limit" in argv else ["--limit", "200"]
        extra += [] if "--steps-per-epoch" in argv else ["--steps-per-epoch", "2"]
        return argv + extra + ["--no-progress"]
    if argv[:2] == ["graphdl", "rollout"]:
        return argv + ([] if "--steps" in argv else ["--steps", "4"])
    if argv[:2] == ["graphdl", "bench"]:
        return argv + ["--repeat", "1", "--warmup", "0"]
    if argv[:3] == ["graphdl", "wl", "check"]:
        return argv + ["--epochs", "1", "--limit", "1", "--relabelings", "20"]
    if argv[:1] == ["python"] and len(argv) > 1 and argv[1].startswith("benchmarks/"):
        if argv[1] not in BENCH_TINY:
            raise AssertionError(f"{argv[1]} is documented but tests/docs_runner.py has no tiny arguments for it")
        return [sys.executable] + argv[1:] + BENCH_TINY[argv[1]]
    return argv


def command_of(line: str) -> str | None:
    """The shell command of a documented line (comments and explanations cut), or None for prose."""
    line = line.strip()
    if not line.startswith(("graphdl ", "python ")):
        return None
    line = re.split(r"\s#\s|\s#$", line + " ", maxsplit=1)[0].strip()
    return re.split(r"\s{3,}", line, maxsplit=1)[0].strip()  # an explanation column after 3+ spaces


def run_command(cmd: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run one documented command with its budget: a plain ``graphdl`` line in this process (no
    interpreter start-up per line), anything with pipes or redirections, and scripts, in a shell."""
    m = re.search(r"\s(\||>|&&)\s", cmd)
    head, rest = (cmd[:m.start()], cmd[m.start():]) if m else (cmd, "")
    words = shlex.split(head)
    argv = _budget(words)
    if argv[0] == "graphdl" and not rest and not re.search(r"[*?]", head):  # globs need the shell
        return _in_process(argv[1:], cwd)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    exe = {"graphdl": f"{shlex.quote(sys.executable)} -m graphdl.cli", "python": shlex.quote(sys.executable)}
    first, _, args = head.strip().partition(" ")
    extra = argv[len(words):] if argv[1:len(words)] == words[1:] else []
    full = " ".join([exe.get(first, first), args, shlex.join(extra)]) + rest  # the documented text, as written
    return subprocess.run(full, shell=True, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                          executable="/bin/bash")


def _in_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    import contextlib
    import io

    from graphdl.cli import main

    out, err = io.StringIO(), io.StringIO()
    here, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as e:  # argparse errors and --help
                code = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(here)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["graphdl", *args], code, out.getvalue(), err.getvalue())


def needs_gpu(cmd: str) -> bool:
    return "--device cuda" in cmd and not torch.cuda.is_available()


__all__ = ["BENCH_TINY", "ROOT", "blocks", "command_of", "needs_gpu", "run_command", "scratch"]
