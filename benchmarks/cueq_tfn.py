"""TFN / SE(3)-transformer block: e3nn vs NVIDIA cuEquivariance, forward + backward time.

Usage::

    python benchmarks/cueq_tfn.py --graphs 100 --nodes 5 --repeat 11          # N-body batch, CPU
    python benchmarks/cueq_tfn.py --device cuda --graphs 200 --nodes 20        # GPU (kernels if installed)

One block of the N-body spec (``16x0e + 8x1o + 4x2e``, lmax 2, complete graphs) is built on
both backends with the same parameters; each repeat times forward + backward of the sum of
squares of the output for both, interleaved so that load from other processes hits them
alike; the table gives the medians and ``e3nn time / cueq time`` (> 1: cuEquivariance is
faster). On a machine without CUDA kernels the cuEquivariance column is its torch fallback.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from graphdl import benchmarking
from graphdl.data.graph import Graph, collate
from graphdl.nn.se3 import TFN, SE3Transformer

PEERS = ("e3nn", "cuequivariance", "cuequivariance-torch")
IRREPS = "16x0e + 8x1o + 4x2e"
FIELDS = {"node.h": IRREPS, "node.pos": "1o", "edge.q": 1}


def _batch(graphs: int, nodes: int, device: str, dtype) -> Graph:
    gen = torch.Generator().manual_seed(0)
    out = []
    idx = torch.arange(nodes)
    src, dst = idx.repeat_interleave(nodes), idx.repeat(nodes)
    keep = src != dst
    ei = torch.stack([src[keep], dst[keep]])
    dim = 16 + 8 * 3 + 4 * 5
    for _ in range(graphs):
        out.append(Graph(ei, nodes, {"node.h": torch.randn(nodes, dim, generator=gen),
                                     "node.pos": 2 * torch.randn(nodes, 3, generator=gen),
                                     "edge.q": torch.randn(ei.shape[1], 1, generator=gen)}))
    g = collate(out).to(device)
    return g.replace(**{k.replace(".", "__"): v.to(dtype) for k, v in g.fields.items()})


def _time(block, g: Graph, device) -> float:
    block.zero_grad(set_to_none=True)

    def step():
        block(g, dict(g.fields))["node.h"].pow(2).sum().backward()

    return benchmarking.timed(step, device)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--graphs", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    benchmarking.add_arguments(ap)
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    device = benchmarking.resolve_device(args.device)
    g = _batch(args.graphs, args.nodes, device, dtype)
    print(benchmarking.banner(device, PEERS))
    print(f"{g.num_nodes} nodes, {g.num_edges} edges, {args.dtype}, {args.device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeat}")
    rows = []
    print(f"{'block':16s} {'e3nn ms':>9s} {'cueq ms':>9s} {'e3nn/cueq':>9s}  cueq path")
    for name, cls, extra in (("tfn", TFN, {"avg_num_neighbors": args.nodes - 1}),
                             ("se3_transformer", SE3Transformer, {"heads": 4})):
        p = {"irreps_out": IRREPS, "lmax": 2, "edge_input": "edge.q", "num_basis": 16, "r_max": 8.0, **extra}
        torch.manual_seed(0)
        e3 = cls.build({**p, "backend": "e3nn"}, FIELDS)
        cu = cls.build({**p, "backend": "cuequivariance"}, FIELDS)
        cu.load_state_dict(e3.state_dict())
        e3, cu = e3.to(device, dtype), cu.to(device, dtype)
        for _ in range(2):  # warm-up (e3nn codegen, allocator)
            _time(e3, g, device), _time(cu, g, device)
        te, tc = [], []
        for _ in range(args.repeat):
            te.append(_time(e3, g, device))
            tc.append(_time(cu, g, device))
        me, mc = statistics.median(te) * 1e3, statistics.median(tc) * 1e3
        print(f"{name:16s} {me:9.2f} {mc:9.2f} {me / mc:9.2f}  {cu.describe_extra()}")
        rows.append({"block": name, "e3nn_ms": me, "cueq_ms": mc, "cueq_path": cu.describe_extra()})
    benchmarking.write_json(args.json, {"args": vars(args), "rows": rows}, device, PEERS)


if __name__ == "__main__":
    main()
