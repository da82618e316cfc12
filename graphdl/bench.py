"""``graphdl bench SPEC``: how fast a compiled spec runs, per batch, on this machine.

The model is built from the spec and run on one batch: the first ``--batch-size`` graphs of
the experiment's dataset when the spec has a ``dataset:`` section (``--synthetic`` skips it),
otherwise random graphs holding every declared input (``--nodes`` per graph, ``--degree``
random in-edges per node; positions ``~ N(0, s²)`` with ``s`` set from a radius cutoff). Three
phases are timed separately, each the median of ``--repeat`` runs after ``--warmup``:

* ``prepare``: building the message-passing graph of the spec (complete / radius / knn; the
  cache is cleared before each run, so this is the per-step cost when positions move);
* ``forward``: ``model.eval()`` under ``torch.no_grad()`` (the graph prepared once);
* ``train step``: forward, ``loss = Σ_outputs mean(out²)``, backward and an Adam step.

On CUDA every phase ends with ``torch.cuda.synchronize()`` and the peak memory is reported.
The numbers are for comparing specs, devices and graphdl versions on one machine; a
comparison with another library belongs in ``benchmarks/`` (same process, same data).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

EPILOG = """examples:
  graphdl bench specs/gin.yaml --nodes 30 --batch-size 128      random graphs with the spec's inputs
  graphdl bench specs/nbody/egnn.yaml --threads 1               first batch of the N-body dataset
  graphdl bench specs/tfn.yaml --device cuda --json tfn.json    on a GPU, written as JSON too
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time a spec's graph building, forward pass and training step on one batch",
        description=__doc__.split("\n\n", 1)[1], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="SPEC", help="spec file (YAML)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="graphs per batch (default: the spec's train.batch_size, else 64)")
    p.add_argument("--synthetic", action="store_true", help="random graphs even when the spec names a dataset")
    p.add_argument("--nodes", type=int, default=20, help="nodes per random graph (default 20)")
    p.add_argument("--degree", type=int, default=4, help="random in-edges per node of a random graph (default 4)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per phase (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", default=None, help="also write the results as JSON")
    p.set_defaults(func=cmd_bench)


def _batch(args, model, spec_path: str, batch_size: int, dtype):
    """(batch, description) — dataset graphs when the spec has a dataset and not --synthetic."""
    from graphdl.data.graph import collate

    spec = model.plan.spec
    if "dataset" in spec.sections and not args.synthetic:
        from graphdl.train.runner import prepare

        exp = prepare(spec_path)
        ds = exp.data.load()
        graphs = ds.graphs[:batch_size]
        batch = collate(graphs)
        batch = batch.replace(**{k.replace(".", "__"): v.to(dtype) for k, v in batch.fields.items()
                                 if v.is_floating_point()})
        name = getattr(exp.data.params, "name", None) or exp.data.cls.name
        return batch, f"{len(graphs)} graphs of dataset {name}"
    from graphdl.testing.equivariance import random_graph_for

    gs = spec.graph
    scale = 1.0 if gs.cutoff is None else 0.6 * float(gs.cutoff)
    batch = random_graph_for(model.input_fields, [args.nodes] * batch_size, degree=min(args.degree, max(args.nodes - 1, 1)),
                             scale=scale, dtype=dtype, seed=args.seed)
    return batch, f"{batch_size} random graphs of {args.nodes} nodes"


def _time(fn, repeat: int, warmup: int, sync) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def bench_spec(args) -> dict:
    from graphdl.compile import compile_spec
    from graphdl.spec.model import parse_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        from graphdl.errors import GraphDLError

        raise GraphDLError("--device cuda: torch reports no CUDA device here; use --device cpu")
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    spec = parse_spec(args.spec)
    model = compile_spec(spec, dtype=dtype).to(device)
    bs = args.batch_size or getattr(spec.sections.get("train"), "batch_size", None) or 64
    batch, what = _batch(args, model, args.spec, bs, dtype)
    batch = batch.to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def prepare_once():
        batch._cache.clear()
        model.prepare(batch)

    prepared = model.prepare(batch)
    model.eval()

    def forward():
        with torch.no_grad():
            model(prepared)

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step():
        out = model(prepared)
        loss = sum((v.float() ** 2).mean() for v in out.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    results = {"prepare": _time(prepare_once, args.repeat, args.warmup, sync),
               "forward": _time(forward, args.repeat, args.warmup, sync)}
    model.train()
    results["train step"] = _time(train_step, args.repeat, args.warmup, sync)
    batch._cache.clear()
    info = {
        "spec": args.spec, "device": str(device), "dtype": args.dtype, "batch": what,
        "graphs": int(prepared.num_graphs), "nodes": int(prepared.num_nodes), "edges": int(prepared.num_edges),
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(), "repeat": args.repeat,
        "ms": {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in results.items()},
    }
    if device.type == "cuda":
        info["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return info


def cmd_bench(args) -> int:
    info = bench_spec(args)
    print(f"bench {info['spec']}: {info['batch']} ({info['nodes']:,} nodes, {info['edges']:,} message edges), "
          f"{info['parameters']:,} parameters, {info['device']} {info['dtype']}, {info['threads']} threads, "
          f"median of {info['repeat']}")
    rows = [("phase", "median ms", "min ms", "max ms", "graphs/s")]
    n_graphs = info["graphs"]
    for k, v in info["ms"].items():
        rate = f"{n_graphs / (v['median'] / 1e3):,.0f}" if k != "prepare" and v["median"] > 0 else ""
        rows.append((k, f"{v['median']:.3f}", f"{v['min']:.3f}", f"{v['max']:.3f}", rate))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths))).rstrip())
    if "peak_memory_mib" in info:
        print(f"peak CUDA memory: {info['peak_memory_mib']:.1f} MiB")
    if args.json:
        from graphdl.data.cache import atomic_write

        with atomic_write(args.json, "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
    return 0


__all__ = ["bench_spec", "cmd_bench"]
