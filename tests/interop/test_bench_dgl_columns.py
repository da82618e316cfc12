"""benchmarks/pyg_layers.py with its DGL columns, at a tiny size (a smoke test: a renamed parameter or a
DGL layer that stops accepting its inputs breaks here, not in a user's benchmark run), and the
weight copies it uses to put the same weights in DGL's layers."""

from __future__ import annotations

import importlib.util
import math
import os
import sys

import pytest
import torch

from graphdl.interop.dgl import PIP, dgl_installed, load_dgl
from graphdl.nn.base import BLOCKS, load_builtin_blocks

if not dgl_installed():  # the test extra installs it
    pytest.skip(f"dgl is not installed: {PIP}", allow_module_level=True)
load_dgl()  # installed, it must import: a failure is a test error, not a skip
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bench():
    spec = importlib.util.spec_from_file_location("bench_pyg_layers", os.path.join(ROOT, "benchmarks", "pyg_layers.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file runs
    spec.loader.exec_module(mod)
    return mod


BENCH = _bench()


def test_every_case_runs_with_dgl_and_lowering_columns(capsys):
    rows = BENCH.main(["--all", "--nodes", "60", "--edges", "300", "--repeats", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    assert "DGL ms" in out and "low/ours" in out and "dgl 2.1.0" in out
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == set(BENCH.CASES)
    for name, case in BENCH.CASES.items():
        r = by_name[name]
        assert ("dgl" in r) == (case.dgl is not None) and ("pyg" in r) == (case.pyg is not None), name
        assert ("lowering" in r) == (name != "transformer"), name
        assert all(math.isfinite(v) and v > 0 for k, v in r.items() if isinstance(v, float)), name


# the cases whose DGL layer computes the same function as ours (GCN/GAT differ in normalisation or
# self-loop handling on a directed graph with loops, and MoNet's residual is DGL's identity)
SAME = ["sage", "gin", "sage_pool", "gine", "gated_gcn"]


@pytest.mark.parametrize("name", SAME)
def test_dgl_columns_use_our_weights_where_the_layers_are_equal(name):
    load_builtin_blocks()
    case = BENCH.CASES[name]
    edge_index, x = BENCH.random_graph(40, 200, 8, seed=2)
    x = x.double()
    fields = {"node.h": 8} if case.edge_dim is None else {"node.h": 8, "edge.e": 8}  # the case's widths, scaled
    params = {"out_dim": 8, **case.params}
    if "hidden" in params:
        params["hidden"] = [8]
    ours = BLOCKS[case.block].build(params, fields).double()
    peer = case.dgl(8, 8).double() if name != "gated_gcn" else load_dgl().nn.pytorch.GatedGCNConv(8, 8, 8).double()
    with torch.no_grad():
        case.dgl_copy(ours, peer)
    e = torch.randn(edge_index.size(1), 8, dtype=torch.float64)
    g = BENCH._graph(edge_index, 40)
    f = {"node.h": x, **({"edge.e": e} if case.edge_dim else {})}
    want = ours(g, f)["node.h"]
    got = peer(BENCH._dgl_graph(edge_index, 40, case.dgl_loops), x, *((e,) if case.edge_dim else ()))
    got = got[0] if isinstance(got, tuple) else got
    # float64, the same arithmetic in another order (sums of ≤ ~15 edges, 3 layers): round-off ≤ 1e-12
    assert (want - got).abs().max() <= 1e-12
