"""DGL interop, measured: parity with dgl.nn / PyG layers, ``lowering: dgl`` against graphdl's own
kernels, and ``graphdl export`` on the classic specs. Prints three Markdown tables.

1. **parity** — one layer per block, random weights (N(0, 0.4²), batch-norm statistics drawn),
   float64. The block is exported (:func:`graphdl.interop.export.export`: the ``dgl.nn`` or
   ``torch_geometric.nn`` layer with graphdl's weights copied in) and both run on every case of
   :func:`graphdl.testing.graph_cases.graph_cases` (isolated nodes, self-loops, parallel edges, no
   edges, a single node, a bipartite graph, a star, a batch of five, ...). Reported: the largest
   ``max |Δ|`` over the cases, and the largest output magnitude (the scale round-off is relative to).
2. **lowering** — every block with ``lowering: dgl``: float64 ``max |Δ|`` of outputs against its own
   lowering over the same cases; then forward + backward (input and parameter gradients) in float32 on
   one random graph (``--nodes``, ``--edges``, ``--dim`` features), the median of ``--repeats`` steps
   after ``--warmup``, both lowerings interleaved, each with its cached structure (graphdl's CSR,
   the DGLGraph) on one batch, as in training.
3. **export** — the classic specs (``specs/*.yaml``), random weights, exported to DGL and to PyG; the
   parity :func:`export` prints (a sample batch of three graphs), float64 and float32, or the one
   line of the refusal.

    python benchmarks/dgl_interop.py                         # all three, 20k nodes / 200k edges
    python benchmarks/dgl_interop.py --sections lowering --nodes 50000 --edges 500000 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch
import yaml

from graphdl.benchmarking import add_arguments, banner, resolve_device, write_json
from graphdl.compile import compile_spec
from graphdl.errors import DataError, GraphDLError
from graphdl.interop.dgl import load_dgl
from graphdl.interop.export import _import_file, _peer, _run_peer, export
from graphdl.nn.base import BLOCKS, load_builtin_blocks
from graphdl.testing.graph_cases import graph_cases, random_graph
from graphdl.train import checkpoint as C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D = 8  # node width of the parity cases
SCALAR_IN = {"node.h": D, "edge.e": 3}
GEOM_IN = {"node.h": D, "edge.e": 3, "node.pos": "1o"}

# (label, layer, inputs, outputs, dgl.nn layer, PyG layer); the mappings live in graphdl.interop.export
PARITY = [
    ("gcn", {"type": "gcn", "out_dim": 6}, SCALAR_IN, ["node.h"], "GraphConv", "GCNConv"),
    ("sage mean", {"type": "sage", "out_dim": 6, "aggr": "mean"}, SCALAR_IN, ["node.h"], "SAGEConv(mean)",
     "SAGEConv"),
    ("sage max_pool", {"type": "sage", "out_dim": 6, "aggr": "max_pool"}, SCALAR_IN, ["node.h"], "SAGEConv(pool)",
     "SAGEConv(project)"),
    ("gat", {"type": "gat", "out_dim": 4, "heads": 2}, SCALAR_IN, ["node.h"], "GATConv", "GATConv"),
    ("gatv2", {"type": "gatv2", "out_dim": 4, "heads": 2}, SCALAR_IN, ["node.h"], "GATv2Conv", "GATv2Conv"),
    ("gin", {"type": "gin", "out_dim": 6, "train_eps": True, "norm": "batch"}, SCALAR_IN, ["node.h"], "GINConv",
     "GINConv"),
    ("gine", {"type": "gine", "out_dim": 6, "norm": None, "project_edges": True}, SCALAR_IN, ["node.h"],
     "GINEConv", "GINEConv"),
    ("gated_gcn", {"type": "gated_gcn", "out_dim": D}, {"node.h": D, "edge.e": D}, ["node.h", "edge.e"],
     "GatedGCNConv", "ResGatedGraphConv"),
    ("monet", {"type": "monet", "out_dim": 4, "pseudo": "edge.e"}, SCALAR_IN, ["node.h"], "GMMConv", "GMMConv"),
    ("nnconv", {"type": "nnconv", "out_dim": 4, "hidden": [5], "aggr": "mean"}, SCALAR_IN, ["node.h"], "NNConv",
     "NNConv"),
    ("egnn", {"type": "egnn", "hidden": 8, "out_dim": 6, "distance_feature": "squared", "normalize": True,
              "norm_constant": 0.0, "tanh": False, "skip": False, "edge_input": "edge.e"}, GEOM_IN,
     ["node.h", "node.pos"], "EGNNConv", "-"),
    ("readout set2set", {"type": "readout", "input": "node.h", "output": "graph.y", "reduce": "set2set", "steps": 2},
     SCALAR_IN, ["graph.y"], "Set2Set", "Set2Set"),
    ("readout sum/mean/max", None, SCALAR_IN, ["graph.s", "graph.m", "graph.x"], "Sum/Avg/MaxPooling",
     "global_*_pool"),
]
POOLS = [{"type": "readout", "input": "node.h", "output": f"graph.{k}", "reduce": r}
         for k, r in (("s", "sum"), ("m", "mean"), ("x", "max"))]

# one configuration of each block with a DGL lowering (tests/interop/test_bench_dgl_interop.py checks that
# every such block is here); `_node_dim`: a narrower node.h (the edge networks of nnconv and mpnn make a
# node.h x out matrix per edge: 64 x 64 on 200k edges would be 3 GB), at width `dim` (edge.e: 3 features, edge.f: `dim`)
LOWERING = [
    ("gcn", {"out_dim": "dim"}), ("sage", {"out_dim": "dim", "aggr": "mean"}),
    ("sage", {"out_dim": "dim", "aggr": "max_pool"}), ("gin", {"out_dim": "dim", "norm": None}),
    ("gine", {"out_dim": "dim", "norm": None, "edge_input": "edge.f"}), ("gated_gcn", {"out_dim": "dim",
                                                                                       "edge_input": "edge.f"}),
    ("monet", {"out_dim": "dim", "pseudo": "edge.e"}), ("gat", {"out_dim": 8, "heads": 8}),
    ("gatv2", {"out_dim": 8, "heads": 8}), ("nnconv", {"out_dim": 16, "hidden": [32], "aggr": "mean", "_node_dim": 16}),
    ("mpnn", {"hidden": [32], "aggr": "mean", "_node_dim": 16}), ("egnn", {"hidden": "dim"}),
    ("schnet", {"filters": "dim", "num_rbf": 16, "cutoff": 5.0}), ("readout", {"reduce": "sum"}),
    ("readout", {"reduce": "set2set", "steps": 2}), ("edge_readout", {"input": "edge.f", "reduce": "mean"}),
]
CLASSIC = ["gcn", "sage", "sage_pool", "gat", "gatv2", "gin", "gine", "gated_gcn", "monet", "mpnn"]


def _randomise(model: torch.nn.Module, seed: int = 7) -> None:
    """Weights that are not an initialisation: N(0, 0.4²), batch-norm running statistics drawn."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.4)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def _max_diff(a: dict, b: dict, keys) -> tuple[float, float]:
    diff = scale = 0.0
    for k in keys:
        if a[k].numel():
            diff = max(diff, float((a[k] - b[k]).abs().max()))
            scale = max(scale, float(a[k].abs().max()))
    return diff, scale


