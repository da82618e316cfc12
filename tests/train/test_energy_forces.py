"""The `energy_forces` task: loss, metrics, normalisation, training, and `graphdl run` end to end."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("rdkit")

from graphdl.compile.compiler import build, compile_spec
from graphdl.data.graph import collate
from graphdl.spec.model import parse_spec_text
from graphdl.train.runner import make_task, prepare
from graphdl.train.tasks.energy_forces import EnergyForces, EnergyForcesParams
from graphdl.types import VECTOR, Scalar

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "mmff" / "egnn.yaml"
SCHNET = ROOT / "specs" / "mmff" / "schnet.yaml"
FIELDS = {"node.pos": VECTOR, "node.atom": Scalar(10), "node.forces": VECTOR, "graph.energy": Scalar(1)}
OUTPUTS = {"graph.energy": Scalar(1), "node.forces": VECTOR}


def tiny_spec(tmp_path: Path, base: Path = SPEC) -> Path:
    """An MMFF spec on 8 molecules x 2 conformers, narrower, a few epochs."""
    spec = yaml.safe_load(base.read_text())
    spec["dataset"] = {"type": "mmff_conformers", "max_molecules": 8, "n_conformers": 2, "progress": False,
                       "molecule_split": {"train": 0.5, "val": 0.25, "test": 0.25}, "split": {"type": "source"}}
    spec["train"].update({"epochs": 2, "batch_size": 4})
    if base == SPEC:
        spec["model"]["layers"][3].update({"repeat": 1, "hidden": 16})
    else:
        spec["model"]["layers"][1].update({"repeat": 1, "filters": 16})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private dataset cache (8 molecules generate in about a second)."""
    d = tmp_path_factory.mktemp("cache")
    old = os.environ.get("GRAPHDL_CACHE")
    os.environ["GRAPHDL_CACHE"] = str(d)
    yield d
    if old is None:
        del os.environ["GRAPHDL_CACHE"]
    else:
        os.environ["GRAPHDL_CACHE"] = old


def _batch(n_graphs=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    graphs = []
    from graphdl.data.graph import Graph

    for n in range(4, 4 + n_graphs):
        ei = torch.tensor([list(range(1, n)), [0] * (n - 1)])
        graphs.append(Graph(ei, n, {"node.pos": torch.randn(n, 3, generator=g, dtype=dtype),
                                    "node.atom": torch.eye(10, dtype=dtype)[:n],
                                    "node.forces": 10 * torch.randn(n, 3, generator=g, dtype=dtype),
                                    "graph.energy": 5 * torch.randn(1, 1, generator=g, dtype=dtype)}))
    return collate(graphs)


def test_loss_and_metrics_by_hand():
    b = _batch()
    task = EnergyForces(EnergyForcesParams(energy_weight=0.3, force_weight=7.0, normalize="none"), FIELDS, OUTPUTS)
    g = torch.Generator().manual_seed(1)
    out = {"graph.energy": torch.randn(3, 1, generator=g, dtype=torch.float64),
           "node.forces": torch.randn(b.num_nodes, 3, generator=g, dtype=torch.float64)}
    de = out["graph.energy"] - b["graph.energy"]
    df = out["node.forces"] - b["node.forces"]
    want = 0.3 * de.pow(2).mean() + 7.0 * df.pow(2).mean()
    # the same float64 means of ≤ 60 squares: ≤ 60·eps relative (measured 0); the metrics below likewise
    torch.testing.assert_close(task.loss(out, b), want, rtol=1e-12, atol=0)
    c = task.collect(out, b, torch.tensor([10, 11, 12]))
    m = task.metrics(c)
    assert m["energy_mae"] == pytest.approx(float(de.abs().mean()), rel=1e-12)
    assert m["energy_rmse"] == pytest.approx(float(de.pow(2).mean().sqrt()), rel=1e-12)
    assert m["force_mae"] == pytest.approx(float(df.abs().mean()), rel=1e-12)  # per component
    assert m["force_rmse"] == pytest.approx(float(df.pow(2).mean().sqrt()), rel=1e-12)
    t = task.table(c)
    assert t["index"] == [10, 11, 12] and t["atoms"] == [4, 5, 6]
    assert t["energy_pred"] == pytest.approx(out["graph.energy"].reshape(-1).tolist())
    assert t["force_mae"][1] == pytest.approx(float(df[4:9].abs().mean()))
    assert task.monitor == "loss" and task.monitor_higher is False and task.grad_in_eval


def test_normalisation_is_an_affine_map_of_the_energy():
    b = _batch()
    task = EnergyForces(EnergyForcesParams(), FIELDS, OUTPUTS)
    from graphdl.data.graph import Graph

    parts = []
    for i in range(3):
        lo, hi = int(b.ptr[i]), int(b.ptr[i + 1])
        parts.append(Graph(torch.zeros(2, 0, dtype=torch.long), hi - lo,
                           {"node.forces": b["node.forces"][lo:hi], "graph.energy": b["graph.energy"][i:i + 1]}))
    graphs = parts
    task.fit(graphs)
    # scale and shift are float32 buffers: ≤ eps32/2 relative (measured 7e-9); rel 1e-6 ≈ 8 eps32
    assert float(task.scale) == pytest.approx(float(b["node.forces"].pow(2).mean().sqrt()), rel=1e-6)
    assert float(task.shift) == pytest.approx(float(b["graph.energy"].sum() / b.num_nodes), rel=1e-6)
    out = {"graph.energy": torch.ones(3, 1, dtype=torch.float64), "node.forces": torch.ones(b.num_nodes, 3,
                                                                                             dtype=torch.float64)}
    e, f = task._physical(out, b)
    torch.testing.assert_close(e, task.scale.double() + task.shift.double() * torch.tensor([4., 5., 6.],
                                                                                          dtype=torch.float64))
    torch.testing.assert_close(f, task.scale.double() * torch.ones_like(f))


def test_bad_task_params():
    with pytest.raises(ValueError, match="unknown energy_forces metric `force_ma`; did you mean `force_mae`"):
        EnergyForcesParams(metrics=["force_ma"])
    with pytest.raises(ValueError, match="both 0"):
        EnergyForcesParams(energy_weight=0, force_weight=0)
    with pytest.raises(ValueError, match="`monitor: r2` is not one of"):
        EnergyForcesParams(monitor="r2")


def test_model_without_forces_is_told_to_declare_them():
    from graphdl.errors import InferenceError

    with pytest.raises(InferenceError, match=r"add `forces: autograd` to the `model:` section"):
        EnergyForces(EnergyForcesParams(), FIELDS, {"graph.energy": Scalar(1)})
    with pytest.raises(InferenceError, match=r"energy target `graph.y` is not a dataset field"):
        EnergyForces(EnergyForcesParams(energy="graph.y"), FIELDS, OUTPUTS)


def test_a_few_steps_reduce_the_loss(tmp_path, cache):
    exp = prepare(tiny_spec(tmp_path))
    ds = exp.data.load()
    task = make_task(exp, ds)
    graphs = [ds.graphs[i] for i in ds.splits["train"]][:8]
    task.fit(graphs)
    torch.manual_seed(0)
    model = build(exp.plan).train()
    b = collate(graphs)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss = task.loss(model(b), b)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(task.loss(model(b), b).detach()) < 0.7 * first


def test_force_loss_alone_trains_the_energy_model(tmp_path, cache):
    """energy_weight 0: every gradient comes through −∂E/∂x (create_graph while training)."""
    exp = prepare(tiny_spec(tmp_path))
    ds = exp.data.load()
    task = EnergyForces(EnergyForcesParams(energy_weight=0.0), ds.fields, exp.plan.outputs)
    b = collate([ds.graphs[i] for i in ds.splits["train"]][:4])
    model = build(exp.plan).train()
    task.loss(model(b), b).backward()
    out_bias = model.blocks[-2].mlp[2].bias  # the atomwise MLP's last bias (before the readout)
    # it shifts every energy equally: the forces do not see it
    assert out_bias.grad is None or float(out_bias.grad.abs().sum()) == 0.0
    grads = {n: p.grad for n, p in model.named_parameters() if p is not out_bias}
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads.values())


