"""Geometric blocks, warm and cold, against their peers: ``schnet`` vs PyG's SchNet interaction
block, ``tfn`` vs the same layer written with e3nn directly.

Usage::

    python benchmarks/geometric.py --graphs 32 --atoms 24 --threads 2 --repeats 9

Data: ``--graphs`` point clouds of ``--atoms`` atoms at the density of small organic molecules
(uniform in a cube of side ``(atoms / 0.1)^(1/3)`` Å), radius graph at 5 Å without self-edges,
edges sorted by destination; 64 invariant features per atom (``tfn``: ``16x0e`` in,
``16x0e + 8x1o + 4x2e`` out, spherical harmonics up to l = 2). Forward + backward (input and
parameter gradients), float32, medians of interleaved steps in one process.

Columns: ``ours`` a batch in steady use (its structure caches built), ``cold`` a fresh ``Graph``
with the same edges every step (CSR and caches rebuilt), ``peer`` the peer layer (no caches of
its kind). Ratios are peer / ours (> 1: graphdl faster).

Peers, same weights:

* **schnet** — ``torch_geometric.nn.models.schnet.InteractionBlock`` (CFConv with its filter
  MLP, the cosine cutoff and GaussianSmearing), plus the residual ``h + block(h)`` as PyG's
  ``SchNet`` applies it; distances and the Gaussian expansion are computed in the timed step as
  PyG's model does. graphdl's weights are copied in; the float64 outputs are compared.
* **tfn** — e3nn used directly: ``o3.spherical_harmonics`` (component normalisation),
  ``o3.FullyConnectedTensorProduct`` with per-edge weights from a radial MLP, ``index_add_``
  aggregation divided by the average neighbour count, and ``o3.Linear`` self-interaction;
  the tensor product, linear and MLP weights are graphdl's (its ``tfn`` block runs e3nn's tensor
  product too, so the two differ in what surrounds it). The float64 outputs are compared.

EGNN's counterpart (egnn-pytorch) is ``benchmarks/nbody.py``.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphdl import benchmarking  # noqa: E402
from graphdl.data.graph import Graph  # noqa: E402
from graphdl.nn.base import BLOCKS, load_builtin_blocks  # noqa: E402

CUTOFF = 5.0


def point_clouds(graphs: int, atoms: int, seed: int = 0, dtype=torch.float32):
    """Positions ``(B·n, 3)`` and the radius-graph edges (dst-sorted) of ``graphs`` clouds."""
    gen = torch.Generator().manual_seed(seed)
    side = (atoms / 0.1) ** (1 / 3)
    pos = torch.rand(graphs, atoms, 3, generator=gen, dtype=torch.float64) * side
    d = torch.cdist(pos, pos)
    eye = torch.eye(atoms, dtype=torch.bool)
    b, i, j = torch.nonzero((d < CUTOFF) & ~eye, as_tuple=True)  # i = destination, sorted by (b, i)
    edge_index = torch.stack([b * atoms + j, b * atoms + i])
    batch = torch.arange(graphs).repeat_interleave(atoms)
    return pos.reshape(-1, 3).to(dtype), edge_index, batch


def _graph(edge_index, n, pos, h, batch, graphs) -> Graph:
    return Graph(edge_index, n, {"node.pos": pos, "node.h": h}, batch=batch, num_graphs=graphs, validate=False)


# ---------------------------------------------------------------------------------- peers
class PygSchNet(torch.nn.Module):
    """PyG's interaction block with the residual of its SchNet model, distances and smearing included."""

    def __init__(self, ours, hidden: int, filters: int, num_rbf: int):
        super().__init__()
        from torch_geometric.nn.models.schnet import GaussianSmearing, InteractionBlock

        self.block = InteractionBlock(hidden, num_rbf, filters, CUTOFF)
        self.smear = GaussianSmearing(0.0, CUTOFF, num_rbf)
        with torch.no_grad():  # ours: filter MLP, lin_in (no bias), lin_out = Linear, ssp, Linear
            for a, b in ((self.block.mlp[0], ours.filter[0]), (self.block.mlp[2], ours.filter[2]),
                         (self.block.conv.lin2, ours.lin_out[0]), (self.block.lin, ours.lin_out[2])):
                a.weight.copy_(b.weight)
                a.bias.copy_(b.bias)
            self.block.conv.lin1.weight.copy_(ours.lin_in.weight)

    def forward(self, h, pos, edge_index):
        src, dst = edge_index
        dist = (pos.index_select(0, dst) - pos.index_select(0, src)).norm(dim=-1)
        return h + self.block(h, edge_index, dist, self.smear(dist))


