"""``lowering: dgl`` against each block's own lowering: same module and state dict, outputs and
gradients equal to float64 round-off; the errors and notes around it; a spec run end to end.

Tolerance: both lowerings run the same float64 arithmetic in another order (DGL's kernels sum
edges in CSC order, graphdl's CSR products and segment sums in theirs; GCN's self-loops are a
diagonal term on DGL, CSR entries on ours). Sums of ≤ 60 terms of size ≤ ~25 through ≤ 4 layers
carry ≤ ~200 roundings of ≤ eps·25 ≈ 1.1e-12 (as in test_dgl_parity.py); gradients go through the
transposed sums, the same count. Measured ≤ 1e-14.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from graphdl.compile import compile_spec, plan_spec
from graphdl.data.graph import collate
from graphdl.errors import InferenceError, KernelUnavailableError, SpecError
from graphdl.interop.dgl import PIP, dgl_installed, load_dgl
from graphdl.nn.base import BLOCKS, describe_lowering, dgl_blocks, load_builtin_blocks
from graphdl.spec.model import parse_spec_text
from graphdl.testing.graph_cases import graph_cases, random_graph

if not dgl_installed():  # the test extra installs it
    pytest.skip(f"dgl is not installed: {PIP}", allow_module_level=True)
load_dgl()  # installed, it must import: a failure is a test error, not a skip

TOL = 1.1e-12  # derivation in the module docstring
D = 6
DT = torch.float64
FIELDS = {"node.h": D, "edge.e": 3, "edge.f": D, "edge.w": 1, "node.pos": "1o", "node.vel": "1o"}


def _with_fields(g):
    gen = torch.Generator().manual_seed(g.num_nodes * 7 + g.num_edges)
    return g.replace(
        edge__f=torch.randn(g.num_edges, D, dtype=DT, generator=gen),
        edge__w=g["edge.e"][:, :1].abs() + 0.1,
        node__vel=torch.randn(g.num_nodes, 3, dtype=DT, generator=gen),
    )


def _cases():
    cases = graph_cases(feat_dim=D, edge_dim=3, with_pos=True)
    cases.append(("random_60", random_graph(60, 240, D, 3, seed=3, with_pos=True)))
    return [(n, _with_fields(g)) for n, g in cases]


CASES = _cases()
IDS = [n for n, _ in CASES]

CONFIGS = [
    ("gcn", {"out_dim": 4}),
    ("gcn", {"out_dim": 9, "improved": True}),
    ("gcn", {"out_dim": 4, "edge_weight": "edge.w"}),
    ("gcn", {"out_dim": 4, "add_self_loops": False}),
    ("gcn", {"out_dim": 4, "normalize": False, "edge_weight": "edge.w"}),
    ("sage", {"out_dim": 8, "aggr": "mean"}),
    ("sage", {"out_dim": 3, "aggr": "mean", "normalize": True}),
    ("sage", {"out_dim": 8, "aggr": "sum", "root_weight": False}),
    ("sage", {"out_dim": 8, "aggr": "max"}),
    ("sage", {"out_dim": 8, "aggr": "max_pool"}),
    ("gin", {"out_dim": 5, "norm": None, "eps": 0.1}),
    ("gin", {"out_dim": 5, "norm": "batch", "train_eps": True}),
    ("gine", {"out_dim": 5, "norm": None, "edge_input": "edge.f", "eps": 0.2}),
    ("gine", {"out_dim": 5, "norm": None, "project_edges": True}),
    ("gated_gcn", {"out_dim": D, "edge_input": "edge.f"}),
    ("gated_gcn", {"out_dim": 4, "edge_gates": False, "update_edges": False, "skip": False, "batch_norm": False}),
    ("monet", {"out_dim": 4, "pseudo": "degree", "pseudo_dim": 2}),
    ("monet", {"out_dim": 4, "pseudo": "edge.e", "aggr": "sum"}),
    ("monet", {"out_dim": 4, "pseudo": "edge.e", "aggr": "max"}),
    ("monet", {"out_dim": 4, "pseudo": "edge.e", "separate_gaussians": True}),
    ("monet", {"out_dim": 4, "pseudo": "edge.e", "separate_gaussians": True, "aggr": "max"}),
    ("gat", {"out_dim": 4, "heads": 2}),
    ("gat", {"out_dim": 4, "heads": 2, "concat": False, "edge_input": "edge.e", "add_self_loops": False}),
    ("gat", {"out_dim": 4, "heads": 2, "edge_input": "edge.e", "fill_value": "max"}),
    ("gatv2", {"out_dim": 4, "heads": 2, "edge_input": "edge.e"}),
    ("gatv2", {"out_dim": 4, "heads": 3, "share_src_dst": True, "add_self_loops": False}),
    ("nnconv", {"out_dim": 4, "hidden": [5]}),
    ("nnconv", {"out_dim": 4, "hidden": [5], "aggr": "mean"}),
    ("mpnn", {"hidden": [5], "aggr": "mean"}),
    ("egnn", {"hidden": 7}),
    ("egnn", {"hidden": 7, "vel": "node.vel", "attention": True, "coords_agg": "sum", "aggr": "mean",
              "edge_input": "edge.e"}),
    ("schnet", {"filters": 8, "num_rbf": 10, "cutoff": 3.0}),
    ("readout", {"reduce": "sum"}),
    ("readout", {"reduce": "mean"}),
    ("readout", {"reduce": "max"}),
    ("readout", {"reduce": "attention", "gate_hidden": [4], "value_dim": 3}),
    ("readout", {"reduce": "set2set", "steps": 2}),
    ("edge_readout", {"input": "edge.e", "reduce": "mean"}),
    ("edge_readout", {"input": "edge.e", "reduce": "max"}),
]
CONFIG_IDS = [f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)]


def _pair(name: str, params: dict):
    load_builtin_blocks()
    cls = BLOCKS[name]
    torch.manual_seed(0)
    ours = cls.build(params, FIELDS).double()
    theirs = cls.build({**params, "lowering": "dgl"}, FIELDS).double()
    theirs.load_state_dict(ours.state_dict())  # the same parameters: lowering changes no state
    for m in list(ours.modules()) + list(theirs.modules()):  # batch norm with non-trivial running stats
        if isinstance(m, torch.nn.BatchNorm1d):
            gen = torch.Generator().manual_seed(5)
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return ours, theirs


def _close(a, b, what: str) -> None:
    assert a.shape == b.shape, what
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    assert diff <= TOL, f"{what}: max abs diff {diff:.3e} > {TOL:.1e}"


@pytest.mark.parametrize("name, params", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("case, g", CASES, ids=IDS)
def test_dgl_lowering_equals_own_lowering(case, g, name, params):
    ours, theirs = _pair(name, params)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    inputs = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in g.fields.items()}
    inputs2 = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in g.fields.items()}
    out, out2 = ours(g, dict(inputs)), theirs(g, dict(inputs2))
    assert sorted(out) == sorted(out2)
    loss, loss2 = 0, 0
    for k in out:
        _close(out[k], out2[k], f"output {k}")
        w = torch.randn(out[k].shape, dtype=DT, generator=torch.Generator().manual_seed(1))
        loss, loss2 = loss + (out[k] * w).sum(), loss2 + (out2[k] * w).sum()
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        return
    loss.backward()
    loss2.backward()
    for k in inputs:
        if inputs[k].grad is not None or inputs2[k].grad is not None:
            a = inputs[k].grad if inputs[k].grad is not None else torch.zeros_like(inputs[k])
            b = inputs2[k].grad if inputs2[k].grad is not None else torch.zeros_like(inputs2[k])
            _close(a, b, f"grad of input {k}")
    for (pn, p1), (_, p2) in zip(ours.named_parameters(), theirs.named_parameters()):
        a = p1.grad if p1.grad is not None else torch.zeros_like(p1)
        b = p2.grad if p2.grad is not None else torch.zeros_like(p2)
        _close(a, b, f"grad of {pn}")


def test_every_block_with_a_dgl_lowering_is_tested_here():
    assert sorted({n for n, _ in CONFIGS}) == dgl_blocks()


def test_lowering_dgl_on_a_block_without_one_names_those_that_have_one():
    load_builtin_blocks()
    names = ", ".join(f"`{n}`" for n in dgl_blocks())
    with pytest.raises(InferenceError, match=r"block `transformer` has no DGL lowering .*the blocks with one are "
                                             + names.replace("`", "`")):
        BLOCKS["transformer"].build({"out_dim": 4, "lowering": "dgl"}, {"node.h": D})
    text = """
