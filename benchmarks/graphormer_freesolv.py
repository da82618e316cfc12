"""The Graphormer-style spec beside the D-MPNN spec on FreeSolv, on chemprop's random splits.

For each seed s (default 0, 1, 2) both specs run through ``graphdl run SPEC --split-file F
--seed s`` with F = ``benchmarks/results/transformer/freesolv_chemprop_split_seed{s}.json``:
the split ``chemprop train --data-seed s`` writes for FreeSolv (random 80/10/10, 513/64/65),
made with chemprop 2.3.1's own procedure (``astartes.train_val_test_split`` of the row indices,
``sampler="random"``, ``random_state=s``) and stored in chemprop's ``splits.json`` format. With
astartes importable, ``--check-splits`` regenerates them and checks they are identical.

Each run is a subprocess with one torch thread (kind to a shared CPU), timed from start to
exit. The table gives test RMSE (kcal/mol) per seed and mean ± std (sample std over seeds).

    python benchmarks/graphormer_freesolv.py                      # 2 specs x 3 seeds (~10 min on 2 cores)
    python benchmarks/graphormer_freesolv.py --seeds 0 --epochs 1                 # smoke

Measured numbers: the module docstring of ``specs/transformer/graphormer_freesolv.yaml`` and
``benchmarks/results/transformer/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from graphdl.benchmarking import add_arguments, banner, resolve_device, write_json  # noqa: E402

SPLITS = os.path.join(ROOT, "benchmarks", "results", "transformer")
SPECS = {"graphormer": "specs/transformer/graphormer_freesolv.yaml", "dmpnn": "specs/molecular/dmpnn_freesolv.yaml"}


def split_file(seed: int) -> str:
    return os.path.join(SPLITS, f"freesolv_chemprop_split_seed{seed}.json")


def check_splits(seeds: list[int], n: int = 642) -> None:
    """Regenerate chemprop's random splits with astartes and compare with the stored files."""
    import numpy as np
    from astartes import train_val_test_split

    for s in seeds:
        r = train_val_test_split(np.arange(n), sampler="random", train_size=0.8, val_size=0.1, test_size=0.1,
                                 return_indices=True, random_state=s)
        made = {k: [int(i) for i in v] for k, v in zip(("train", "val", "test"), r[-3:])}
        with open(split_file(s)) as f:
            stored = json.load(f)[0]
        if made != stored:
            raise SystemExit(f"seed {s}: the stored split differs from astartes' (chemprop's) split")
        print(f"seed {s}: stored split equals chemprop's (astartes) split")


def run_spec(spec: str, out: str, seed: int, epochs: int | None, threads: int, device: str = "cpu") -> dict:
    cmd = [sys.executable, "-m", "graphdl.cli", "run", spec, "--out", out, "--seed", str(seed), "--no-progress",
           "--device", device,
           "--split-file", split_file(seed), "--overwrite"]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    t0 = time.perf_counter()
    with open(out + ".log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        with open(out + ".log") as f:
            tail = f.read()[-2000:]
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    return {"rmse": m["final"]["test"]["rmse"], "mae": m["final"]["test"]["mae"], "seconds": seconds,
            "best_epoch": m["best_epoch"], "sizes": [m["split"]["sizes"][k] for k in ("train", "val", "test")]}


def mean_std(xs: list[float]) -> str:
    return f"{xs[0]:.3f}" if len(xs) == 1 else f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="override both specs' epochs (smoke runs)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench_graphormer_freesolv")
    ap.add_argument("--check-splits", action="store_true", help="regenerate the splits with astartes and compare")
    add_arguments(ap)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    print(banner(device), flush=True)
    if args.check_splits:
        check_splits(args.seeds)
    out = os.path.abspath(args.out)
    rows: dict[str, dict[int, dict]] = {name: {} for name in SPECS}
    for s in args.seeds:
        for name, spec in SPECS.items():
            r = rows[name][s] = run_spec(spec, os.path.join(out, f"{name}_seed{s}"), s, args.epochs, args.threads,
                                               str(device))
            print(f"  seed {s}: {name:<10} test RMSE {r['rmse']:.3f} (best epoch {r['best_epoch']}, split "
                  f"{'/'.join(map(str, r['sizes']))}) in {r['seconds']:.1f} s", flush=True)
    print()
    print(f"FreeSolv test RMSE (kcal/mol), chemprop random 80/10/10 splits (--data-seed {args.seeds}), same rows "
          f"for both specs, {args.threads} thread(s) per run")
    print(f"{'seed':>6} | {'Graphormer RMSE':>15} | {'time (s)':>8} | {'D-MPNN RMSE':>11} | {'time (s)':>8}")
    print("-" * 62)
    for s in args.seeds:
        g, d = rows["graphormer"][s], rows["dmpnn"][s]
        print(f"{s:>6} | {g['rmse']:>15.3f} | {g['seconds']:>8.1f} | {d['rmse']:>11.3f} | {d['seconds']:>8.1f}")
    g_rmse = [rows["graphormer"][s]["rmse"] for s in args.seeds]
    d_rmse = [rows["dmpnn"][s]["rmse"] for s in args.seeds]
    g_sec = statistics.mean(rows["graphormer"][s]["seconds"] for s in args.seeds)
    d_sec = statistics.mean(rows["dmpnn"][s]["seconds"] for s in args.seeds)
    print(f"{'mean':>6} | {mean_std(g_rmse):>15} | {g_sec:>8.1f} | {mean_std(d_rmse):>11} | {d_sec:>8.1f}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"seeds": args.seeds, "runs": rows}, f, indent=2)
    write_json(args.json, {"seeds": args.seeds, "runs": rows}, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
