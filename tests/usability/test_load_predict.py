"""`graphdl.load(run).predict(...)`: a trained model used from Python, in the targets' units."""

from __future__ import annotations

import csv
import io
import math

import networkx as nx
import pytest
import torch
from rdkit import Chem

import graphdl
from graphdl.data.featurize import smiles_to_graph
from graphdl.errors import CheckpointError, DataError
from graphdl.train.progress import Progress
from graphdl.train.runner import run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, freesolv_rows_module):
    tmp = tmp_path_factory.mktemp("run")
    rows = freesolv_rows_module[:48]
    with open(tmp / "mols.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["smiles", "y"])
        w.writerows(rows)
    (tmp / "s.yaml").write_text("""\
graphdl: 1
name: tiny
inputs: {node.h: 72, edge.e: 14}
model:
  layers:
    - {type: dmpnn, hidden: 16, depth: 2}
    - {type: readout, reduce: sum, input: node.h, output: graph.h}
    - {type: mlp, input: graph.h, output: graph.y, hidden: [16], out_dim: 1}
task: {type: regression, target: graph.y}
dataset: {type: molecule_table, path: mols.csv, targets: [y]}
train: {epochs: 2, batch_size: 8, seed: 0}
""")
    run(str(tmp / "s.yaml"), out=str(tmp / "r"), progress=Progress(io.StringIO()))
    return tmp / "r"


@pytest.fixture(scope="module")
def freesolv_rows_module():
    from graphdl.data.molecules import FreeSolv

    ds = FreeSolv.load(FreeSolv.Params(type="freesolv"))
    return [(s, float(g["graph.y"][0, 0])) for s, g in zip(ds.meta["smiles"], ds.graphs)]


def test_predictions_match_the_runs_test_predictions(trained):
    m = graphdl.load(trained)
    assert m.columns == ["y"] and "tiny" in repr(m)
    with open(trained / "test_predictions.csv") as f:
        table = list(csv.DictReader(f))
    pred = m.predict([r["smiles"] for r in table])
    assert pred.shape == (len(table), 1)
    for r, p in zip(table, pred[:, 0].tolist()):
        # the CSV holds `%.6g` text: half a unit in the 6th significant digit
        assert abs(p - float(r["y_pred"])) <= 5e-6 * abs(float(r["y_pred"])) + 1e-12
    # de-normalised: the model's raw output is not what predict returns
    g = smiles_to_graph(table[0]["smiles"])
    raw = float(m.model(g)["graph.y"][0, 0])
    assert not math.isclose(raw, float(pred[0, 0]), rel_tol=1e-3)


def test_every_input_kind_gives_the_same_prediction(trained):
    m = graphdl.load(trained / "best.pt")
    smiles = "CC(=O)O"
    g = smiles_to_graph(smiles)
    G = nx.DiGraph()
    for i in range(g.num_nodes):
        G.add_node(i, h=g["node.h"][i])
    for (s, d), e in zip(g.edge_index.t().tolist(), g["edge.e"]):
        G.add_edge(s, d, e=e)
    out = m.predict([smiles, Chem.MolFromSmiles(smiles), g, G])
    assert out.shape == (4, 1)
    # same graph, same float32 model: identical up to the batch's summation order (4 copies in one batch)
    torch.testing.assert_close(out, out[:1].expand(4, 1), rtol=0, atol=1e-5 * float(out.abs().max()))
    torch.testing.assert_close(m.predict(smiles), out[:1], rtol=0, atol=1e-5 * float(out.abs().max()))


def test_bad_inputs_are_one_line(trained, tmp_path):
    m = graphdl.load(trained)
    with pytest.raises(DataError, match=r"row 1"):
        m.predict(["CCO", "C1CC"])
    with pytest.raises(DataError, match=r"input 0: cannot predict from a dict"):
        m.predict([{"smiles": "CCO"}])
    with pytest.raises(CheckpointError, match="holds no best.pt or last.pt"):
        graphdl.load(tmp_path)


def test_predict_cli_on_invalid_skip_keeps_every_row(trained, tmp_path, capsys):
    from graphdl.cli import main

    spec, ck = str(trained.parent / "s.yaml"), str(trained / "best.pt")
    out = tmp_path / "p.csv"
    assert main(["predict", spec, "--checkpoint", ck, "--smiles", "CCO", "C1CC", "c1ccccc1O",
                 "--on-invalid", "skip", "--out", str(out)]) == 0
    rows = list(csv.reader(open(out)))
    assert rows[0] == ["smiles", "y_pred", "error"]
    assert [r[0] for r in rows[1:]] == ["CCO", "C1CC", "c1ccccc1O"]
    assert rows[1][2] == "" and rows[3][2] == "" and float(rows[1][1]) == pytest.approx(
        float(graphdl.load(trained).predict("CCO")[0, 0]), rel=5e-6)  # `%.6g` text
    assert rows[2][1] == "" and "C1CC" in rows[2][2] and "row 1" in rows[2][2]
    # the default stays an error naming the row, and leaves the earlier file as it was
    before = out.read_bytes()
    assert main(["predict", spec, "--checkpoint", ck, "--smiles", "CCO", "C1CC", "--out", str(out)]) == 2
    assert "row 1" in capsys.readouterr().err and out.read_bytes() == before


def test_a_run_directory_explains_itself(trained):
    import json

    rec = json.loads((trained / "run.json").read_text())
    assert rec["versions"]["torch"] == torch.__version__ and rec["versions"]["graphdl"] == graphdl.__version__
    assert rec["split"]["sizes"] == {"train": 38, "val": 5, "test": 5}  # chemprop sizes: floor(0.8·48), floor(0.9·48) − 38
    assert rec["dataset"]["sha256"] and rec["best_epoch"] in (1, 2)
    assert set(rec["final"]["test"]) >= {"loss", "rmse", "mae", "r2"}
    assert rec["spec"].endswith("s.yaml")


def test_cpu_allocator_cache_is_applied_and_recorded(trained, tmp_path):
    """``train: {cpu_allocator: cache}`` sets glibc's allocator to keep large blocks (in a fresh
    process: the setting is process-wide), and run.json records the allocator each run had."""
    import json
    import subprocess
    import sys

    rec = json.loads((trained / "run.json").read_text())
    assert rec["machine"]["cpu_allocator"].startswith("glibc default")
    spec = (trained.parent / "s.yaml").read_text().replace("train: {epochs: 2,", "train: {epochs: 1, cpu_allocator: cache,")
    assert "cpu_allocator: cache" in spec
    (tmp_path / "s.yaml").write_text(spec)
    (tmp_path / "mols.csv").write_text((trained.parent / "mols.csv").read_text())
    proc = subprocess.run([sys.executable, "-m", "graphdl.cli", "run", "s.yaml", "--out", "r"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((tmp_path / "r" / "run.json").read_text())
    assert rec["machine"]["cpu_allocator"] == "glibc, large blocks kept for reuse (M_MMAP_MAX 0)"