class E3nnTFN(torch.nn.Module):
    """The ``tfn`` layer written with e3nn directly (no gate), weights taken from ``ours``."""

    def __init__(self, ours):
        super().__init__()
        self.tp = copy.deepcopy(ours.tp)
        self.self_int = copy.deepcopy(ours.self_int)
        self.radial = copy.deepcopy(ours.radial)
        self.lmax, self.num_basis = ours.p.lmax, ours.p.num_basis
        self.inv_avg = ours.inv_avg
        self.register_buffer("centres", torch.linspace(0.0, CUTOFF, self.num_basis))

    def forward(self, h, pos, edge_index):
        from e3nn import o3

        src, dst = edge_index
        r = pos.index_select(0, dst) - pos.index_select(0, src)
        y = o3.spherical_harmonics(list(range(self.lmax + 1)), r, normalize=True, normalization="component")
        d = r.norm(dim=-1, keepdim=True)
        sigma = CUTOFF / (self.num_basis - 1)  # graphdl's gaussian basis: exp(-((r - mu_k) / gap)^2)
        w = self.radial(torch.exp(-((d - self.centres) / sigma) ** 2))
        m = self.tp(h.index_select(0, src), y, w)
        agg = torch.zeros(h.size(0), m.size(1), dtype=m.dtype, device=m.device).index_add_(0, dst, m) * self.inv_avg
        return agg + self.self_int(h)


# ----------------------------------------------------------------------------- the cases
def build(case: str, d: int):
    load_builtin_blocks()
    torch.manual_seed(0)
    if case == "schnet":
        ours = BLOCKS["schnet"].build({"filters": d, "num_rbf": 50, "cutoff": CUTOFF}, {"node.h": d, "node.pos": "1o"})
        return ours, PygSchNet(ours, d, d, 50), d
    ours = BLOCKS["tfn"].build({"irreps_out": "16x0e + 8x1o + 4x2e", "lmax": 2, "num_basis": 8, "r_max": CUTOFF,
                                "radial_hidden": [32], "avg_num_neighbors": 10.0, "gate": False, "backend": "e3nn"},
                               {"node.h": "16x0e", "node.pos": "1o"})
    return ours, E3nnTFN(ours), 16