graphdl: 1
inputs: {node.h: 4, node.pos: 1o}
graph: {kind: radius, cutoff: 2.0}
model:
  layers:
    - {type: gcn, out_dim: 4, lowering: dgl}
    - {type: tfn, irreps_out: 4x0e, lowering: dgl}
"""
    with pytest.raises(SpecError, match=r"<string>:8:\d+: model.layers\[1\].lowering: block `tfn` has no DGL "
                                        r"lowering \(`lowering: dgl`\); the blocks with one are `edge_readout`, `egnn`"):
        plan_spec(parse_spec_text(text))


def test_whole_model_lowering_applies_where_a_block_has_one_and_describe_shows_it():
    text = """
graphdl: 1
inputs: {node.h: 4}
model:
  layers:
    - {type: linear, out_dim: 8}
    - {type: gcn, out_dim: 8}
    - {type: sage, out_dim: 8, lowering: auto}
    - {type: readout, reduce: mean, output: graph.y}
"""
    model = compile_spec(parse_spec_text(text), lowering="dgl")
    lowerings = [getattr(s.params, "lowering", None) for s in model.plan.steps]
    assert lowerings == [None, "dgl", "auto", "dgl"]  # a layer's own `lowering: auto` is kept
    table = model.describe()
    assert "dgl: copy_u_sum between D^-1/2 node scalings" in table and "dgl: segment_reduce" in table and "spmm mean (CSR)" in table
    notes = [describe_lowering(b) for b in model.blocks]
    assert notes[1].startswith("dgl:") and not notes[2].startswith("dgl:")
    auto = compile_spec(parse_spec_text(text))
    auto.load_state_dict(model.state_dict())  # one state dict for both lowerings
    g = collate([random_graph(n, 3 * n, 4, 2, seed=n, dtype=torch.float32) for n in (5, 7)])
    a, b = auto(g)["graph.y"], model(g)["graph.y"]
    # float32 here: round-off ≤ ~60 roundings of eps32 · |y| (≤ 3) through 3 layers of width 8
    assert (a - b).abs().max() <= 60 * torch.finfo(torch.float32).eps * 3
    with pytest.raises(SpecError, match="none of its blocks has a DGL lowering; the blocks with one are"):
        compile_spec(parse_spec_text("graphdl: 1\ninputs: {node.h: 4}\nmodel:\n  layers:\n"
                                     "    - {type: linear, out_dim: 2}\n"), lowering="dgl")
    with pytest.raises(SpecError, match="lowering must be `dgl` or `auto`"):
        compile_spec(parse_spec_text(text), lowering="pyg")


def test_dgl_lowering_refuses_a_device_dgl_cannot_use(monkeypatch):
    from graphdl.interop import dgl as interop

    g = random_graph(5, 10, D, 3, seed=1)
    dgl = load_dgl()

    def no_device(*a, **k):
        raise dgl.DGLError("Device API cuda is not enabled. Please install the cuda version of dgl.")

    monkeypatch.setattr(dgl, "graph", no_device)
    with pytest.raises(KernelUnavailableError, match=r"DGL cannot hold a graph on `cpu`.*use `lowering: auto`"):
        interop.dgl_graph(g)


def test_describe_cli_lowering_flag(capsys):
    from graphdl.cli import main

    assert main(["describe", "specs/gin.yaml", "--lowering", "dgl"]) == 0
    out = capsys.readouterr().out
    assert out.count("dgl: copy_u_sum") == 5 and "dgl: segment_reduce" in out


RUN_SPEC = """\
graphdl: 1
name: tiny-dgl
inputs: {node.h: 72, edge.e: 14}
model:
  layers:
    - {type: linear, input: node.h, out_dim: 16}
    - {type: gine, out_dim: 16, edge_input: edge.e, project_edges: true, norm: null, lowering: dgl}
    - {type: gat, out_dim: 8, heads: 2, lowering: dgl}
    - {type: readout, reduce: mean, input: node.h, output: graph.h}
    - {type: mlp, input: graph.h, output: graph.y, hidden: [16], out_dim: 1}
