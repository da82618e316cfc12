"""Kernel benchmark: graphdl's CSR product and segment ops vs plain torch and torch_geometric.

Usage::

    python benchmarks/kernels.py --nodes 50000 --edges 500000 --feat 64 --repeat 15

Every case is timed forward-only (under ``no_grad``) and forward+backward, as the median of
``--repeat`` runs; implementations are interleaved inside each repeat so that load from other
processes hits them alike. Ratios are ``peer time / graphdl time`` (> 1: graphdl is faster).

Peers, on the same random graph (edges sorted by destination, as graphdl stores them):

* ``index_add``: :func:`graphdl.ops.gather_scatter_reference` (``index_select`` + ``index_add_``);
* ``pyg``: ``torch_geometric.utils.scatter`` after ``index_select`` (``softmax`` for softmax).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

from graphdl import benchmarking
from graphdl.data.graph import Graph
from graphdl.ops import (
    CSR,
    gather_scatter_reference,
    segment_max,
    segment_softmax,
    segment_sum,
    spmm,
)

try:
    from torch_geometric import utils as pyg_utils
except ImportError:  # the benchmark still runs, without the PyG column
    pyg_utils = None


PEERS = ("torch_geometric",)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of ``fn()``, the device synchronised around the clock."""
    return benchmarking.timed(fn, device) * 1e3


def run_case(
    impls: dict[str, Callable[[bool], object]], repeat: int, device
) -> dict[str, tuple[float, float]]:
    """``impls[name](backward)`` runs one forward (and backward); returns median ms per name."""
    fwd: dict[str, list[float]] = {k: [] for k in impls}
    both: dict[str, list[float]] = {k: [] for k in impls}
    for fn in impls.values():  # warm-up
        fn(False)
        fn(True)
    for _ in range(repeat):
        for name, fn in impls.items():
            with torch.no_grad():
                fwd[name].append(timed(lambda fn=fn: fn(False), device))
            both[name].append(timed(lambda fn=fn: fn(True), device))
    return {k: (statistics.median(fwd[k]), statistics.median(both[k])) for k in impls}


def make_impl(forward: Callable[[], torch.Tensor], leaves: list[torch.Tensor]) -> Callable[[bool], object]:
    grad_out: list[torch.Tensor] = []

    def run(backward: bool):
        out = forward()
        if backward:
            if not grad_out:
                grad_out.append(torch.randn_like(out))
            out.backward(grad_out[0])
            for t in leaves:
                t.grad = None
        return out

    return run


def print_table(title: str, rows: list[tuple[str, dict[str, tuple[float, float]]]]) -> None:
    print(f"\n{title}")
    head = f"{'case':<26}{'impl':<11}{'fwd ms':>9}{'fwd+bwd ms':>12}{'fwd ratio':>11}{'f+b ratio':>11}"
    print(head)
    print("-" * len(head))
    for case, res in rows:
        base_f, base_b = res["graphdl"]
        for i, (name, (f, b)) in enumerate(res.items()):
            label = case if i == 0 else ""
            ratio_f = "" if name == "graphdl" else f"{f / base_f:.2f}x"
            ratio_b = "" if name == "graphdl" else f"{b / base_b:.2f}x"
            print(f"{label:<26}{name:<11}{f:>9.2f}{b:>12.2f}{ratio_f:>11}{ratio_b:>11}")


