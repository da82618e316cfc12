"""Every shipped spec trains on the smallest legal batch: one graph of one atom, no edges.

* every experiment spec (a ``task:`` and a ``dataset:`` section) takes one optimizer step on
  a batch holding one single-atom graph with its dataset's fields (molecules: methane from the
  dataset's own featurizer; mmff_conformers / nbody_charged: one point with their fields):
  loss, gradients, updated weights and the evaluation output all finite;
* every model-only spec does a training forward and backward on a one-node graph of its
  declared inputs;
* every model of ``specs/molecular/`` runs a whole epoch through the runner with
  ``batch_size: 1`` on single-atom molecules (``gine_freesolv.yaml`` once died in epoch 19
  of its default run: the last training batch was methane alone, in torch's batch norm);
* ``benchmarks/molecular_full_runs.py`` (the full-length runs) works, on a smoke setting.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from graphdl.compile.compiler import build, compile_spec
from graphdl.data.graph import Graph, collate
from graphdl.data.molecules import MoleculeDataset
from graphdl.train.optim import make_optimizer
from graphdl.train.runner import make_task_from_fields, prepare, run
from graphdl.types import Categorical, Scalar, Trajectory

ROOT = Path(__file__).resolve().parents[2]
ALL_SPECS = sorted(ROOT.glob("specs/**/*.yaml"))


def _sections(path: Path) -> set:
    return set(yaml.safe_load(path.read_text()) or {})


EXPERIMENTS = [p for p in ALL_SPECS if {"task", "dataset"} <= _sections(p)]
MODEL_ONLY = [p for p in ALL_SPECS if "task" not in _sections(p)]
MOLECULAR = sorted(ROOT.glob("specs/molecular/*.yaml"))


def _distinct_models(paths):
    """One spec per distinct ``model:`` section (the FreeSolv and Huuskonen specs share models)."""
    seen, out = set(), []
    for p in paths:
        key = yaml.safe_dump(yaml.safe_load(p.read_text())["model"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


MOLECULAR_MODELS = _distinct_models(MOLECULAR)
SINGLE_ATOMS = ["C", "N", "O", "F", "S", "Cl", "Br", "I", "P", "C"]  # each one heavy atom, no bonds


def _ids(paths):
    return [str(p.relative_to(ROOT / "specs")) for p in paths]


def test_the_spec_lists_are_not_empty():
    """The globs find the shipped specs (a moved folder must not turn the tests below into no-ops)."""
    assert len(EXPERIMENTS) >= 18 and len(MOLECULAR) >= 10 and len(MODEL_ONLY) >= 15 and len(MOLECULAR_MODELS) >= 5
    assert set(MOLECULAR) <= set(EXPERIMENTS)


def _random_fields(types: dict, gen: torch.Generator, edges: int = 0) -> dict:
    """One node, ``edges`` edges and one graph row of every field: standard normal values, class 0
    for class-index fields, and a slow straight path inside a unit box for position histories."""
    rows = {"node": 1, "edge": edges, "graph": 1}
    out = {}
    for k, t in types.items():
        n = rows[k.split(".")[0]]
        if isinstance(t, Categorical):
            out[k] = torch.zeros(n, dtype=torch.long)
        elif isinstance(t, Trajectory):
            steps = torch.arange(t.frames, dtype=torch.float32)[:, None]
            out[k] = (0.5 + 1e-3 * steps * torch.ones(t.size)).expand(n, t.frames, t.size).clone()
        else:
            out[k] = torch.randn((n,) + tuple(t.shape()), generator=gen)
    return out


def single_atom_graph(exp) -> tuple[Graph, dict]:
    """One single-atom graph carrying every field of the experiment's dataset, and the field types.

    Molecule datasets: methane through the dataset's featurizer, target 0. Others: the fields
    their loader module declares (``FIELDS``), one point with random finite values; a dataset
    type with neither must be added here."""
    cls, params = exp.data.cls, exp.data.params
    if issubclass(cls, MoleculeDataset):
        g = cls.featurize(params, "C")
        assert g.num_nodes == 1 and g.num_edges == 0
        width = len(cls.target_names(params))
        g.fields[params.target_field] = torch.zeros(1, width)
        return g, {**cls.input_fields(params), params.target_field: Scalar(width)}
    types = cls.fields(params)  # what the dataset type says it makes, without loading
    assert types is not None, f"dataset type `{cls.name}`: give it `fields(params)` or a builder in this test"
    gen = torch.Generator().manual_seed(0)
    return Graph(None, 1, _random_fields(types, gen)), dict(types)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_ids(EXPERIMENTS))
def test_experiment_spec_trains_a_step_on_one_single_atom_graph(path):
    exp = prepare(str(path))
    g, fields = single_atom_graph(exp)
    task = make_task_from_fields(exp, fields, {})
    task.check_model(dict(exp.spec.inputs))  # the runner's order of the task protocol
    examples = task.examples([g], [0], training=True)
    task.fit(examples)
    torch.manual_seed(0)
    model = build(exp.plan)
    task.prepare_model(model)
    opt = make_optimizer(exp.train.optimizer, model.parameters())
    batch = collate(examples[:1])
    model.train()
    task.train()
    loss = task.train_loss(model, batch)
    assert loss.dim() == 0 and torch.isfinite(loss), float(loss)
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads, "no parameter received a gradient"
    bad = [n for n, gr in grads.items() if not torch.isfinite(gr).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.isfinite(b).all() for b in model.buffers() if b.is_floating_point())
    model.eval()
    task.eval()
    with torch.enable_grad() if task.grad_in_eval else torch.no_grad():
        assert torch.isfinite(task.train_loss(model, batch))


@pytest.mark.parametrize("path", MODEL_ONLY, ids=_ids(MODEL_ONLY))
def test_model_spec_trains_on_one_node(path):
    model = compile_spec(str(path))
    gen = torch.Generator().manual_seed(0)
    g = collate([Graph(None, 1, _random_fields(model.input_fields, gen))])
    model.train()
    out = model(g)
    assert out and all(torch.isfinite(v).all() for v in out.values())
    sum(v.float().sum() for v in out.values()).backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"


@pytest.mark.parametrize("path", MOLECULAR_MODELS, ids=_ids(MOLECULAR_MODELS))
def test_molecular_spec_runs_an_epoch_of_single_atom_batches(path, tmp_path):
    """The runner with ``batch_size: 1`` over one-atom molecules: every training batch is one
    row for each batch norm (nodes, graphs) and has no edges."""
    (tmp_path / "atoms.csv").write_text("smiles,y\n" + "".join(f"{s},{i * 0.5 - 2}\n"
                                                              for i, s in enumerate(SINGLE_ATOMS)))
    spec = yaml.safe_load(path.read_text())
    spec["dataset"] = {"type": "molecule_table", "path": "atoms.csv", "targets": ["y"],
                       "split": {"type": "random", "fractions": [0.8, 0.1, 0.1]}}
    spec["train"].update(epochs=1, batch_size=1, eval_batch_size=1)
    spec["task"]["target"] = spec["task"].get("target", "graph.y")
    file = tmp_path / path.name
    file.write_text(yaml.safe_dump(spec))
    metrics = run(str(file), out=str(tmp_path / "run"))
    assert metrics["split"]["sizes"]["train"] == 8
    assert math.isfinite(metrics["epochs"][0]["train"]["loss"])
    assert math.isfinite(metrics["final"]["test"]["rmse"])


def test_full_runs_script_smoke(tmp_path):
    """benchmarks/molecular_full_runs.py on one spec, 1 epoch, 40 molecules: one ok row."""
    out = tmp_path / "runs"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "molecular_full_runs.py"),
                           "--specs", str(ROOT / "specs" / "molecular" / "gine_freesolv.yaml"),
                           "--epochs", "1", "--limit", "40", "--out", str(out)],
                          check=False, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| specs/molecular/gine_freesolv.yaml | 1 | 1 |" in proc.stdout
    res = json.loads((out / "results.json").read_text())
    (row,) = res["runs"]
    assert row["status"] == "ok" and row["epochs"] == 1 and row["best_epoch"] == 1
    assert math.isfinite(row["test_rmse"]) and math.isfinite(row["test_mae"])
    assert (out / "gine_freesolv" / "metrics.json").exists()
