"""graphdl blocks vs the PyG layer of the same name: forward + backward time, same graph, same process.

For every case in :data:`CASES` both layers run on one random directed graph (default
50k nodes, 500k edges drawn uniformly, 64 features in and out, float32, CPU), with the
input features requiring a gradient (as in any layer but the first). One timed step is
``out = layer(x); out.backward(grad)``; the table reports the median of ``--repeats``
steps after ``--warmup`` untimed ones, interleaving ours and PyG's so both see the same
machine load, and the ratio PyG / ours (> 1: ours faster).

Two timings of ours:

* ``ours``: the batch's CSR structure (and, for GCN, the normalisation coefficients) is
  built on the first call and cached on the batch, as in training where each batch runs
  every layer (and every epoch) over the same structure;
* ``ours cold``: a fresh batch every step, so each step also pays building the CSR, its
  transpose and the normalisation (PyG ``GCNConv`` recomputes its normalisation on every
  call by default, so this is the like-for-like column for GCN). Sorting edges by
  destination is a data-loading cost in graphdl (``Graph`` construction) and is not
  included: the edges are generated sorted.

Add a layer by adding an entry to :data:`CASES` (see :class:`Case`).

    python benchmarks/pyg_layers.py                       # all cases, default sizes
    python benchmarks/pyg_layers.py --cases gcn gin --nodes 10000 --edges 100000
    python benchmarks/pyg_layers.py --threads 2           # match the reference machine
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from graphdl.data.graph import Graph  # noqa: E402  (after the sys.path line above)
from graphdl.nn.base import BLOCKS, load_builtin_blocks  # noqa: E402


@dataclass
class Case:
    """One comparison.

    Attributes:
        block: registered graphdl block name.
        params: its parameters besides ``out_dim`` (reads ``node.h``, writes ``node.h``).
        pyg: ``(in_dim, out_dim) -> PyG layer`` called as ``layer(x, edge_index)``, or
            ``layer(x, edge_index, edge_attr)`` when ``edge_dim`` is set.
        reference_ms: the issue author's PyG 2.8.1 time on 2 cores (for orientation only).
        edge_dim: width of random edge features (``edge.e``) both layers read; None: none.
        default: run it without ``--cases`` naming it.
    """

    block: str
    pyg: Callable[[int, int], nn.Module]
    params: dict = field(default_factory=dict)
    reference_ms: float | None = None
    edge_dim: int | None = None
    default: bool = True


def _pyg():
    from torch_geometric import nn as pyg

    return pyg


def _mlp(d_in: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(), nn.Linear(d_out, d_out))


CASES: dict[str, Case] = {
    "gcn": Case("gcn", lambda i, o: _pyg().GCNConv(i, o), reference_ms=364),
    "sage": Case("sage", lambda i, o: _pyg().SAGEConv(i, o), reference_ms=96),
    "gat": Case("gat", lambda i, o: _pyg().GATConv(i, o, heads=1), {"heads": 1}, reference_ms=537),
    "gat8": Case("gat", lambda i, o: _pyg().GATConv(i, o // 8, heads=8), {"heads": 8, "out_dim": 8}),
    "gin": Case("gin", lambda i, o: _pyg().GINConv(_mlp(i, o)), {"hidden": [64], "norm": None}, reference_ms=99),
    # beyond the four (run with --cases ... or --all)
    "sage_pool": Case("sage", lambda i, o: _pyg().SAGEConv(i, o, aggr="max", project=True),
                      {"aggr": "max_pool"}, default=False),
    "gine": Case("gine", lambda i, o: _pyg().GINEConv(_mlp(i, o)), {"hidden": [64], "norm": None},
                 edge_dim=64, default=False),
    "res_gated": Case("gated_gcn", lambda i, o: _pyg().ResGatedGraphConv(i, o), {
        "edge_gates": False, "normalize_gates": False, "update_edges": False, "batch_norm": False,
        "residual": False, "act": "identity"}, default=False),
    "monet": Case("monet", lambda i, o: _pyg().GMMConv(i, o, dim=2, kernel_size=3),
                  {"pseudo": "edge.e", "kernel_size": 3}, edge_dim=2, default=False),
    "gat_edge": Case("gat", lambda i, o: _pyg().GATConv(i, o, heads=1, edge_dim=16),
                     {"heads": 1, "edge_input": "edge.e"}, edge_dim=16, default=False),
    "gatv2": Case("gatv2", lambda i, o: _pyg().GATv2Conv(i, o, heads=1), {"heads": 1}, default=False),
    "transformer": Case("transformer", lambda i, o: _pyg().TransformerConv(i, o, heads=1), {"heads": 1},
                        default=False),
}
"""Cases by name. ``gat8``: 8 heads x 8 channels, concatenated (64 out). GIN's MLP is
Linear-ReLU-Linear on both sides (``hidden`` = ``out_dim``); GINE's too. ``res_gated`` is
``gated_gcn`` reduced to PyG's ``ResGatedGraphConv``; ``monet`` reads 2-D pseudo-coordinates."""


