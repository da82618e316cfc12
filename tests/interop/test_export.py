"""``graphdl export --to dgl|pyg``: the classic specs as plain PyTorch modules of peer layers.

Each export writes model.py + weights.pt + export.json, loads in a fresh import with
``torch.load(weights_only=True)``, and computes what the compiled spec computes. The weights are
"trained-like" (random, non-trivial batch-norm statistics), not the initial ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from graphdl.cli import main
from graphdl.compile import compile_spec
from graphdl.data.convert import to_dgl
from graphdl.errors import CheckpointError, SpecError
from graphdl.interop.dgl import PIP, dgl_installed, load_dgl
from graphdl.interop.export import _import_file, _sample_batch, export, exportable_blocks
from graphdl.train import checkpoint as C

if not dgl_installed():  # the test extra installs it
    pytest.skip(f"dgl is not installed: {PIP}", allow_module_level=True)
load_dgl()  # installed, it must import: a failure is a test error, not a skip
pytest.importorskip("torch_geometric", reason="test extra: torch_geometric==2.8.1")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSIC = [("gcn", "dgl"), ("gcn", "pyg"), ("sage", "dgl"), ("sage", "pyg"), ("sage_pool", "dgl"),
           ("sage_pool", "pyg"), ("gat", "dgl"), ("gat", "pyg"), ("gatv2", "pyg"), ("gin", "dgl"), ("gin", "pyg"),
           ("gine", "dgl"), ("gine", "pyg"), ("gated_gcn", "dgl"), ("monet", "dgl"), ("monet", "pyg"),
           ("mpnn", "dgl"), ("mpnn", "pyg")]


def _trained_checkpoint(spec, path) -> torch.nn.Module:
    """A checkpoint whose weights are random draws (not the initialisation) with batch-norm statistics."""
    model = compile_spec(spec)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.4)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    C.save(path, {"model": model.state_dict()})
    return model.eval()


def _run_exported(directory: str, to: str, g):
    mod = _import_file(os.path.join(directory, "model.py"))
    net = mod.load(directory)
    assert not net.training
    if to == "dgl":
        return net(to_dgl(g, with_graph_fields=True)[0], dict(g.fields))
    return net(g.edge_index, dict(g.fields), g.batch, g.num_graphs)


@pytest.mark.parametrize("name, to", CLASSIC, ids=[f"{n}-{t}" for n, t in CLASSIC])
def test_classic_spec_exports_and_computes_the_same(tmp_path, name, to):
    spec = os.path.join(ROOT, "specs", f"{name}.yaml")
    ours = _trained_checkpoint(spec, tmp_path / "best.pt")
    res = export(spec, to=to, checkpoint=str(tmp_path / "best.pt"), out=str(tmp_path / "out"))
    assert res.parity["ok"], res.summary()
    for k, v in res.parity["outputs"].items():  # float64 parity: round-off of the same arithmetic
        assert v["float64"] <= 1e-9 * max(1.0, v["scale"]), (k, v)
    text = (tmp_path / "out" / "model.py").read_text()
    assert "import graphdl" not in text and "from graphdl" not in text
    state = torch.load(tmp_path / "out" / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    meta = json.loads((tmp_path / "out" / "export.json").read_text())
    assert meta["target"] == to and meta["parity"]["ok"] and len(meta["layers"]) == len(ours.plan.steps)
    # independently of the export's own check: a fresh import, the float32 weights, another batch
    g = _sample_batch(ours.plan.inputs, torch.float32, seed=3)
    with torch.no_grad():
        want, got = ours(g), _run_exported(str(tmp_path / "out"), to, g)
    for k in want:
        # float32: ≤ ~200 roundings of eps32 along ≤ 12 layers of width ≤ 70, relative to the output scale
        bound = 200 * torch.finfo(torch.float32).eps * max(1.0, float(want[k].abs().max()))
        assert (want[k] - got[k]).abs().max() <= bound, k


SPEC_MORE = """
graphdl: 1
name: more
inputs: {node.h: 5, node.pos: 1o, edge.e: 3}
model:
  layers:
    - {type: egnn, hidden: 8, out_dim: 6, distance_feature: squared, normalize: true, norm_constant: 0.0,
       tanh: false, skip: false, edge_input: edge.e}
    - {type: nnconv, out_dim: 6, hidden: [4], aggr: mean, residual: true}
    - {type: layer_norm}
    - {type: concat, inputs: [node.h, node.h], output: node.c}
    - {type: readout, input: node.c, output: graph.a, reduce: set2set, steps: 2}
    - {type: readout, input: node.h, output: graph.b, reduce: attention, gate_hidden: [4], value_dim: 3}
    - {type: edge_readout, input: edge.e, output: graph.e, reduce: max}
    - {type: concat, inputs: [graph.a, graph.b, graph.e], output: graph.y}
  outputs: [graph.y, node.pos]
