"""Frames per second of the MLS-MPM water generator: the NumPy backend against the Taichi one.

The setting is ``datasets/water_drop_2d.yaml``'s: grid 64, 10 substeps per frame, and its
24 + 3 + 3 trajectories' initial particles (1 or 2 blobs of 100-250 particles each), all
integrated together as the generator does. Each backend advances the same initial state by
``--frames`` frames; the time is the median of ``--repeat`` runs, the backends interleaved so
that background load hits all of them. Taichi's start-up (``ti.init`` and the kernel's JIT
compile, or a hit in its offline cache) is timed apart, once per runtime setting, and not in
frames per second. The script also reports the largest position difference of each Taichi
run from NumPy's after the timed frames (float64: round-off, see
``tests/data/test_mpm_taichi.py``).

Usage::

    python benchmarks/mpm_backends.py                       # 30 trajectories, 20 frames, 3 repeats
    python benchmarks/mpm_backends.py --threads 1 2 --json benchmarks/results/mpm_backends.json

``x numpy`` = NumPy time / backend time (> 1: faster than NumPy), from wall-clock time and
from the process's CPU time (``time.process_time``, all threads: on a shared, loaded machine
it counts what the run itself used, not the time it waited for a core). The header prints the
load average before and after. Without Taichi installed the Taichi rows say so and the NumPy
row is still measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

import numpy as np
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from graphdl import benchmarking  # noqa: E402

DATASET = os.path.join(ROOT, "datasets", "water_drop_2d.yaml")


def initial_state(trajectories: int):
    """The dataset's initial particles, the first ``trajectories`` of train, val, test in order."""
    from graphdl.data.particles import WaterParams, water_initial_state

    with open(DATASET) as f:
        data = yaml.safe_load(f)
    data.pop("sha256", None)
    p = WaterParams(**data)
    n_train = min(trajectories, p.n_train)
    n_val = min(trajectories - n_train, p.n_val)
    n_test = min(trajectories - n_train - n_val, p.n_test)
    p = p.model_copy(update={"n_train": n_train, "n_val": n_val, "n_test": n_test})
    state, _ = water_initial_state(p)
    return p.config(), state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trajectories", type=int, default=30, help="how many of the dataset's 30 trajectories")
    ap.add_argument("--frames", type=int, default=20, help="timed frames per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="Taichi CPU threads (float64 rows)")
    ap.add_argument("--no-float32", action="store_true", help="skip the Taichi float32 row (one thread)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    from graphdl.data.mpm import MPMState, simulate

    cfg, state0 = initial_state(args.trajectories)
    particles = len(state0.x)
    have_taichi = importlib.util.find_spec("taichi") is not None
    cases = [("numpy", "float64", 1)]
    cases += [("taichi", "float64", t) for t in args.threads]
    if not args.no_float32:
        cases.append(("taichi", "float32", 1))
    info = benchmarking.machine("cpu", peers=("numpy", "taichi"))  # the peers' versions ('-' if absent)
    load_before = os.getloadavg()

    def fresh():
        return MPMState(state0.x, state0.v, state0.traj, state0.num_traj)

    startup, times, cpu, last = {}, {c: [] for c in cases}, {c: [] for c in cases}, {}
    for _ in range(args.repeat):
        for case in cases:
            backend, precision, threads = case
            if backend == "numpy":
                t0, c0 = time.perf_counter(), time.process_time()
                last[case] = simulate(fresh(), cfg, args.frames + 1)[-1]
                times[case].append(time.perf_counter() - t0)
                cpu[case].append(time.process_time() - c0)
                continue
            if not have_taichi:
                continue
            from graphdl.data import mpm_taichi

            t0 = time.perf_counter()  # runtime (re)initialised and kernel compiled when the setting changes
            mpm_taichi.simulate(fresh(), cfg, 2, precision=precision, threads=threads)
            startup.setdefault(case, time.perf_counter() - t0)
            t0, c0 = time.perf_counter(), time.process_time()
            last[case] = mpm_taichi.simulate(fresh(), cfg, args.frames + 1, precision=precision, threads=threads)[-1]
            times[case].append(time.perf_counter() - t0)
            cpu[case].append(time.process_time() - c0)
    load_after = os.getloadavg()
    ref, ref_cpu = statistics.median(times[cases[0]]), statistics.median(cpu[cases[0]])
    rows = []
    for case in cases:
        backend, precision, threads = case
        row = {"backend": backend, "precision": precision, "threads": threads}
        if not times[case]:
            row["error"] = "taichi not installed (pip install taichi)"
        else:
            t, c = statistics.median(times[case]), statistics.median(cpu[case])
            row.update(seconds=t, frames_per_second=args.frames / t, ms_per_frame=1e3 * t / args.frames,
                       speedup=ref / t, cpu_seconds=c, cpu_ms_per_frame=1e3 * c / args.frames, cpu_speedup=ref_cpu / c,
                       max_abs_dx_vs_numpy=float(np.abs(last[case] - last[cases[0]]).max()))
            if case in startup:
                row["startup_seconds"] = startup[case]
        rows.append(row)
    res = {"machine": info, "load_average_before": load_before, "load_average_after": load_after,
           "trajectories": state0.num_traj, "particles": particles, "frames": args.frames, "repeat": args.repeat,
           "n_grid": cfg.n_grid, "substeps": cfg.substeps, "results": rows}
    print(f"MLS-MPM water ({DATASET.removeprefix(ROOT + os.sep)}): {state0.num_traj} trajectories, {particles} "
          f"particles, grid {cfg.n_grid}, {cfg.substeps} substeps/frame; {args.frames} frames, median of "
          f"{args.repeat}")
    print(benchmarking.banner("cpu", peers=("numpy", "taichi")))
    print(f"  load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
          f"{'/'.join(f'{x:.1f}' for x in load_after)}")
    print("| backend | precision | threads | frames/s | ms/frame | x numpy | CPU ms/frame | x numpy (CPU) | start-up s "
          "| max |Δx| vs numpy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['backend']} | {r['precision']} | {r['threads']} | {r['error']} | | | | | | |")
            continue
        start = f"{r['startup_seconds']:.2f}" if "startup_seconds" in r else "-"
        print(f"| {r['backend']} | {r['precision']} | {r['threads']} | {r['frames_per_second']:.1f} | "
              f"{r['ms_per_frame']:.1f} | {r['speedup']:.2f}x | {r['cpu_ms_per_frame']:.1f} | {r['cpu_speedup']:.2f}x "
              f"| {start} | {r['max_abs_dx_vs_numpy']:.1e} |")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
