"""GNS benchmark: graphdl's ``specs/gns/water_drop_2d.yaml`` model against a straightforward
PyTorch implementation of the reference (written below), and the radius graph against scipy.

Usage::

    python benchmarks/gns.py --threads 1                 # speed and parity tables
    python benchmarks/gns.py --smoke                     # tiny sizes, seconds (tests run this)

The reference (:class:`ReferenceGNS`) is what DeepMind's ``learning_to_simulate`` computes,
written the plain way: each MLP is ``nn.Sequential`` (Linear-ReLU-Linear-ReLU-Linear, then
LayerNorm except the decoder); an interaction network concatenates ``[e_ij, v_i, v_j]`` per
edge (graph_nets' order: edge, receiver, sender), runs the edge MLP, sums the new edges into
their receivers with ``index_add_``, runs the node MLP on ``[Σ e, v]`` and adds residuals.
Its weights are copied from the graphdl model, and both read the same batch and the same
edges (the reference's come from ``scipy.spatial.cKDTree.query_pairs`` plus self-edges, as
the reference's KDTree; the script checks they equal graphdl's cell-list graph).

Rows:

* ``forward max |Δ|``: the two normalised accelerations, float32; the bound is float32
  round-off of ~30 stacked layers: ``eps32 · 30 · max|out|``;
* ``train step``: radius graph + forward + backward + Adam step, median of ``--repeat`` timed
  steps after warm-up, the two implementations interleaved (background load hits both);
* ``radius graph``: graphdl's cell list and its CPU default (one ``cKDTree`` over all graphs,
  then the exact distance test; ``graphdl.ops.neighbors.radius_graph``) against a plain
  ``cKDTree.query_pairs`` per graph, for ``--graphs`` × ``--particles`` particles at water density.

``ratio`` = reference time / graphdl time (> 1: graphdl faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "specs", "gns", "water_drop_2d.yaml")
R = 0.015


# ---------------------------------------------------------------------------- reference
def _mlp(d_in: int, hidden: int, layers: int, d_out: int, layer_norm: bool) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, d_out))
    if layer_norm:
        mods.append(nn.LayerNorm(d_out))
    return nn.Sequential(*mods)


class ReferenceGNS(nn.Module):
    """Plain PyTorch GNS (encode-process-decode), the reference's computation (see the module docstring)."""

    def __init__(self, dim: int = 2, steps: int = 10, latent: int = 128, frames: int = 6, types: int = 9,
                 type_dim: int = 16, bounds=((0.03125, 0.96875), (0.03125, 0.96875)), radius: float = R):
        super().__init__()
        self.embedding = nn.Embedding(types, type_dim)
        node_in = (frames - 1) * dim + 2 * dim + type_dim
        self.node_enc = _mlp(node_in, latent, 2, latent, True)
        self.edge_enc = _mlp(dim + 1, latent, 2, latent, True)
        self.edge_mlps = nn.ModuleList()
        self.node_mlps = nn.ModuleList()
        for _ in range(steps):  # registered edge, node, edge, node ... like graphdl's blocks
            self.edge_mlps.append(_mlp(3 * latent, latent, 2, latent, True))
            self.node_mlps.append(_mlp(2 * latent, latent, 2, latent, True))
        self.decoder = _mlp(latent, latent, 2, dim, False)
        self.register_buffer("bounds", torch.tensor(bounds))
        self.register_buffer("vel_mean", torch.zeros(dim))
        self.register_buffer("vel_std", torch.ones(dim))
        self.radius = radius

    def parameters_in_graphdl_order(self):
        mods = [self.embedding, self.node_enc, self.edge_enc]
        for e, n in zip(self.edge_mlps, self.node_mlps):
            mods += [e, n]
        mods.append(self.decoder)
        return [p for m in mods for p in m.parameters()]

    def forward(self, history, types, senders, receivers):
        pos = history[:, -1]
        vel = (history[:, 1:] - history[:, :-1] - self.vel_mean) / self.vel_std
        walls = torch.cat([pos - self.bounds[:, 0], self.bounds[:, 1] - pos], -1) / self.radius
        nodes = torch.cat([vel.flatten(1), walls.clamp(-1, 1), self.embedding(types)], -1)
        disp = (pos[senders] - pos[receivers]) / self.radius
        edges = torch.cat([disp, torch.sqrt((disp * disp).sum(-1, keepdim=True) + 1e-16)], -1)
        v, e = self.node_enc(nodes), self.edge_enc(edges)
        for edge_mlp, node_mlp in zip(self.edge_mlps, self.node_mlps):
            e_new = edge_mlp(torch.cat([e, v[receivers], v[senders]], -1))
            agg = torch.zeros_like(v).index_add_(0, receivers, e_new)
            v_new = node_mlp(torch.cat([agg, v], -1))
            v, e = v + v_new, e + e_new
        return self.decoder(v)