def test_graphdl_run_end_to_end(tmp_path, cache):
    from graphdl.cli import main

    spec = tiny_spec(tmp_path, SCHNET)
    out = tmp_path / "run"
    assert main(["run", str(spec), "--epochs", "1", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    test = m["final"]["test"]
    assert set(test) == {"loss", "energy_mae", "energy_rmse", "force_mae", "force_rmse"}
    assert all(math.isfinite(v) and v > 0 for v in test.values())
    assert m["task"]["type"] == "energy_forces"
    with open(out / "test_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["row", "smiles", "atoms", "energy", "energy_pred", "force_mae", "force_rmse"]
    assert len(rows) == m["split"]["sizes"]["test"]
    # the resolved spec keeps `forces` (long form) and runs again to the same numbers (SchNet here: an
    # egnn layer's own `residual` parameter collides with the step key of that name in resolved specs)
    resolved = yaml.safe_load((out / "spec.yaml").read_text())
    assert resolved["model"]["outputs"] == ["graph.energy"]
    assert resolved["model"]["forces"] == {"type": "autograd", "energy": "graph.energy", "positions": "node.pos",
                                           "output": "node.forces"}
    assert main(["run", str(out / "spec.yaml"), "--epochs", "1", "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["final"]["test"] == pytest.approx(test, rel=1e-6)
    # graphdl predict: one ETKDG conformer per SMILES (as the dataset makes them), energy per molecule
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(spec), "--checkpoint", str(out / "best.pt"), "--smiles", "CCO", "c1ccccc1O",
                 "--out", str(pred)]) == 0
    with open(pred) as f:
        rows = list(csv.DictReader(f))
    assert [r["smiles"] for r in rows] == ["CCO", "c1ccccc1O"] and [r["atoms"] for r in rows] == ["9", "13"]
    assert all(math.isfinite(float(r["energy_pred"])) and float(r["force_rms_pred"]) > 0 for r in rows)
    assert main(["predict", str(spec), "--checkpoint", str(out / "best.pt"), "--smiles", "C[Si](C)(C)C"]) == 2


@pytest.mark.parametrize("path", [SPEC, SCHNET])
def test_specs_compile_and_describe(path):
    m = compile_spec(path)
    assert m.output_fields == {"graph.energy": Scalar(1), "node.forces": VECTOR}
    assert "computed by autograd" in m.describe()
    spec = parse_spec_text(path.read_text(), str(path))
    assert spec.sections["task"].type == "energy_forces" and spec.sections["train"].num_threads == 1
