"""Data-parallel ``graphdl run --nproc N``: training samples per second for N processes.

The experiment is ``specs/molecular/gine_freesolv.yaml`` (4 GINE layers of 128 channels on FreeSolv,
513 training molecules, global batch 64, so an epoch is 9 optimiser steps), the same global batch
for every N (each process takes 64 / N molecules of every step). Each case is one ``graphdl run``
in a fresh process tree; throughput is the training split's size times the epochs after the first
(which pays for start-up: the fork server, DDP's first bucket rebuild, lazy kernels) divided by
their training time from ``timing.json`` (evaluation excluded). A case is ``NxT``: N processes of
T torch threads each, e.g. ``1x2`` (one process using both cores of a 2-core machine) against
``2x1`` (two processes of one thread).

On the CPU the ranks talk through gloo; with ``--device cuda`` each process takes one GPU
(``cuda:LOCAL_RANK``) and gradients go through NCCL, so N must not exceed the GPUs of the machine.

    python benchmarks/ddp.py                                   # 1x1, 1x2, 2x1 on this machine's CPU
    python benchmarks/ddp.py --cases 1x1 2x1 --epochs 3        # a quicker look
    python benchmarks/ddp.py --device cuda --cases 1x4 2x4 4x4 8x4 --epochs 6 --markdown ddp_gpu.md   # GPUs

Several machines: the same run under torchrun, one line per machine (see the README).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = "specs/molecular/gine_freesolv.yaml"


def _case(text: str) -> tuple[int, int]:
    try:
        n, t = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a case is NxT (processes x threads each), e.g. 2x1; found {text!r}") from None
    if n < 1 or t < 1:
        raise argparse.ArgumentTypeError(f"processes and threads must be positive, found {text!r}")
    return n, t


def run_case(n: int, threads: int, args) -> dict:
    out = os.path.join(args.runs, f"n{n}x{threads}")
    cmd = [sys.executable, "-m", "graphdl.cli", "run", args.spec, "--out", out, "--overwrite", "--no-progress",
           "--epochs", str(args.epochs), "--device", args.device]
    if n > 1:
        cmd += ["--nproc", str(n)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    rec = {"load_average": os.getloadavg(), "processes": n, "threads": threads, "device": args.device,
           "wall_s": wall,
           "command": " ".join(["graphdl", *cmd[3:]])}
    if proc.returncode != 0:
        rec["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return rec
    with open(os.path.join(out, "timing.json"), encoding="utf-8") as f:
        t = json.load(f)
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        m = json.load(f)
    train = m["split"]["sizes"]["train"]
    timed = t["train_seconds"][1:] or t["train_seconds"]
    rec.update({"train_graphs": train, "epochs_timed": len(timed), "train_s": sum(timed),
                "samples_per_s": train * len(timed) / sum(timed), "test_rmse": m["final"]["test"].get("rmse")})
    return rec


def table(records: list[dict]) -> str:
    base = next((r["samples_per_s"] for r in records if "error" not in r and r["processes"] == 1
                 and r["threads"] == 1), None)
    head = ["processes x threads", "device", "samples/s", "vs 1x1", "s per epoch (train)", "test RMSE"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        if "error" in r:
            rows.append(f"| {r['processes']}x{r['threads']} | {r['device']} | {r['error']} | | | |")
            continue
        ratio = f"{r['samples_per_s'] / base:.2f}" if base else ""
        rows.append(f"| {r['processes']}x{r['threads']} | {r['device']} | {r['samples_per_s']:.0f} | {ratio} | "
                    f"{r['train_s'] / r['epochs_timed']:.2f} | {r['test_rmse']:.3f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=SPEC)
    ap.add_argument("--cases", nargs="+", type=_case, default=[(1, 1), (1, 2), (2, 1)], metavar="NxT",
                    help="N processes of T threads each (default: 1x1 1x2 2x1)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per case; the first is not timed (default 4)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--limit", type=int, help="only the first N molecules (a smoke test)")
    ap.add_argument("--runs", default="runs/ddp")
    ap.add_argument("--json", help="write the records here")
    ap.add_argument("--markdown", help="write the table here")
    args = ap.parse_args(argv)
    from graphdl.benchmarking import banner

    print(banner(args.device), flush=True)
    records = []
    for n, t in args.cases:
        rec = run_case(n, t, args)
        records.append(rec)
        print(json.dumps(rec), flush=True)
    text = table(records)
    print(text)
    for path, body in ((args.json, json.dumps({"spec": args.spec, "records": records}, indent=1)),
                       (args.markdown, text)):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(body + "\n")
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
