"""N-body EGNN benchmark: graphdl's ``egnn`` block vs ``egnn-pytorch`` (lucidrains), forward+backward.

Usage::

    python benchmarks/nbody.py --batch 100 --particles 5 --width 64 --depth 4 --repeat 30

Both models: ``depth`` EGNN layers of width ``width`` (features and messages), SiLU, sum
message aggregation, edge attribute ``q_i q_j``, on a complete graph of ``particles`` nodes,
``batch`` systems per batch, float32, an MSE loss on the output positions. graphdl runs the
batch as one sparse graph (edges sorted by destination, built once: ``prepare`` is timed
separately); egnn-pytorch runs dense ``(B, N, N)`` tensors. The two layers differ in MLP
widths (egnn-pytorch's edge MLP has a hidden layer of ``2·(2·dim + 2)``, its coordinate MLP
``4·m_dim``), so parameter counts are printed too.

Each row is the median of ``--repeat`` timed steps (after warm-up); the two implementations
are interleaved inside each repeat so background load hits both alike. ``ratio`` is
``egnn-pytorch time / graphdl time`` (> 1: graphdl is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from graphdl.compile import compile_spec
from graphdl.data.graph import Graph, collate
from graphdl.data.nbody import complete_edge_index


def graphdl_model(width: int, depth: int, vel: bool):
    layer = {"type": "egnn", "repeat": depth, "input": "node.h", "pos": "node.pos",
             "edge_input": "edge.charge_product", "hidden": width, "act": "silu", "coords_agg": "mean",
             # the paper's layer, as egnn-pytorch's defaults compute it (raw ‖r‖², r, unbounded φ_x)
             "distance_feature": "squared", "normalize": False, "tanh": False}
    if vel:
        layer["vel"] = "node.vel"
    spec = {"graphdl": 1, "name": "egnn-bench",
            "inputs": {"node.pos": "1o", "node.vel": "1o", "node.speed": 1, "edge.charge_product": 1},
            "graph": {"kind": "complete"},
            "model": {"layers": [{"type": "linear", "input": "node.speed", "output": "node.h", "out_dim": width},
                                 layer], "outputs": ["node.pos"]}}
    return compile_spec(spec)


def make_batch(b: int, n: int, device) -> tuple[Graph, dict]:
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(b, n, 3, generator=g)
    vel = torch.randn(b, n, 3, generator=g) * 0.5
    q = torch.randint(0, 2, (b, n), generator=g).float() * 2 - 1
    ei = complete_edge_index(n)
    graphs = [Graph(ei, n, {"node.pos": pos[i], "node.vel": vel[i], "node.speed": vel[i].norm(dim=-1, keepdim=True),
                            "edge.charge_product": (q[i][ei[0]] * q[i][ei[1]])[:, None]}) for i in range(b)]
    dense = {"feats": vel.norm(dim=-1, keepdim=True), "coors": pos, "edges": (q[:, :, None] * q[:, None, :])[..., None]}
    return collate(graphs).to(device), {k: v.to(device) for k, v in dense.items()}


class LucidEGNN(torch.nn.Module):
    def __init__(self, width: int, depth: int):
        super().__init__()
        from egnn_pytorch import EGNN

        self.embed = torch.nn.Linear(1, width)
        self.layers = torch.nn.ModuleList([EGNN(dim=width, edge_dim=1, m_dim=width) for _ in range(depth)])

    def forward(self, feats, coors, edges):
        h = self.embed(feats)
        for layer in self.layers:
            h, coors = layer(h, coors, edges)
        return coors


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--particles", type=int, default=5)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    ours = graphdl_model(args.width, args.depth, vel=False).to(device)
    ours_vel = graphdl_model(args.width, args.depth, vel=True).to(device)
    lucid = LucidEGNN(args.width, args.depth).to(device)
    g, dense = make_batch(args.batch, args.particles, device)
    target = torch.randn(args.batch * args.particles, 3, device=device)

    t0 = time.perf_counter()
    for _ in range(10):
        g._cache.pop("prepared_for", None)
        gp = ours.prepare(g)
    _sync(device)
    t_prepare = (time.perf_counter() - t0) / 10

    def step_ours(model):
        out = model(gp)["node.pos"]
        torch.nn.functional.mse_loss(out, target).backward()

    def step_lucid():
        out = lucid(**dense).reshape(-1, 3)
        torch.nn.functional.mse_loss(out, target).backward()

    cases = {"graphdl egnn": lambda: step_ours(ours), "graphdl egnn + vel": lambda: step_ours(ours_vel),
             "egnn-pytorch": step_lucid}
    times = {k: [] for k in cases}
    for r in range(args.warmup + args.repeat):
        for name, fn in cases.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    params = {"graphdl egnn": ours, "graphdl egnn + vel": ours_vel, "egnn-pytorch": lucid}
    print(f"N-body EGNN forward+backward, batch {args.batch} x {args.particles} particles, width {args.width}, "
          f"depth {args.depth}, {device.type}, threads {torch.get_num_threads()}, median of {args.repeat}")
    print(f"{'model':<22}{'params':>10}{'ms/batch':>11}{'ratio':>8}")
    for k in cases:
        n = sum(p.numel() for p in params[k].parameters())
        print(f"{k:<22}{n:>10,}{med[k]:>11.3f}{med['egnn-pytorch'] / med[k]:>8.2f}")
    print(f"graphdl complete-graph prepare (once per batch, cached): {t_prepare * 1e3:.3f} ms")
    print(f"ratio egnn-pytorch / graphdl egnn: {med['egnn-pytorch'] / med['graphdl egnn']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
