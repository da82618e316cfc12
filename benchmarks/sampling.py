"""Node classification on one large graph: time per epoch, peak memory and test accuracy of ``graphdl run``.

The report of issue 13 (benchmarks/results/scale/README.md): a 2-layer GraphSAGE-mean trained with
neighbour sampling (fanouts [15, 10], 1,024 seed nodes per batch) on the 1,000,000-node
degree-corrected SBM of ``datasets/sbm_1m.yaml``, beside the same model on the 100,000-node graph
of the same generator, trained both with sampling and full-batch (the whole graph every step).

Method: every spec runs as its own ``graphdl run`` process (``--threads`` torch threads), so one
run cannot inherit another's heap. Its peak resident set size (RSS) is the kernel's high-water
mark for that process (``os.wait4``'s ``ru_maxrss``): the graph, its CSR, the sampler's batches,
the model, the optimizer and the full-graph evaluation, everything the operating system had to
provide. glibc returns freed blocks of 64 KiB and more at once (``MALLOC_MMAP_THRESHOLD_``), so the
peak follows live memory. Time per epoch: ``timing.json`` (training, then validation over the
whole graph); the mean over the epochs, and the training part alone. Test accuracy: the best
validation epoch's weights on the test nodes (``metrics.json``). The dataset is generated on first
use and cached (``$GRAPHDL_CACHE/dc_sbm``); that time is not in the table.

    python benchmarks/sampling.py                                         # the three runs of the report
    python benchmarks/sampling.py --specs specs/sampling/sage_sbm_100k.yaml --epochs 1 --steps-per-epoch 2
    python benchmarks/sampling.py --markdown benchmarks/results/scale/sampling.md --json benchmarks/results/scale/sampling.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = ["specs/sampling/sage_sbm_1m.yaml", "specs/sampling/sage_sbm_100k.yaml", "specs/sampling/sage_sbm_100k_full.yaml"]


def _env(threads: int) -> dict:
    return dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", OMP_NUM_THREADS=str(threads),
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_one(spec: str, out: str, args) -> dict:
    """One ``graphdl run`` in a child process; its record (or ``error``)."""
    cmd = [sys.executable, "-m", "graphdl.cli", "run", spec, "--out", out, "--overwrite", "--no-progress"]
    for flag in ("epochs", "steps_per_epoch", "limit", "device"):
        v = getattr(args, flag)
        if v is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(v)]
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    log = out.rstrip("/") + ".log"
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(args.threads))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    rec = {"load_average": os.getloadavg(), "spec": spec, "out": out, "log": log,
           "command": " ".join(cmd[2:]).replace("graphdl.cli", "graphdl", 1),
           "peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": wall, "threads": args.threads}
    if proc.returncode != 0:
        with open(log, encoding="utf-8") as f:
            tail = f.read().strip().splitlines()[-1:] or ["?"]
        rec["error"] = f"exit {proc.returncode}: {tail[0]}"
        return rec
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        m = json.load(f)
    with open(os.path.join(out, "timing.json"), encoding="utf-8") as f:
        t = json.load(f)
    with open(os.path.join(out, "spec.yaml"), encoding="utf-8") as f:
        import yaml

        resolved = yaml.safe_load(f)
    loader = (resolved.get("train") or {}).get("loader") or {"type": "graphs"}
    rec.update({
        "name": m["spec"], "dataset": m["dataset"]["name"], "split": m["split"]["sizes"],
        "loader": "sampled " + str(loader.get("fanouts")) if loader.get("type") == "neighbor" else "full batch",
        "epochs": len(m["epochs"]), "best_epoch": m["best_epoch"],
        "epoch_s": sum(t["epoch_seconds"]) / len(t["epoch_seconds"]),
        "train_epoch_s": sum(t["train_seconds"]) / len(t["train_seconds"]),
        "total_s": t["total_seconds"],
        "test_accuracy": m["final"]["test"].get("accuracy"), "val_accuracy": m["final"]["val"].get("accuracy"),
    })
    return rec


def table(records: list[dict]) -> str:
    head = ["spec", "graph", "training", "epochs", "s/epoch", "train s/epoch", "total s", "peak RSS MiB",
            "test acc"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        if "error" in r:
            rows.append(f"| {r['spec']} | | | | | | | {r['peak_rss_mib']:.0f} | {r['error']} |")
            continue
        rows.append(f"| {r['name']} | {r['dataset']} | {r['loader']} | {r['epochs']} | {r['epoch_s']:.1f} | "
                    f"{r['train_epoch_s']:.1f} | {r['total_s']:.0f} | {r['peak_rss_mib']:.0f} | "
                    f"{100 * r['test_accuracy']:.2f} % |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", nargs="+", default=SPECS, metavar="SPEC")
    ap.add_argument("--runs", default="runs/scale", help="where the runs go (one directory per spec)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each run (default 1)")
    ap.add_argument("--epochs", type=int, help="override train.epochs of every spec")
    ap.add_argument("--steps-per-epoch", type=int, help="override train.steps_per_epoch (a quick look)")
    ap.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", help="write the records here")
    ap.add_argument("--markdown", help="write the table here")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None, help="override train.device of every spec")
    args = ap.parse_args(argv)
    from graphdl.benchmarking import banner

    print(banner(args.device or "cpu"), flush=True)
    records = []
    for spec in args.specs:
        name = os.path.splitext(os.path.basename(spec))[0]
        rec = run_one(spec, os.path.join(args.runs, name), args)
        records.append(rec)
        print(json.dumps(rec), flush=True)
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"records": records}, f, indent=1)
    text = table(records)
    print(text)
    if args.markdown:
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