def _json_rows(rows: list[tuple[str, dict[str, tuple[float, float]]]]) -> dict:
    return {case: {impl: {"fwd_ms": f, "fwd_bwd_ms": b} for impl, (f, b) in res.items()} for case, res in rows}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=50000)
    p.add_argument("--edges", type=int, default=500000)
    p.add_argument("--feat", type=int, default=64, help="features per node (all heads together)")
    p.add_argument("--heads", type=int, default=8, help="heads of the multi-head (GAT) cases")
    p.add_argument("--repeat", type=int, default=11)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["spmm", "segment", "all"], default="all")
    benchmarking.add_arguments(p)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    device, dtype = benchmarking.resolve_device(a.device), getattr(torch, a.dtype)
    n, e, c, h = a.nodes, a.edges, a.feat, a.heads
    if c % h:
        p.error(f"--feat ({c}) must be divisible by --heads ({h})")

    g = Graph(torch.randint(0, n, (2, e), device=device), n, validate=False)
    src, dst = g.src, g.dst
    build = {
        "csr (from dst-sorted edges)": lambda: CSR.from_sorted_rows(dst, src, n, n),
        "csr_t (from_coo, sort)": lambda: CSR.from_coo(src, dst, n, n),
        "sparse tensor wrap + ones": lambda: torch.sparse_csr_tensor(
            g.csr().rowptr,
            g.csr().col,
            torch.ones(e, dtype=dtype, device=device),
            (n, n),
            check_invariants=False,
        ),
    }
    print(benchmarking.banner(device, PEERS))
    print(
        f"graph: {n} nodes, {e} edges, {c} features, {h} heads, {a.dtype}, {device}, "
        f"{torch.get_num_threads()} threads, median of {a.repeat}"
    )
    build_ms = {k: statistics.median(timed(f, device) for _ in range(a.repeat)) for k, f in build.items()}
    print("\nbuild costs (ms, median): " + ", ".join(f"{k} {v:.2f}" for k, v in build_ms.items()))
    results: dict = {"args": vars(a), "build_ms": build_ms}
    csr, csr_t = g.csr(), g.csr_t()

    def leaf(*shape):
        return torch.randn(*shape, dtype=dtype, device=device).requires_grad_(True)

    if a.only in ("spmm", "all"):
        rows = []
        x, w, xh, wh = leaf(n, c), leaf(e).detach().abs().requires_grad_(True), leaf(n, h, c // h), leaf(e, h)
        cases = {
            "sum, no values": (x, None, "sum"),
            "sum, values (E,)": (x, w, "sum"),
            "mean, no values": (x, None, "mean"),
            f"sum, heads (E,{h})": (xh, wh, "sum"),
        }
        for name, (xx, vv, red) in cases.items():
            leaves = [xx] + ([vv] if vv is not None else [])

            def pyg(xx=xx, vv=vv, red=red):
                msg = xx.index_select(0, src)
                if vv is not None:
                    msg = msg * vv.view(vv.shape + (1,) * (xx.dim() - vv.dim()))
                return pyg_utils.scatter(msg, dst, 0, dim_size=n, reduce=red)

            impls = {
                "graphdl": make_impl(lambda xx=xx, vv=vv, red=red: spmm(csr, xx, vv, red, csr_t), leaves),
                "index_add": make_impl(
                    lambda xx=xx, vv=vv, red=red: gather_scatter_reference(csr, xx, vv, red), leaves
                ),
            }
            if pyg_utils is not None:
                impls["pyg"] = make_impl(pyg, leaves)
            rows.append((name, run_case(impls, a.repeat, device)))
        print_table("spmm: out[i] = sum_e values[e] * x[src[e]] over edges into i", rows)
        results["spmm"] = _json_rows(rows)

    if a.only in ("segment", "all"):
        rows = []
        ptr = csr.rowptr
        msg, logit = leaf(e, c), leaf(e, h)
        for name, fn, pyg_fn, t in (
            ("sum (E,C)", segment_sum, lambda t: pyg_utils.scatter(t, dst, 0, dim_size=n, reduce="sum"), msg),
            ("max (E,C)", segment_max, lambda t: pyg_utils.scatter(t, dst, 0, dim_size=n, reduce="max"), msg),
            (
                f"max (E,{h})",
                segment_max,
                lambda t: pyg_utils.scatter(t, dst, 0, dim_size=n, reduce="max"),
                logit,
            ),
            (f"softmax (E,{h})", segment_softmax, lambda t: pyg_utils.softmax(t, dst, num_nodes=n), logit),
        ):
            impls = {
                "graphdl": make_impl(lambda fn=fn, t=t: fn(t, dst, n, ptr), [t]),
                "no ptr": make_impl(lambda fn=fn, t=t: fn(t, dst, n), [t]),
            }
            if pyg_utils is not None:
                impls["pyg"] = make_impl(lambda pyg_fn=pyg_fn, t=t: pyg_fn(t), [t])
            rows.append((name, run_case(impls, a.repeat, device)))
        print_table("segment ops over dst (graphdl = with ptr; 'no ptr' = graphdl without it)", rows)
        results["segment"] = _json_rows(rows)
    benchmarking.write_json(a.json, results, device, PEERS)


if __name__ == "__main__":
    main()
