"""Every spec in ``specs/molecular/`` trained for its full default epochs, one after the other.

For each spec: ``graphdl run SPEC --out OUT/<spec stem> --seed 0 --no-progress`` as a
subprocess with one torch thread (``OMP_NUM_THREADS=1``, kind to a shared CPU), timed from
start to exit. A run that exits non-zero is a crash: its last line of output is kept. The
table gives the spec, epochs run, best epoch (by validation RMSE), test RMSE / MAE of the
best weights (from ``metrics.json``) and wall time; ``results.json`` in ``OUT`` holds the same.

    python benchmarks/molecular_full_runs.py                          # all specs, full epochs
    python benchmarks/molecular_full_runs.py --specs specs/molecular/gine_freesolv.yaml
    python benchmarks/molecular_full_runs.py --epochs 1 --limit 40    # a smoke run

It exists because ``gine_freesolv.yaml`` once died in epoch 19 of its default run (a last
training batch of one one-atom molecule in a batch norm); ``--epochs``/``--limit`` shorten a
run, and the exit status is 1 when any run crashed. Measured numbers: the module docstring
of each spec, and the report of the run that added this script.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_one(spec: str, out: str, *, seed: int, epochs: int | None, limit: int | None, threads: int) -> dict:
    """Run one spec through the ``graphdl run`` command line; returns its row of the table."""
    cmd = [sys.executable, "-m", "graphdl.cli", "run", spec, "--out", out, "--seed", str(seed), "--no-progress"]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(out, "log.txt")
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, check=False, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    row: dict = {"spec": os.path.relpath(spec, ROOT), "out": out, "wall_s": round(wall, 1),
                 "status": "ok" if proc.returncode == 0 else "crash", "returncode": proc.returncode}
    metrics_path = os.path.join(out, "metrics.json")
    if proc.returncode == 0 and os.path.exists(metrics_path):
        with open(metrics_path) as f:
            m = json.load(f)
        test = m["final"]["test"]
        row.update(epochs=len(m["epochs"]), best_epoch=m["best_epoch"], test_rmse=test.get("rmse"),
                   test_mae=test.get("mae"), test_r2=test.get("r2"))
    else:
        with open(log_path) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        row["error"] = lines[-1] if lines else "(no output)"
        row["epochs"] = sum(1 for ln in lines if ln.startswith("epoch "))
    return row


def _fmt(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    head = "| spec | epochs | best epoch | test RMSE | test MAE | wall (s) | status |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"crash: {r.get('error', '')}"
        lines.append(f"| {r['spec']} | {r.get('epochs', '-')} | {_fmt(r.get('best_epoch'))} | "
                     f"{_fmt(r.get('test_rmse'))} | {_fmt(r.get('test_mae'))} | {r['wall_s']:.1f} | {status} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", nargs="+", help="spec files (default: every specs/molecular/*.yaml)")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "molecular_full"), help="parent of the run dirs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, help="override every spec's epochs (default: the spec's own)")
    ap.add_argument("--limit", type=int, help="only the first N graphs of each dataset")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    args = ap.parse_args(argv)
    specs = [os.path.abspath(s) for s in args.specs] if args.specs else sorted(
        glob.glob(os.path.join(ROOT, "specs", "molecular", "*.yaml")))
    rows = []
    for spec in specs:
        stem = os.path.splitext(os.path.basename(spec))[0]
        row = run_one(spec, os.path.join(args.out, stem), seed=args.seed, epochs=args.epochs, limit=args.limit,
                      threads=args.threads)
        rows.append(row)
        print(f"{row['spec']}: {row['status']} ({row['wall_s']:.1f}s)", flush=True)
    text = table(rows)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"seed": args.seed, "epochs": args.epochs, "limit": args.limit, "threads": args.threads,
                   "runs": rows}, f, indent=2)
        f.write("\n")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
