"""graphdl blocks vs the PyG layer of the same name: forward + backward time, same graph, same process.

For every case in :data:`CASES` both layers run on one random directed graph (default
50k nodes, 500k edges drawn uniformly, 64 features in and out, float32, CPU), with the
input features requiring a gradient (as in any layer but the first). One timed step is
``out = layer(x); out.backward(grad)``; the table reports the median of ``--repeats``
steps after ``--warmup`` untimed ones, interleaving ours and PyG's so both see the same
machine load, and the ratio PyG / ours (> 1: ours faster).

DGL (``dgl.nn.pytorch``, DGL 2.1 imported through :mod:`graphdl.interop.dgl`) runs the same
cases where it has the layer, with the same weights where the two layers compute the same
function (GCN: ``GraphConv(norm="both")`` on the graph plus self-loops, DGL's way; it normalises
by the source's out-degree, graphdl by its in-degree, the same work), timed cached (one
``DGLGraph``, its sparse formats built on the first call) and cold (a fresh ``DGLGraph`` each
step), and graphdl's own block with ``lowering: dgl`` (its message passing on DGL's kernels).

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
    python benchmarks/pyg_layers.py --no-dgl              # PyG only
    python benchmarks/pyg_layers.py --device cuda --no-dgl --json pyg_cuda.json   # on a GPU (DGL: CPU build)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from graphdl import benchmarking  # noqa: E402  (after the sys.path line above)
from graphdl.data.graph import Graph  # noqa: E402
from graphdl.nn.base import BLOCKS, block_lowerings, load_builtin_blocks  # noqa: E402
from graphdl.nn.conv import LOOPED_AFTER_USES  # noqa: E402


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
        dgl: ``(in_dim, out_dim) -> DGL layer`` called as ``layer(g, x[, edge_attr])``; None: DGL has none.
        dgl_loops: the DGL layer runs on the graph plus one self-loop per node (GCN, GAT: DGL's way).
        dgl_copy: ``(ours, theirs)`` copies our weights into the DGL layer where the layers are equal.
    """

    block: str
    pyg: Callable[[int, int], nn.Module] | None
    params: dict = field(default_factory=dict)
    reference_ms: float | None = None
    edge_dim: int | None = None
    default: bool = True
    dgl: Callable[[int, int], nn.Module] | None = None
    dgl_loops: bool = False
    dgl_copy: Callable[[nn.Module, nn.Module], None] | None = None


def _pyg():
    from torch_geometric import nn as pyg

    return pyg


def _mlp(d_in: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(), nn.Linear(d_out, d_out))


def _dglnn():
    from graphdl.interop.dgl import load_dgl

    return load_dgl().nn.pytorch


def _copy_gcn(ours, theirs):
    theirs.weight.data.copy_(ours.lin.weight.t())
    theirs.bias.data.copy_(ours.bias)


def _copy_sage(ours, theirs):
    theirs.fc_neigh.weight.data.copy_(ours.lin_l.weight)
    theirs.fc_self.weight.data.copy_(ours.lin_r.weight)
    theirs.fc_self.bias.data.copy_(ours.lin_l.bias)
    if ours.lin is not None:
        theirs.fc_pool.load_state_dict(ours.lin.state_dict())


def _copy_gat(ours, theirs):
    theirs.fc.weight.data.copy_(ours.lin.weight)
    theirs.attn_l.data.copy_(ours.att_src)
    theirs.attn_r.data.copy_(ours.att_dst)
    theirs.bias.data.copy_(ours.bias)


def _copy_gin(ours, theirs):
    theirs.apply_func.load_state_dict(ours.mlp.state_dict())


def _copy_gated(ours, theirs):
    for mine, dgls in (("A", "E"), ("B", "D"), ("V", "B"), ("C", "C")):
        getattr(theirs, dgls).load_state_dict(getattr(ours, mine).state_dict())
    theirs.A.weight.data.copy_(ours.U.weight)
    theirs.A.bias.data.copy_(ours.bias)