def kdtree_graph(pos: np.ndarray, batch: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs closer than ``radius`` within each graph (both directions) plus self-edges, via cKDTree."""
    from scipy.spatial import cKDTree

    src, dst = [], []
    for b in np.unique(batch):
        idx = np.flatnonzero(batch == b)
        pairs = cKDTree(pos[idx]).query_pairs(radius, output_type="ndarray")
        i, j = idx[pairs[:, 0]], idx[pairs[:, 1]]
        src += [i, j, idx]
        dst += [j, i, idx]
    return np.concatenate(src), np.concatenate(dst)


# ------------------------------------------------------------------------------ inputs
def water_batch(graphs: int, particles: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``graphs`` square blobs of ``particles`` particles at rest density (4 per cell of 1/64), with a
    6-frame history of small random motion: ``history (N, 6, 2)``, ``types (N,)``, ``batch (N,)``."""
    g = torch.Generator().manual_seed(seed)
    side = (particles ** 0.5) * (0.5 / 64)
    hist, batch = [], []
    for b in range(graphs):
        x0 = 0.3 + side * torch.rand(particles, 2, generator=g, dtype=torch.float64)
        v = 0.002 * torch.randn(particles, 2, generator=g, dtype=torch.float64)
        hist.append(torch.stack([x0 + v * k for k in range(6)], 1))
        batch.append(torch.full((particles,), b))
    return torch.cat(hist).float(), torch.full((graphs * particles,), 5), torch.cat(batch)


def graphdl_model(spec: str = SPEC):
    from graphdl.compile import compile_spec

    torch.manual_seed(0)
    model = compile_spec(spec)
    stats = {"velocity": (torch.tensor([1e-4, -2e-4]), torch.tensor([2e-3, 3e-3]))}
    model.set_statistics(stats)
    return model, stats


def input_graph(model, history, types, batch, graphs):
    from graphdl.simulate.core import SimFields, model_graph

    return model_graph(SimFields(), history, types, batch, graphs)


# -------------------------------------------------------------------------------- runs
def parity(model, ref, history, types, batch, graphs) -> dict:
    from graphdl.ops.neighbors import radius_graph

    g = input_graph(model, history, types, batch, graphs)
    with torch.no_grad():
        out = model(g)["node.acc"]
        pg = model.prepare(g)
        ei = radius_graph(history[:, -1], batch, R)
        s, d = kdtree_graph(history[:, -1].double().numpy(), batch.numpy(), R)
        ours = set(zip(*pg.edge_index.tolist()))
        theirs = set(zip(s.tolist(), d.tolist()))
        ref_out = ref(history, types, torch.as_tensor(s), torch.as_tensor(d))
    scale = float(out.abs().max())
    bound = torch.finfo(torch.float32).eps * 30 * max(scale, 1.0)
    return {"edges": pg.num_edges, "edges_without_self": ei.size(1), "same_graph": ours == theirs,
            "max_abs_diff": float((out - ref_out).abs().max()), "bound": bound, "max_abs_out": scale}


def time_steps(model, ref, history, types, batch, graphs, repeat: int, warmup: int) -> dict:
    target = torch.randn(history.size(0), 2, generator=torch.Generator().manual_seed(1))
    opt_a = torch.optim.Adam(model.parameters(), 1e-4)
    opt_b = torch.optim.Adam(ref.parameters(), 1e-4)
    bnp = batch.numpy()

    def step_ours():
        g = input_graph(model, history, types, batch, graphs)  # a new batch: the graph is rebuilt
        loss = ((model(g)["node.acc"] - target) ** 2).mean()
        opt_a.zero_grad(set_to_none=True)
        loss.backward()
        opt_a.step()

    def step_ref():
        s, d = kdtree_graph(history[:, -1].double().numpy(), bnp, R)
        loss = ((ref(history, types, torch.as_tensor(s), torch.as_tensor(d)) - target) ** 2).mean()
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        opt_b.step()

    for _ in range(warmup):
        step_ours()
        step_ref()
    ta, tb = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step_ours()
        t1 = time.perf_counter()
        step_ref()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    a, b = statistics.median(ta), statistics.median(tb)
    return {"graphdl_ms": 1e3 * a, "reference_ms": 1e3 * b, "ratio": b / a}


def time_radius(history, batch, repeat: int) -> dict:
    from graphdl.ops.neighbors import radius_graph

    pos = history[:, -1]
    pnp, bnp = pos.double().numpy(), batch.numpy()
    ta, tb, tc = [], [], []
    for _ in range(repeat + 2):
        t0 = time.perf_counter()
        radius_graph(pos, batch, R, method="cell_list")
        t1 = time.perf_counter()
        kdtree_graph(pnp, bnp, R)
        t2 = time.perf_counter()
        radius_graph(pos, batch, R, method="kdtree")
        t3 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
        tc.append(t3 - t2)
    a, b, c = (statistics.median(t[2:]) for t in (ta, tb, tc))
    return {"cell_list_ms": 1e3 * a, "ckdtree_ms": 1e3 * b, "graphdl_kdtree_ms": 1e3 * c, "ratio": b / a}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graphs", type=int, default=2)
    ap.add_argument("--particles", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a test runs this)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.graphs, args.particles, args.repeat, args.warmup = 2, 60, 2, 1
    torch.set_num_threads(args.threads)
    model, stats = graphdl_model()
    ref = ReferenceGNS()
    with torch.no_grad():
        ours = [p for p in model.parameters()]
        theirs = ref.parameters_in_graphdl_order()
        if [p.shape for p in ours] != [p.shape for p in theirs]:
            print("parameter layouts differ", file=sys.stderr)
            return 1
        for a, b in zip(ours, theirs):
            b.copy_(a)
        ref.vel_mean.copy_(stats["velocity"][0])
        ref.vel_std.copy_(stats["velocity"][1])
    history, types, batch = water_batch(args.graphs, args.particles)
    par = parity(model, ref, history, types, batch, args.graphs)
    speed = time_steps(model, ref, history, types, batch, args.graphs, args.repeat, args.warmup)
    rad = time_radius(history, batch, args.repeat)
    res = {"graphs": args.graphs, "particles": args.particles, "threads": args.threads, "parity": par,
           "train_step": speed, "radius_graph": rad}
    print(f"GNS (10 x 128) on {args.graphs} x {args.particles} particles, {par['edges']} edges (self-edges incl.), "
          f"{args.threads} thread(s), float32")
    print(f"  same graph as cKDTree: {par['same_graph']};  forward max |Δ| {par['max_abs_diff']:.2e} "
          f"(bound {par['bound']:.2e}, max |out| {par['max_abs_out']:.2f})")
    print("| what | graphdl | reference | ratio |\n|---|---|---|---|")
    print(f"| train step (graph + fwd + bwd + Adam) | {speed['graphdl_ms']:.1f} ms | {speed['reference_ms']:.1f} ms "
          f"| {speed['ratio']:.2f}x |")
    print(f"| radius graph ({args.graphs} x {args.particles}), cell list | {rad['cell_list_ms']:.2f} ms | "
          f"{rad['ckdtree_ms']:.2f} ms (cKDTree) | {rad['ratio']:.2f}x |")
    print(f"| radius graph ({args.graphs} x {args.particles}), graphdl's CPU default (cKDTree + exact test) | "
          f"{rad['graphdl_kdtree_ms']:.2f} ms | {rad['ckdtree_ms']:.2f} ms (cKDTree) | "
          f"{rad['ckdtree_ms'] / rad['graphdl_kdtree_ms']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    ok = par["same_graph"] and par["max_abs_diff"] <= par["bound"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