def _export_spec(tmp: str, name: str, spec: dict | str, to: str):
    """(compiled model with random weights, float64 peer) or the refusal's line."""
    path = spec if isinstance(spec, str) else os.path.join(tmp, f"{name}.yaml")
    if not isinstance(spec, str):
        with open(path, "w") as fh:
            yaml.safe_dump(spec, fh)
    model = compile_spec(path)
    _randomise(model)
    ck = os.path.join(tmp, f"{name}-{to}.pt")
    C.save(ck, {"model": model.state_dict()})
    try:
        res = export(path, to=to, checkpoint=ck, out=os.path.join(tmp, f"{name}-{to}"))
    except GraphDLError as e:
        return str(e).split(": ", 1)[-1], None
    model.eval()
    mod = _import_file(os.path.join(res.directory, "model.py"))
    return (model, res), _peer(mod, model, to, torch.float64)


def parity_table(tmp: str) -> list[dict]:
    cases = graph_cases(feat_dim=D, edge_dim=3, with_pos=True)
    print("| block | dgl.nn | max abs diff | PyG | max abs diff | output scale |\n|---|---|---|---|---|---|")
    rows = []
    for label, layer, inputs, outputs, dgl_name, pyg_name in PARITY:
        spec = {"graphdl": 1, "name": label.replace(" ", "_").replace("/", "_"), "inputs": inputs,
                "model": {"layers": [layer] if layer else POOLS, "outputs": outputs}}
        row = {"block": label}
        for to in ("dgl", "pyg"):
            made, peer = _export_spec(tmp, spec["name"], spec, to)
            if peer is None:
                row[to] = made
                continue
            model = copy.deepcopy(made[0]).double().eval()
            diff = scale = 0.0
            for _, g in cases:
                g = g.replace(edge__e=torch.randn(g.num_edges, inputs["edge.e"], dtype=torch.float64,
                                                  generator=torch.Generator().manual_seed(g.num_edges)))
                with torch.no_grad():
                    d, s = _max_diff(model(g), _run_peer(peer, g, to), outputs)
                diff, scale = max(diff, d), max(scale, s)
            row[to], row["scale"] = diff, scale
        rows.append(row)
        fmt = lambda v: f"{v:.1e}" if isinstance(v, float) else f"refused: {v}"  # noqa: E731
        print(f"| {label} | {dgl_name} | {fmt(row['dgl'])} | {pyg_name} | {fmt(row['pyg'])} | "
              f"{row.get('scale', float('nan')):.2g} |")
    return rows


def _step(fn, params) -> float:
    t = time.perf_counter()
    out = fn()
    loss = sum((v.float() * w).sum() for v, w in zip(out, params))
    loss.backward()
    return time.perf_counter() - t


