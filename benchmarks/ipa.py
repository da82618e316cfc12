"""graphdl's ``ipa`` against ``invariant-point-attention`` 0.2.2: forward + backward time and peak memory.

AF2 sizes: single representation 384, pair representation 128, 12 heads, 16 scalar query/key
and value channels, 4 query/key points and 8 value points; one chain of N residues (N = 128,
256, 512 by default), float32, CPU, the single and pair inputs requiring gradients (as in a
structure module fed by the Evoformer). Ours runs on the complete graph with self-loops
(dense lowering; the pair field is the ``(N, N, 128)`` block itself, edges sorted by
destination then source); theirs gets the same tensors as ``(1, N, N, 128)``.

Method, one fresh Python process per (implementation, N), so one case cannot inherit another's
heap:

* **peak memory**: resident set size (RSS). The process first runs a tiny case (N = 8) to
  load libraries and initialise thread pools, then builds the inputs, reads its current RSS
  (``/proc/self/statm``), runs one forward + backward and reads the peak RSS
  (``getrusage(RUSAGE_SELF).ru_maxrss``); the difference is the peak of what the step itself
  allocated (activations, saved tensors, gradients, temporaries). glibc is told to return
  freed blocks of 64 KiB and more to the system at once (``MALLOC_MMAP_THRESHOLD_``,
  ``MALLOC_TRIM_THRESHOLD_``), so RSS follows live memory instead of a cached heap. This
  counts what the operating system had to provide, the number that runs out; it does not
  need the allocator's cooperation (``tracemalloc`` does not see torch's allocations, and
  CPU tensors have no ``max_memory_allocated``).
* **time**: median of ``--repeats`` forward + backward steps after ``--warmup`` untimed
  ones, in the same process, after the memory step.

Cases that fail (out of memory under ``--mem-limit``, or killed) are reported as such.

    python benchmarks/ipa.py                          # N = 128, 256, 512, one thread
    python benchmarks/ipa.py --sizes 128 --repeats 2  # quick look
    python benchmarks/ipa.py --threads 2 --json benchmarks/results/ipa/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SINGLE, PAIR, HEADS, SCALAR, POINTS_QK, POINTS_V = 384, 128, 12, 16, 4, 8
IMPLS = ("graphdl", "invariant_point_attention")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _make(impl: str, n: int, seed: int = 0):
    """``step()`` running one forward + backward of ``impl`` on a chain of ``n`` residues."""
    import torch

    sys.path.insert(0, ROOT)
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(n, SINGLE, generator=gen).requires_grad_(True)
    z = torch.randn(n * n, PAIR, generator=gen).requires_grad_(True)
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen))
    rot = q * torch.det(q).sign().view(-1, 1, 1)
    trans = torch.randn(n, 3, generator=gen) * 15
    if impl == "graphdl":
        from graphdl.data.graph import Graph
        from graphdl.nn.base import BuildContext
        from graphdl.nn.ipa import InvariantPointAttention
        from graphdl.ops.frames import make_frame

        block = InvariantPointAttention.build(
            {"heads": HEADS, "scalar_qk": SCALAR, "scalar_v": SCALAR, "points_qk": POINTS_QK, "points_v": POINTS_V},
            {"node.s": SINGLE, "node.frame": "frame", "edge.z": PAIR},
            BuildContext(graph_kind="complete", self_loops=True))
        torch.nn.init.normal_(block.linear_out.weight, std=0.02)  # AF2 zero-initialises it; any weights time the same
        ar = torch.arange(n)
        edges = torch.stack([ar.repeat(n), ar.repeat_interleave(n)])  # j -> i for all (i, j), sorted by (i, j)
        g = Graph(edges, n, validate=False, sort=False)
        frame = make_frame(rot, trans)

        def step():
            out = block(g, {"node.s": s, "node.frame": frame, "edge.z": z})["node.s"]
            out.sum().backward()
    else:
        from invariant_point_attention import InvariantPointAttention as Ref

        block = Ref(dim=SINGLE, heads=HEADS, scalar_key_dim=SCALAR, scalar_value_dim=SCALAR, point_key_dim=POINTS_QK,
                    point_value_dim=POINTS_V, pairwise_repr_dim=PAIR)
        rows = rot.transpose(-1, -2).unsqueeze(0)  # its row-vector convention

        def step():
            out = block(s.unsqueeze(0), z.view(1, n, n, PAIR), rotations=rows, translations=trans.unsqueeze(0))
            out.sum().backward()

    def run():
        step()
        for t in (s, z, *block.parameters()):
            t.grad = None

    return run


def run_case(impl: str, n: int, warmup: int, repeats: int, threads: int) -> dict:
    """One case in this process (called in a fresh subprocess by :func:`main`)."""
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(threads)
    _make(impl, 8)()  # load kernels and thread pools outside the measurement
    run = _make(impl, n)
    before = _rss_bytes()
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    peak = _peak_bytes() - before
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {"impl": impl, "n": n, "peak_mib": peak / 2 ** 20, "ms": 1e3 * statistics.median(times),
            "first_ms": 1e3 * first, "repeats": repeats, "threads": threads}


def _subprocess(impl: str, n: int, args) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0",
               OMP_NUM_THREADS=str(args.threads), PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, os.path.abspath(__file__), "--case", impl, str(n), "--warmup", str(args.warmup),
           "--repeats", str(args.repeats), "--threads", str(args.threads)]
    if args.mem_limit is not None:
        cmd += ["--mem-limit", str(args.mem_limit)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    err = (proc.stderr.strip().splitlines() or ["killed"])[-1]
    return {"impl": impl, "n": n, "error": "out of memory" if "memory" in err.lower() or proc.returncode < 0 else err}


def table(results: list[dict]) -> str:
    by = {(r["impl"], r["n"]): r for r in results}
    sizes = sorted({r["n"] for r in results})
    head = ("N", "ours ms", "theirs ms", "speed-up", "ours MiB", "theirs MiB", "memory ratio")
    rows = []
    for n in sizes:
        a, b = by.get(("graphdl", n), {}), by.get(("invariant_point_attention", n), {})

        def cell(r, k, fmt):
            return r.get("error", "-") if k not in r else fmt.format(r[k])

        speed = f"{b['ms'] / a['ms']:.2f}x" if "ms" in a and "ms" in b else "-"
        mem = f"{a['peak_mib'] / b['peak_mib']:.3f}" if "peak_mib" in a and "peak_mib" in b else "-"
        rows.append((str(n), cell(a, "ms", "{:.1f}"), cell(b, "ms", "{:.1f}"), speed,
                     cell(a, "peak_mib", "{:.1f}"), cell(b, "peak_mib", "{:.1f}"), mem))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = "| " + " | ".join("{:>" + str(w) + "}" for w in widths) + " |"
    lines = [fmt.format(*head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(lines + [fmt.format(*r) for r in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="speed-up = theirs / ours time; memory ratio = ours / theirs peak")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mem-limit", type=float, default=None, help="address-space limit per case, GiB")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--case", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case:
        if args.mem_limit is not None:
            lim = int(args.mem_limit * 2 ** 30)
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        print(json.dumps(run_case(args.case[0], int(args.case[1]), args.warmup, args.repeats, args.threads)))
        return 0
    results = []
    for n in args.sizes:
        for impl in IMPLS:
            results.append(_subprocess(impl, n, args))
            r = results[-1]
            print(f"  {impl} N={n}: " + (r["error"] if "error" in r else
                                          f"{r['ms']:.1f} ms, peak {r['peak_mib']:.1f} MiB"), flush=True)
    print(f"\nipa forward + backward, AF2 sizes (single {SINGLE}, pair {PAIR}, {HEADS} heads), float32, CPU, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(table(results))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"results": results, "threads": args.threads, "repeats": args.repeats,
                       "torch": __import__("torch").__version__}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