CASES: dict[str, Case] = {
    "gcn": Case("gcn", lambda i, o: _pyg().GCNConv(i, o), reference_ms=364,
                dgl=lambda i, o: _dglnn().GraphConv(i, o, norm="both"), dgl_loops=True, dgl_copy=_copy_gcn),
    "sage": Case("sage", lambda i, o: _pyg().SAGEConv(i, o), reference_ms=96,
                 dgl=lambda i, o: _dglnn().SAGEConv(i, o, "mean"), dgl_copy=_copy_sage),
    "gat": Case("gat", lambda i, o: _pyg().GATConv(i, o, heads=1), {"heads": 1}, reference_ms=537,
                dgl=lambda i, o: _dglnn().GATConv(i, o, 1), dgl_loops=True, dgl_copy=_copy_gat),
    "gat8": Case("gat", lambda i, o: _pyg().GATConv(i, o // 8, heads=8), {"heads": 8, "out_dim": 8},
                 dgl=lambda i, o: _dglnn().GATConv(i, o // 8, 8), dgl_loops=True, dgl_copy=_copy_gat),
    "gin": Case("gin", lambda i, o: _pyg().GINConv(_mlp(i, o)), {"hidden": [64], "norm": None}, reference_ms=99,
                dgl=lambda i, o: _dglnn().GINConv(_mlp(i, o), "sum"), dgl_copy=_copy_gin),
    # beyond the four (run with --cases ... or --all)
    "sage_pool": Case("sage", lambda i, o: _pyg().SAGEConv(i, o, aggr="max", project=True),
                      {"aggr": "max_pool"}, default=False,
                      dgl=lambda i, o: _dglnn().SAGEConv(i, o, "pool"), dgl_copy=_copy_sage),
    "gine": Case("gine", lambda i, o: _pyg().GINEConv(_mlp(i, o)), {"hidden": [64], "norm": None},
                 edge_dim=64, default=False, dgl=lambda i, o: _dglnn().GINEConv(_mlp(i, o)), dgl_copy=_copy_gin),
    "res_gated": Case("gated_gcn", lambda i, o: _pyg().ResGatedGraphConv(i, o), {
        "edge_gates": False, "normalize_gates": False, "update_edges": False, "batch_norm": False,
        "skip": False, "act": "identity"}, default=False),
    "gated_gcn": Case("gated_gcn", None, {"edge_input": "edge.e"}, edge_dim=64, default=False,
                      dgl=lambda i, o: _dglnn().GatedGCNConv(i, 64, o), dgl_copy=_copy_gated),
    "monet": Case("monet", lambda i, o: _pyg().GMMConv(i, o, dim=2, kernel_size=3),
                  {"pseudo": "edge.e", "kernel_size": 3}, edge_dim=2, default=False,
                  dgl=lambda i, o: _dglnn().GMMConv(i, o, 2, 3, "mean", residual=True, allow_zero_in_degree=True)),
    "gat_edge": Case("gat", lambda i, o: _pyg().GATConv(i, o, heads=1, edge_dim=16),
                     {"heads": 1, "edge_input": "edge.e"}, edge_dim=16, default=False),
    "gatv2": Case("gatv2", lambda i, o: _pyg().GATv2Conv(i, o, heads=1), {"heads": 1}, default=False,
                  dgl=lambda i, o: _dglnn().GATv2Conv(i, o, 1), dgl_loops=True),
    "transformer": Case("transformer", lambda i, o: _pyg().TransformerConv(i, o, heads=1), {"heads": 1},
                        default=False),
}
"""Cases by name. ``gat8``: 8 heads x 8 channels, concatenated (64 out). GIN's MLP is
Linear-ReLU-Linear on both sides (``hidden`` = ``out_dim``); GINE's too. ``res_gated`` is
``gated_gcn`` reduced to PyG's ``ResGatedGraphConv``; ``gated_gcn`` is the full edge-gated layer
(batch norm, ReLU, residual, edge update; PyG has none) against DGL's ``GatedGCNConv``; ``monet``
reads 2-D pseudo-coordinates (DGL's GMMConv: an identity residual for graphdl's root weight)."""


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
    return benchmarking.timed(lambda: fn().backward(grad), grad.device)


def build_cost(edge_index: Tensor, n: int, repeats: int) -> dict[str, float]:
    """Median ms of what a cold step pays before any layer runs: the CSR of a fresh batch
    (``Graph.csr``: edges already sorted by destination), its transpose (``Graph.csr_t``: a sort
    by source) and the symmetric GCN normalisation ``deg^-1/2`` of both ends of every edge."""
    device = edge_index.device

    def csr():
        _graph(edge_index, n).csr()

    def csr_t():
        _graph(edge_index, n).csr_t()

    def norm():
        g = _graph(edge_index, n)
        deg = g.in_degree().to(torch.float32) + 1  # + the self-loop
        d = deg.rsqrt()
        return d[g.src] * d[g.dst]

    out = {}
    for k, fn in (("csr", csr), ("csr_t", csr_t), ("gcn_norm", norm)):
        fn()
        out[k] = statistics.median(benchmarking.timed(fn, device) for _ in range(max(repeats, 1))) * 1e3
    out["total"] = sum(out.values())
    return out


def floor_fn(ours: nn.Module, g: Graph, xs: Tensor, out_dim: int) -> Callable[[], Tensor]:
    """The unavoidable work of a layer, as one step: every ``nn.Linear`` of the block applied to
    ``N`` rows (its dense matmuls) plus one sum-aggregation pass over the edges of the output
    width (``graphdl.ops.spmm`` on the cached CSR, forward and backward: one gather + scatter at
    memory bandwidth). Edge-row matmuls (GINE's edge projection, GatedGCN's edge gates) are left
    out, so the floor is a lower bound for edge-feature layers."""
    from graphdl.nn.conv import _csr_pair
    from graphdl.ops import spmm

    lins = [m for m in ours.modules() if isinstance(m, nn.Linear)]
    n = xs.size(0)
    gen = torch.Generator().manual_seed(2)
    inputs = [torch.randn(n, m.in_features, generator=gen).to(xs.device).requires_grad_(True) for m in lins]
    h0 = torch.randn(n, out_dim, generator=gen).to(xs.device).requires_grad_(True)
    csr, csr_t = _csr_pair(g)  # the 32-bit-index CSR pair the layers use (MKL's fastest product)

    def run():
        dense = sum(m(inp).sum() for m, inp in zip(lins, inputs))  # each matmul and its two backward matmuls
        return spmm(csr, h0, None, "sum", csr_t) + dense

    return run


def _dgl_graph(edge_index: Tensor, n: int, loops: bool):
    from graphdl.interop.dgl import load_dgl

    dgl = load_dgl()
    g = dgl.graph((edge_index[0], edge_index[1]), num_nodes=n)
    return dgl.add_self_loop(g) if loops else g


def run_case(name: str, case: Case, edge_index: Tensor, x: Tensor, out_dim: int,
             repeats: int, warmup: int, with_dgl: bool = True, with_pyg: bool = True) -> dict:
    load_builtin_blocks()
    n, d_in = x.shape
    torch.manual_seed(0)
    fields = {"node.h": d_in} if case.edge_dim is None else {"node.h": d_in, "edge.e": case.edge_dim}
    params = {"out_dim": out_dim, **case.params}
    device = x.device
    ours = BLOCKS[case.block].build(params, fields).to(device)
    xs = x.clone().requires_grad_(True)
    g = _graph(edge_index, n)
    gen = torch.Generator().manual_seed(1)
    grad = torch.randn(n, ours.sig.writes["node.h"].dim, generator=gen).to(device)
    inputs = {"node.h": xs}
    extra: tuple[Tensor, ...] = ()
    if case.edge_dim is not None:
        inputs["edge.e"] = torch.randn(edge_index.size(1), case.edge_dim, generator=gen).to(device)
        extra = (inputs["edge.e"],)

    def run_ours():
        return ours(g, inputs)["node.h"]

    # the cached column is a batch in steady use (full-graph training): past the uses after which
    # gcn/gin build their A + I product (graphdl.nn.conv.LOOPED_AFTER_USES); a fresh batch is `cold`
    with torch.no_grad():
        for _ in range(LOOPED_AFTER_USES):
            run_ours()

    def run_ours_cold():
        return ours(_graph(edge_index, n), inputs)["node.h"]

    fns = {"ours": run_ours, "cold": run_ours_cold, "floor": floor_fn(ours, g, xs, grad.size(1))}
    modules = [ours]
    if with_pyg and case.pyg is not None:
        theirs = case.pyg(d_in, out_dim).to(device)
        modules.append(theirs)
        fns["pyg"] = lambda: theirs(xs, edge_index, *extra)
    if with_dgl and case.dgl is not None:
        peer = case.dgl(d_in, out_dim).to(device)
        if case.dgl_copy is not None:
            with torch.no_grad():
                case.dgl_copy(ours, peer)
        modules.append(peer)
        dg = _dgl_graph(edge_index, n, case.dgl_loops)
        e_dgl = extra
        if case.dgl_loops and extra:  # loops appended by dgl.add_self_loop get zero edge features
            e_dgl = (torch.cat([extra[0], extra[0].new_zeros(n, extra[0].size(1))]),)

        def first(out):
            out = out[0] if isinstance(out, tuple) else out  # GatedGCNConv returns (h, e)
            return out.reshape(n, -1)

        fns["dgl"] = lambda: first(peer(dg, xs, *e_dgl))
        fns["dgl_cold"] = lambda: first(peer(_dgl_graph(edge_index, n, case.dgl_loops), xs, *e_dgl))
    if with_dgl and "dgl" in block_lowerings(BLOCKS[case.block]):
        lowered = BLOCKS[case.block].build({**params, "lowering": "dgl"}, fields).to(device)
        lowered.load_state_dict(ours.state_dict())
        modules.append(lowered)
        g_low = _graph(edge_index, n)
        fns["lowering"] = lambda: lowered(g_low, inputs)["node.h"]
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for k, fn in fns.items():
            xs.grad = None
            for m in modules:
                m.zero_grad(set_to_none=True)
            t = _step(fn, grad)
            if i >= warmup:
                times[k].append(t)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    best = {k: min(v) * 1e3 for k, v in times.items()}
    return {"name": name, **med, "best": best, "reference": case.reference_ms}


load_average = benchmarking.load_average


def _ms(r: dict, k: str) -> str:
    return f"{r[k]:8.1f}" if k in r else f"{'-':>8}"


def _ratio(r: dict, a: str, b: str) -> str:
    return f"{r[a] / r[b]:6.2f}x" if a in r and b in r else f"{'-':>7}"


def _best(r: dict, a: str, b: str) -> str:
    return f"{r['best'][a] / r['best'][b]:5.2f}x" if a in r and b in r else f"{'-':>6}"


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
    ap.add_argument("--no-dgl", action="store_true", help="leave out the DGL columns")
    ap.add_argument("--no-pyg", action="store_true", help="leave out the PyG columns")
    ap.add_argument("--malloc-cache", action="store_true",
                    help="keep large freed CPU blocks for reuse (glibc mallopt, as jemalloc/tcmalloc would): "
                         "without it every (E, C) tensor is page-faulted in again, which costs the peers more "
                         "than graphdl (see benchmarks/results/pyg_layers/README.md)")
    benchmarking.add_arguments(ap)
    args = ap.parse_args(argv)
    if args.malloc_cache and not benchmarking.cache_cpu_allocations():
        print("note: --malloc-cache applies to glibc only; the default allocator is used", file=sys.stderr)
    if args.all:
        args.cases = list(CASES)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = benchmarking.resolve_device(args.device)
    with_dgl, with_pyg = not args.no_dgl, not args.no_pyg
    if with_dgl:
        import warnings

        from graphdl.interop.dgl import load_dgl

        with warnings.catch_warnings():  # the graphbolt notice: the benchmark samples nothing
            warnings.simplefilter("ignore")
            load_dgl()
    edge_index, x = random_graph(args.nodes, args.edges, args.dim)
    edge_index, x = edge_index.to(device), x.to(device)
    peers = ("torch_geometric",) * with_pyg + ("dgl",) * with_dgl
    print(benchmarking.banner(device, peers))
    print(f"graph: {args.nodes:,} nodes, {args.edges:,} edges, {args.dim} -> {args.dim} features, float32, {device}")
    print(f"forward + backward (input grad included), median of {args.repeats} after {args.warmup} warm-up steps")
    build = build_cost(edge_index, args.nodes, args.repeats)
    print(f"cold-step build cost per batch (ms, median): CSR {build['csr']:.2f}, its transpose {build['csr_t']:.2f}, "
          f"GCN normalisation {build['gcn_norm']:.2f}; total {build['total']:.2f}\n")
    head = (f"{'layer':<11} {'PyG ms':>8} {'ours ms':>8} {'cold ms':>8} {'ratio':>7} {'cold':>7}"
            f"   {'best: ratio':>11} {'cold':>6}   {'floor ms':>8} {'ours/fl':>7}")
    if with_dgl:
        head += f"   {'DGL ms':>8} {'DGLcold':>8} {'DGL/ours':>8} {'cold':>7} {'low ms':>8} {'low/ours':>8}"
    print(head)
    print("-" * len(head))
    rows = []
    for name in args.cases:
        r = run_case(name, CASES[name], edge_index, x, args.dim, args.repeats, args.warmup, with_dgl, with_pyg)
        rows.append(r)
        line = (f"{name:<11} {_ms(r, 'pyg')} {_ms(r, 'ours')} {_ms(r, 'cold')} {_ratio(r, 'pyg', 'ours')} "
                f"{_ratio(r, 'pyg', 'cold')}   {_best(r, 'pyg', 'ours'):>11} {_best(r, 'pyg', 'cold')}   "
                f"{_ms(r, 'floor')} {_ratio(r, 'ours', 'floor')}")
        if with_dgl:
            line += (f"   {_ms(r, 'dgl')} {_ms(r, 'dgl_cold')} {_ratio(r, 'dgl', 'ours'):>8} "
                     f"{_ratio(r, 'dgl_cold', 'cold')} {_ms(r, 'lowering')} {_ratio(r, 'lowering', 'ours'):>8}")
        print(line)
    print(f"\nload average after: {load_average()}")
    print("ms: medians. ratio = PyG / ours (> 1: ours faster); cold = a fresh batch each step (CSR, its "
          "transpose and\nnormalisation rebuilt); best = ratio of the fastest steps (least disturbed by "
          "other load on the machine)\nfloor = the block's dense matmuls on N rows + one sum gather/scatter "
          "pass over the edges (forward+backward); ours/fl = ours ms / floor ms")
    if with_dgl:
        print("DGL: the dgl.nn layer (same weights where the layers are equal), cached DGLGraph; DGLcold: a fresh "
              "DGLGraph each step;\nDGL/ours = DGL ms / ours ms (> 1: ours faster); low = graphdl's block with "
              "`lowering: dgl` (cached DGLGraph)")
    benchmarking.write_json(args.json, {"args": vars(args), "build_ms": build, "rows": rows}, device, peers)
    return rows


if __name__ == "__main__":
    main()