def lowering_table(nodes: int, edges: int, dim: int, repeats: int, warmup: int) -> list[dict]:
    load_builtin_blocks()
    fields = {"node.h": dim, "edge.e": 3, "edge.f": dim, "node.pos": "1o"}
    cases = graph_cases(feat_dim=dim, edge_dim=3, with_pos=True)
    big = random_graph(nodes, edges, dim, 3, seed=1, dtype=torch.float32, with_pos=True)
    gen = torch.Generator().manual_seed(2)
    big = big.replace(edge__f=torch.randn(big.num_edges, dim, generator=gen))
    print(f"\nforward + backward, float32, {nodes:,} nodes, {edges:,} edges, {dim} features, "
          f"{torch.get_num_threads()} threads; median of {repeats} after {warmup} warm-up")
    print("| block | options | float64 max abs diff | ours ms | lowering: dgl ms | dgl / ours |\n"
          "|---|---|---|---|---|---|")
    rows = []
    for name, raw in LOWERING:
        params = {k: (dim if v == "dim" else [dim if x == "dim" else x for x in v] if isinstance(v, list) else v)
                  for k, v in raw.items() if k != "_node_dim"}
        nd = min(raw.get("_node_dim", dim), dim)
        torch.manual_seed(0)
        ours = BLOCKS[name].build(params, {**fields, "node.h": nd})
        low = BLOCKS[name].build({**params, "lowering": "dgl"}, {**fields, "node.h": nd})
        low.load_state_dict(ours.state_dict())
        o64, l64 = copy.deepcopy(ours).double().eval(), copy.deepcopy(low).double().eval()
        diff = 0.0
        for _, g in cases:
            g = g.replace(edge__f=torch.randn(g.num_edges, dim, dtype=torch.float64, generator=gen),
                          node__h=g["node.h"][:, :nd])
            with torch.no_grad():
                a, b = o64(g, dict(g.fields)), l64(g, dict(g.fields))
            diff = max(diff, _max_diff(a, b, a)[0])
        inputs = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in big.fields.items()}
        inputs["node.h"] = big["node.h"][:, :nd].clone().requires_grad_(True)
        with torch.no_grad():
            keys = sorted(ours(big, dict(inputs)))
        weights = [torch.randn(ours(big, dict(inputs))[k].shape, generator=gen) for k in keys]
        fns = {"ours": lambda: [ours(big, dict(inputs))[k] for k in keys],
               "dgl": lambda: [low(big, dict(inputs))[k] for k in keys]}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for i in range(warmup + repeats):
            for k, fn in fns.items():
                for m in (ours, low):
                    m.zero_grad(set_to_none=True)
                t = _step(fn, weights)
                if i >= warmup:
                    times[k].append(t)
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        opts = ", ".join(f"{k}: {v}" for k, v in params.items()) + (f" (node.h: {nd})" if nd != dim else "")
        rows.append({"block": name, "options": opts, "diff": diff, **ms})
        print(f"| {name} | {opts} | {diff:.1e} | {ms['ours']:.1f} | {ms['dgl']:.1f} | {ms['dgl'] / ms['ours']:.2f} |")
    return rows


def export_table(tmp: str) -> list[dict]:
    print("\n| spec | --to | float64 max abs diff | float32 max abs diff | output scale |\n|---|---|---|---|---|")
    rows = []
    for name in CLASSIC:
        for to in ("dgl", "pyg"):
            made, _ = _export_spec(tmp, name, os.path.join(ROOT, "specs", f"{name}.yaml"), to)
            if isinstance(made, str):
                rows.append({"spec": name, "to": to, "refused": made})
                print(f"| {name} | {to} | refused: {made} | | |")
                continue
            for k, v in made[1].parity["outputs"].items():
                rows.append({"spec": name, "to": to, "output": k, **v, "ok": made[1].parity["ok"]})
                print(f"| {name} | {to} | {v['float64']:.1e} | {v['float32']:.1e} | {v['scale']:.2g} |")
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", nargs="*", default=["parity", "lowering", "export"],
                    choices=["parity", "lowering", "export"])
    ap.add_argument("--nodes", type=int, default=20_000)
    ap.add_argument("--edges", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    add_arguments(ap)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    if device.type != "cpu":
        raise DataError(f"--device {args.device}: DGL's PyPI wheel (2.1.0) is CPU-only, so its kernels and "
                        f"dgl.nn layers run on CPU; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    with warnings.catch_warnings():  # the graphbolt notice: nothing here samples
        warnings.simplefilter("ignore")
        load_dgl()
    peers = ("dgl", "torch_geometric")
    print(banner(device, peers=peers) + f", python {sys.version.split()[0]}\n")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DGL's "no valid edges" notices on the edgeless cases
        if "parity" in args.sections:
            out["parity"] = parity_table(tmp)
        if "lowering" in args.sections:
            out["lowering"] = lowering_table(args.nodes, args.edges, args.dim, args.repeats, args.warmup)
        if "export" in args.sections:
            out["export"] = export_table(tmp)
    write_json(args.json, out, device, peers=peers)
    return out


if __name__ == "__main__":
    main()