"""


def test_more_blocks_export_to_dgl_and_pyg_where_they_can(tmp_path):
    path = tmp_path / "more.yaml"
    path.write_text(SPEC_MORE)
    _trained_checkpoint(str(path), tmp_path / "best.pt")
    res = export(str(path), to="dgl", checkpoint=str(tmp_path / "best.pt"), out=str(tmp_path / "dgl"))
    assert res.parity["ok"], res.summary()
    assert any("EGNNConv" in layer for _, _, layer in res.layers)
    with pytest.raises(SpecError, match=r"more.yaml:7:\d+: model.layers\[0\]: `egnn` has no torch_geometric.nn "
                                        r"counterpart; exportable blocks:"):
        export(str(path), to="pyg", checkpoint=str(tmp_path / "best.pt"), out=str(tmp_path / "pyg"))


@pytest.mark.parametrize("spec, to, match", [
    ("gated_gcn", "pyg", r"model.layers\[2\]: `gated_gcn` with `edge_gates: True`.*ResGatedGraphConv"),
    ("gatv2", "dgl", r"model.layers\[1\]: `gatv2` with `edge_input` \(DGL's GATConv/GATv2Conv read no edge features\)"),
    ("tfn", "dgl", r"graph: export takes `graph.kind: given`.*builds a `radius` graph"),
    ("transformer", "pyg", r"graph: export takes `graph.kind: given`"),
    ("generic_gin", "dgl", r"`message_passing` has no dgl.nn counterpart; exportable blocks: .*`?gcn"),
])
def test_blocks_without_an_exact_counterpart_are_refused_at_their_layer(tmp_path, spec, to, match):
    with pytest.raises(SpecError, match=match):
        export(os.path.join(ROOT, "specs", f"{spec}.yaml"), to=to, out=str(tmp_path))


def test_egnn_outside_the_papers_layer_is_refused_for_dgl(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("graphdl: 1\ninputs: {node.h: 4, node.pos: 1o}\nmodel:\n  layers:\n    - {type: egnn, hidden: 4}\n")
    with pytest.raises(SpecError, match=r"`egnn` with `distance_feature: log1p`, `norm_constant: 1.0`, `tanh: True`, "
                                        r"`skip: True`"):
        export(str(path), to="dgl", out=str(tmp_path / "o"))


def test_a_checkpoint_of_another_spec_is_refused(tmp_path):
    _trained_checkpoint(os.path.join(ROOT, "specs", "gin.yaml"), tmp_path / "gin.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint `.*gin.pt` does not fit the model of `.*sage.yaml`"):
        export(os.path.join(ROOT, "specs", "sage.yaml"), to="dgl", checkpoint=str(tmp_path / "gin.pt"),
               out=str(tmp_path / "o"))


def test_cli_export_prints_the_table_and_parity(tmp_path, capsys):
    assert main(["export", os.path.join(ROOT, "specs", "gin.yaml"), "--to", "pyg", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "model.layers[0]    gin          -> GINConv" in out and "parity: ok" in out
    assert main(["export", os.path.join(ROOT, "specs", "tfn.yaml"), "--to", "pyg", "--out", str(tmp_path)]) == 2
    assert set(exportable_blocks("dgl")) >= {"gcn", "sage", "gat", "gin", "gine", "gated_gcn", "monet", "readout"}


def test_pyg_export_runs_without_graphdl(tmp_path):
    """The PyG module imports and runs in a fresh interpreter that never imports graphdl."""
    spec = os.path.join(ROOT, "specs", "gine.yaml")
    _trained_checkpoint(spec, tmp_path / "best.pt")
    export(spec, to="pyg", checkpoint=str(tmp_path / "best.pt"), out=str(tmp_path / "out"))
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import model; net = model.load(sys.argv[1]);"
            "ei = torch.tensor([[0, 1, 2, 2], [1, 2, 0, 0]]);"
            "out = net(ei, {'node.h': torch.randn(4, 9), 'edge.e': torch.randn(4, 3)});"
            "assert out['graph.y'].shape == (1, 1);"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'graphdl'], 'graphdl was imported'")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]


def test_initial_weights_without_a_checkpoint(tmp_path):
    res = export(os.path.join(ROOT, "specs", "gcn.yaml"), to="dgl", out=str(tmp_path))
    assert res.parity["ok"]
    assert "initial weights (seed 0)" in (tmp_path / "model.py").read_text()


SPEC_LOOPS = """
graphdl: 1
inputs: {node.h: 4, edge.e: 4}
graph: {kind: given, self_loops: true}
model:
  layers:
    - {type: gine, out_dim: 4, norm: null}
    - {type: sage, out_dim: 4}
    - {type: edge_readout, input: edge.e, output: graph.e, reduce: sum}
  outputs: [node.h, graph.e]
"""


@pytest.mark.parametrize("to", ["dgl", "pyg"])
def test_graph_self_loops_are_added_by_the_exported_module(tmp_path, to):
    path = tmp_path / "loops.yaml"
    path.write_text(SPEC_LOOPS)
    _trained_checkpoint(str(path), tmp_path / "best.pt")
    res = export(str(path), to=to, checkpoint=str(tmp_path / "best.pt"), out=str(tmp_path / "o"))
    assert res.parity["ok"], res.summary()
    path.write_text(SPEC_LOOPS.replace("outputs: [node.h, graph.e]", "outputs: [node.h, edge.e]"))
    with pytest.raises(SpecError, match=r"graph.self_loops: export of edge outputs \(edge.e\) with `self_loops: true`"):
        export(str(path), to=to, out=str(tmp_path / "o2"))