def random_graph(num_nodes: int, num_edges: int, dim: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Uniform random directed edges, sorted by destination (then source); features ``(N, dim)``."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(num_nodes, (num_edges,), generator=gen)
    dst = torch.randint(num_nodes, (num_edges,), generator=gen)
    order = torch.sort(dst * num_nodes + src).indices
    x = torch.randn(num_nodes, dim, generator=gen)
    return torch.stack([src[order], dst[order]]), x


def _graph(edge_index: Tensor, n: int) -> Graph:
    return Graph(edge_index, n, sort=False, validate=False)


def _step(fn: Callable[[], Tensor], grad: Tensor) -> float:
    t0 = time.perf_counter()
    fn().backward(grad)
    return time.perf_counter() - t0


def run_case(name: str, case: Case, edge_index: Tensor, x: Tensor, out_dim: int,
             repeats: int, warmup: int) -> dict:
    load_builtin_blocks()
    n, d_in = x.shape
    torch.manual_seed(0)
    fields = {"node.h": d_in} if case.edge_dim is None else {"node.h": d_in, "edge.e": case.edge_dim}
    ours = BLOCKS[case.block].build({"out_dim": out_dim, **case.params}, fields)
    theirs = case.pyg(d_in, out_dim)
    xs = x.clone().requires_grad_(True)
    g = _graph(edge_index, n)
    gen = torch.Generator().manual_seed(1)
    grad = torch.randn(n, ours.sig.writes["node.h"].dim, generator=gen)
    inputs = {"node.h": xs}
    extra: tuple[Tensor, ...] = ()
    if case.edge_dim is not None:
        inputs["edge.e"] = torch.randn(edge_index.size(1), case.edge_dim, generator=gen)
        extra = (inputs["edge.e"],)

    def run_ours():
        return ours(g, inputs)["node.h"]

    def run_ours_cold():
        return ours(_graph(edge_index, n), inputs)["node.h"]

    def run_pyg():
        return theirs(xs, edge_index, *extra)

    fns = {"ours": run_ours, "cold": run_ours_cold, "pyg": run_pyg}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for k, fn in fns.items():
            xs.grad = None
            ours.zero_grad(set_to_none=True)
            theirs.zero_grad(set_to_none=True)
            t = _step(fn, grad)
            if i >= warmup:
                times[k].append(t)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    best = {k: min(v) * 1e3 for k, v in times.items()}
    return {"name": name, **med, "best": best, "reference": case.reference_ms}


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="*", default=[k for k, c in CASES.items() if c.default], choices=list(CASES))
    ap.add_argument("--all", action="store_true", help="run every case")
    ap.add_argument("--nodes", type=int, default=50_000)
    ap.add_argument("--edges", type=int, default=500_000)
    ap.add_argument("--dim", type=int, default=64, help="input and output features")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.all:
        args.cases = list(CASES)
    if args.threads:
        torch.set_num_threads(args.threads)
    import torch_geometric

    edge_index, x = random_graph(args.nodes, args.edges, args.dim)
    print(f"graph: {args.nodes:,} nodes, {args.edges:,} edges, {args.dim} -> {args.dim} features, float32, CPU")
    print(f"torch {torch.__version__}, torch_geometric {torch_geometric.__version__}, "
          f"{torch.get_num_threads()} threads, load average before: {load_average()}")
    print(f"forward + backward (input grad included), median of {args.repeats} after {args.warmup} warm-up steps\n")
    head = (f"{'layer':<9} {'PyG ms':>8} {'ours ms':>8} {'cold ms':>8} {'ratio':>7} {'cold':>7}"
            f"   {'best: ratio':>11} {'cold':>6}   {'PyG ref (2 cores)':>17}")
    print(head)
    print("-" * len(head))
    rows = []
    for name in args.cases:
        r = run_case(name, CASES[name], edge_index, x, args.dim, args.repeats, args.warmup)
        rows.append(r)
        b = r["best"]
        ref = f"{r['reference']:.0f} ms" if r["reference"] else "-"
        print(f"{name:<9} {r['pyg']:8.1f} {r['ours']:8.1f} {r['cold']:8.1f} {r['pyg'] / r['ours']:6.2f}x "
              f"{r['pyg'] / r['cold']:6.2f}x   {b['pyg'] / b['ours']:10.2f}x {b['pyg'] / b['cold']:5.2f}x   {ref:>17}")
    print(f"\nload average after: {load_average()}")
    print("ms: medians. ratio = PyG / ours (> 1: ours faster); cold = a fresh batch each step (CSR, its "
          "transpose and\nnormalisation rebuilt); best = ratio of the fastest steps (least disturbed by "
          "other load on the machine)")
    return rows


if __name__ == "__main__":
    main()