task: {type: regression, target: graph.y}
dataset:
  type: molecule_table
  path: mols.csv
  targets: [y]
  split: {type: random}
train: {epochs: 2, batch_size: 8, seed: 0}
"""


def test_graphdl_run_with_lowering_dgl_end_to_end(tmp_path):
    """`graphdl run --lowering dgl` on a spec two of whose blocks also say `lowering: dgl` (48 FreeSolv
    molecules, 2 epochs): it trains and writes its run; the resolved spec keeps the lowering of every
    block that has one; the checkpoint loads into the same spec on graphdl's own kernels and predicts
    the same numbers, and `graphdl predict` takes it with the spec that names no lowering."""
    import csv

    from graphdl.cli import main
    from graphdl.data.molecules import FreeSolv
    from graphdl.train import checkpoint

    ds = FreeSolv.load(FreeSolv.Params(type="freesolv"))
    with open(tmp_path / "mols.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("smiles", "y"))
        w.writerows((s, float(g["graph.y"][0, 0])) for s, g in list(zip(ds.meta["smiles"], ds.graphs))[:48])
    (tmp_path / "spec.yaml").write_text(RUN_SPEC)
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "spec.yaml"), "--out", str(out), "--quiet", "--lowering", "dgl"]) == 0
    resolved = yaml.safe_load((out / "spec.yaml").read_text())
    assert [layer.get("lowering") for layer in resolved["model"]["layers"]] == [None, "dgl", "dgl", "dgl", None]
    metrics = yaml.safe_load((out / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2
    ck = checkpoint.load(out / "best.pt")
    dgl_model = compile_spec(parse_spec_text(RUN_SPEC), lowering="dgl")
    auto_text = RUN_SPEC.replace(", lowering: dgl", "")
    auto_model = compile_spec(parse_spec_text(auto_text))
    for m in (dgl_model, auto_model):
        m.load_state_dict(ck["model"])
        m.eval()
    batch = collate(ds.graphs[:16])
    with torch.no_grad():
        a, b = auto_model(batch)["graph.y"], dgl_model(batch)["graph.y"]
    # float32, 5 layers of width <= 16, sums of <= 6 neighbours: <= ~100 roundings of eps32 * max|y|
    assert (a - b).abs().max() <= 100 * torch.finfo(torch.float32).eps * a.abs().max()
    (tmp_path / "auto.yaml").write_text(auto_text)
    assert main(["predict", str(tmp_path / "auto.yaml"), "--checkpoint", str(out / "best.pt"),
                 "--smiles", "CCO", "--out", str(tmp_path / "pred.csv")]) == 0
    assert (tmp_path / "pred.csv").read_text().splitlines()[1].startswith("CCO,")