def run_case(case: str, args, device: torch.device) -> dict:
    ours, peer, d_in = build(case, args.dim)
    pos, edge_index, batch = point_clouds(args.graphs, args.atoms)
    n = pos.size(0)
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(n, d_in, generator=gen)
    out_dim = ours(_graph(edge_index, n, pos, h, batch, args.graphs), {"node.h": h, "node.pos": pos})["node.h"].size(1)
    grad = torch.randn(n, out_dim, generator=gen)

    # float64 parity on the same weights (the layers compute the same function)
    o64, p64 = copy.deepcopy(ours).double(), copy.deepcopy(peer).double()
    if case == "schnet":  # PyG's smearing constants were computed in float32 at construction
        p64.smear.offset = torch.linspace(0.0, CUTOFF, 50, dtype=torch.float64)
        p64.smear.coeff = -0.5 / (CUTOFF / 49) ** 2
        for m in p64.modules():  # and its ShiftedSoftplus shift is log 2 rounded to float32
            if hasattr(m, "shift"):
                m.shift = math.log(2.0)
    else:  # graphdl's centres are a float32 buffer: the same values in both
        p64.centres = o64.geometry.basis.centres.double()
    pos64, h64 = pos.double(), h.detach().double()
    a = o64(_graph(edge_index, n, pos64, h64, batch, args.graphs), {"node.h": h64, "node.pos": pos64})["node.h"]
    b = p64(h64, pos64, edge_index)
    diff = float((a - b).abs().max().detach())
    scale = float(b.abs().max().detach())

    ours, peer = ours.to(device), peer.to(device)
    pos, edge_index, batch, grad = pos.to(device), edge_index.to(device), batch.to(device), grad.to(device)
    h = h.to(device).requires_grad_(True)
    warm = _graph(edge_index, n, pos, h, batch, args.graphs)
    fns = {
        "ours": lambda: ours(warm, {"node.h": h, "node.pos": pos})["node.h"],
        "cold": lambda: ours(_graph(edge_index.clone(), n, pos, h, batch, args.graphs),
                             {"node.h": h, "node.pos": pos})["node.h"],
        "peer": lambda: peer(h, pos, edge_index),
    }
    for _ in range(max(args.warmup, 1)):
        for fn in fns.values():
            fn().backward(grad)
    times = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, fn in fns.items():  # interleaved: load on the machine hits all alike
            times[k].append(benchmarking.timed(lambda fn=fn: fn().backward(grad), device) * 1e3)
    ms = {k: statistics.median(v) for k, v in times.items()}
    return {"case": case, "nodes": n, "edges": edge_index.size(1), "ms": ms,
            "peer_over_ours": ms["peer"] / ms["ours"], "peer_over_cold": ms["peer"] / ms["cold"],
            # the same float64 arithmetic in another order: sums over a few dozen neighbours through
            # three dense layers, far below 64 ulp of the output's scale; a wrong weight map is ~1e-1
            "float64_max_abs_diff": diff, "float64_bound": 64 * math.ulp(1.0) * max(scale, 1.0),
            "params": sum(p.numel() for p in ours.parameters())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example:\n  python benchmarks/geometric.py --graphs 32 --atoms 24 --threads 2")
    ap.add_argument("--cases", nargs="*", default=["schnet", "tfn"], choices=["schnet", "tfn"])
    ap.add_argument("--graphs", type=int, default=32)
    ap.add_argument("--atoms", type=int, default=24)
    ap.add_argument("--dim", type=int, default=64, help="schnet features and filters")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    benchmarking.add_arguments(ap)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = benchmarking.resolve_device(args.device)
    peers = ("torch_geometric", "e3nn")
    print(benchmarking.banner(device, peers))
    rows = [run_case(c, args, device) for c in args.cases]
    r0 = rows[0]
    print(f"{args.graphs} point clouds x {args.atoms} atoms: {r0['nodes']} nodes, {r0['edges']} edges "
          f"(radius {CUTOFF} Å); forward + backward, float32, median of {args.repeats}")
    print("| block | peer | ours ms | cold ms | peer ms | peer/ours | peer/cold | float64 max |Δ| (bound) |")
    print("|---|---|---|---|---|---|---|---|")
    names = {"schnet": "PyG InteractionBlock", "tfn": "e3nn directly"}
    for r in rows:
        m = r["ms"]
        print(f"| {r['case']} | {names[r['case']]} | {m['ours']:.2f} | {m['cold']:.2f} | {m['peer']:.2f} | "
              f"{r['peer_over_ours']:.2f}x | {r['peer_over_cold']:.2f}x | "
              f"{r['float64_max_abs_diff']:.1e} ({r['float64_bound']:.1e}) |")
    benchmarking.write_json(args.json, {"rows": rows, "args": vars(args)}, device, peers)
    bad = [r["case"] for r in rows if not r["float64_max_abs_diff"] <= r["float64_bound"]]
    if bad:
        print(f"error: {', '.join(bad)}: graphdl and the peer disagree beyond float64 round-off", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
