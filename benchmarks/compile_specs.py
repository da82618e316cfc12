"""``torch.compile`` of every spec's model against eager: compile time, error, recompiles.

Usage::

    python benchmarks/compile_specs.py                      # every spec under specs/, Inductor
    python benchmarks/compile_specs.py specs/gat.yaml --backend aot_eager
    python benchmarks/compile_specs.py --limit 3 --json out.json
    python benchmarks/compile_specs.py --smoke              # one small spec, Dynamo only, tiny graphs

Each spec's model (``compile_spec``, float32) goes through
:func:`graphdl.testing.compile.check_compiled`: evaluation and training interleaved, on the
same and on new batches (random graphs holding the spec's input fields), with warm and cold
structure caches, each call compared with the eager model. The table gives per spec:

* ``compile s``: wall time of the calls that compiled graphs (Dynamo + AOTAutograd + backend);
* ``graphs``: graphs handed to the backend during the warm-up (one per grad mode and frame;
  a graph break adds a frame, a Dynamo restart counts again);
* ``eval err`` / ``train err``: worst ``max |compiled - eager| / max |eager|`` over outputs
  (and, in training, parameter gradients and buffers), in float32 eps;
* ``new sizes``: whether batches of new graph counts and sizes compiled anything
  (``dynamic=True``; they should not);
* ``result``: ``pass`` when all calls ran, errors are within ``TOL_EPS`` eps (or, for a call
  above it, the compiled result is no farther from the call's float64 run than ``FP64_FACTOR``
  times eager float32 is: both distances are shown) and nothing recompiled; otherwise the
  failing call and the first line of the error.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
SMOKE_SPEC = os.path.join("specs", "wl", "gin.yaml")
SMOKE_SIZES = ((3, 4), (5, 2, 3), (4, 4), (6, 3, 2, 5), (7, 2))  # no one-graph stage: a smoke run


def all_specs() -> list[str]:
    paths = glob.glob(os.path.join(ROOT, "specs", "**", "*.yaml"), recursive=True)
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def run_one(spec: str, backend: str, sizes=None, trace_forces: bool = True, dynamic: bool | None = True,
            device: str = "cpu") -> dict:
    import torch

    from graphdl.compile import compile_spec
    from graphdl.testing.compile import TOL_EPS, check_compiled, fill_zero_parameters, spec_batches

    torch.manual_seed(0)
    t = time.perf_counter()
    try:
        model = compile_spec(os.path.join(ROOT, spec))
        fill_zero_parameters(model)  # zero-initialised projections would zero the gradients behind them
        batches = spec_batches(model) if sizes is None else spec_batches(model, sizes=sizes)
        model.to(device)
        batches = [b.to(device) for b in batches]
    except Exception as e:  # noqa: BLE001 - a spec that does not build is a row of the table
        return {"spec": spec, "error": f"build: {type(e).__name__}: {e}", "passed": False}
    forces = model.plan.forces is not None
    # forces are differentiated again in training: only possible with autograd.grad traced
    config = {"trace_autograd_ops": True} if forces and trace_forces else None
    r = check_compiled(model, batches, name=spec, backend=backend, dynamo_config=config, dynamic=dynamic)
    eps = torch.finfo(torch.float32).eps
    return {
        "spec": spec, "backend": backend, "forces": forces, "trace_autograd_ops": bool(config),
        "compile_s": round(r.compile_s, 1), "graphs": r.graphs, "graph_breaks": r.graph_breaks,
        "eval_err_eps": r.eval_err / eps, "train_err_eps": r.train_err / eps,
        "new_size_graphs": r.new_size_graphs, "single_graph_graphs": r.single_graph_graphs, "error": r.error, "stage": r.stage,
        "passed": r.passed(TOL_EPS * eps), "wall_s": round(time.perf_counter() - t, 1),
        # calls above the bound, judged against their float64 run: (stage, compiled, eager) eps
        "fp64": [(stage, c / eps, e / eps) for stage, c, e in r.fp64],
    }


def _fmt_err(x: float | None) -> str:
    if x is None:
        return "-"
    return "inf" if x == float("inf") else f"{x:.1f}"


def table(rows: list[dict]) -> str:
    from graphdl.testing.compile import TOL_EPS

    lines = ["| spec | compile s | graphs | eval err (eps) | train err (eps) | new sizes recompile | result |",
             "|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if "graphs" not in r:
            lines.append(f"| {r['spec']} | - | - | - | - | - | FAIL {r['error']} |")
            continue
        result = "pass" if r["passed"] else "FAIL"
        if r["error"]:
            result += f" at {r['stage']}: {r['error']}"
        elif not r["passed"]:
            result += f" (bound {TOL_EPS} eps)" if r["new_size_graphs"] == 0 else ""
        if r.get("fp64"):
            c, e = max((c, e) for _, c, e in r["fp64"])
            result += f" (above {TOL_EPS} eps; vs float64: compiled {c:.0f}, eager {e:.0f} eps)"
        recompile = "no" if r["new_size_graphs"] == 0 else f"yes ({r['new_size_graphs']})"
        late = "new size" in r["stage"] or "one graph" in r["stage"] or r["stage"] == "eval b1"
        if r["error"] and not late:
            recompile = "-"
        spec = r["spec"] + (" (forces)" if r.get("forces") else "")
        lines.append(f"| {spec} | {r['compile_s']:.1f} | {r['graphs']} | {_fmt_err(r['eval_err_eps'])} | "
                     f"{_fmt_err(r['train_err_eps'])} | {recompile} | {result} |")
    return "\n".join(lines)


def machine_line() -> str:
    """Machine, versions, threads and load: what the times and errors of a run depend on."""
    import platform

    import torch

    try:
        load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"machine: {cpu}, {os.cpu_count()} cpus; python {platform.python_version()}, torch {torch.__version__}; "
            f"torch threads {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); "
            f"load average (1/5/15 min) {load}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("specs", nargs="*", help="spec files (default: every spec under specs/)")
    ap.add_argument("--backend", default="inductor", help="Dynamo backend (inductor, aot_eager, eager)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N specs")
    ap.add_argument("--smoke", action="store_true",
                    help=f"tiny run: {SMOKE_SPEC} on small graphs with the eager backend (Dynamo only)")
    ap.add_argument("--dynamic", choices=["true", "auto"], default="true",
                    help="torch.compile(dynamic=True) (default), or auto: dynamic=None, Dynamo's automatic "
                         "dynamic shapes (static first, dynamic after the first size change)")
    ap.add_argument("--json", default=None, help="write the rows here as JSON (rewritten after each spec)")
    ap.add_argument("--breaks", action="store_true", help="print graph-break reasons under the table")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows already in --json (same backend) and run only the other specs; rows of "
                         "specs not given stay in the file")
    args = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    from graphdl.benchmarking import resolve_device

    resolve_device(args.device)  # one line when CUDA is asked for and absent
    specs = args.specs or ([SMOKE_SPEC] if args.smoke else all_specs())
    backend = "eager" if args.smoke and args.backend == "inductor" else args.backend
    if args.limit is not None:
        specs = specs[: args.limit]
    start = machine_line()
    print(start, file=sys.stderr, flush=True)
    rows, others = [], []
    if args.resume and args.json and os.path.exists(args.json):
        with open(args.json) as fh:
            for r in json.load(fh):
                mine = r["spec"] in specs and r.get("backend", backend) == backend
                (rows if mine else others).append(r)  # rows of specs not asked for stay in the file
    done = {r["spec"] for r in rows}
    for spec in specs:
        if spec in done:
            continue
        print(f"{spec} ...", file=sys.stderr, flush=True)
        rows.append(run_one(spec, backend, SMOKE_SIZES if args.smoke else None,
                            dynamic=True if args.dynamic == "true" else None, device=args.device))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(others + rows, fh, indent=1)
    rows.sort(key=lambda r: specs.index(r["spec"]))
    dyn = "True" if args.dynamic == "true" else "None"
    print(f"torch.compile(model, dynamic={dyn}, backend={backend!r}) vs eager, float32")
    print(f"at start: {start}")
    print(f"at end:   {machine_line()}")
    print(table(rows))
    if args.breaks:
        for r in rows:
            for b in r.get("graph_breaks", []):
                print(f"{r['spec']}: graph break: {b}")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
