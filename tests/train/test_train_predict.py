"""Checkpoints (atomic, weights_only, refused across specs) and `graphdl predict`."""

import csv
import io
import os

import pytest
import torch

from graphdl.cli import main
from graphdl.errors import CheckpointError
from graphdl.train import checkpoint as C
from graphdl.train.predict import predict
from graphdl.train.progress import Progress
from graphdl.train.runner import run


@pytest.fixture
def trained(tiny, tmp_path):
    spec = tiny(epochs=2)
    out = tmp_path / "r"
    run(spec, out=str(out), progress=Progress(io.StringIO()))
    return spec, out


def test_checkpoint_contents_load_with_weights_only(trained):
    _, out = trained
    ck = torch.load(out / "best.pt", weights_only=True)
    assert ck["format"] == "graphdl.checkpoint" and ck["version"] == 1
    assert {"spec", "digest", "model_digest", "model", "task", "optimizer", "scheduler", "rng", "epoch"} <= set(ck)
    assert ck["digest"] == C.digest(ck["spec"])
    assert ck["spec"]["model"]["layers"][0]["type"] == "dmpnn"
    assert "mean" in ck["task"] and "std" in ck["task"]  # target normalisation travels with the weights


def test_predict_reproduces_test_predictions(trained, capsys):
    spec, out = trained
    want = {r["smiles"]: float(r["y_pred"]) for r in csv.DictReader(open(out / "test_predictions.csv"))}
    smiles = list(want)
    assert main(["predict", spec, "--checkpoint", str(out / "best.pt"), "--smiles", *smiles]) == 0
    got = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["smiles"] for r in got] == smiles
    for r in got:
        # both printed with %.6g: a float32 prediction from another batch can flip the 6th digit, ≤ 1e-5
        # relative
        assert float(r["y_pred"]) == pytest.approx(want[r["smiles"]], rel=1e-5, abs=1e-5)


def test_predict_from_csv_to_file(trained, tmp_path):
    spec, out = trained
    (tmp_path / "in.csv").write_text("name,smi\nethanol,CCO\nphenol,c1ccccc1O\n")
    assert main(["predict", spec, "--checkpoint", str(out / "last.pt"), "--csv", str(tmp_path / "in.csv"),
                 "--smiles-column", "smi", "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["smiles"] for r in rows] == ["CCO", "c1ccccc1O"] and all("y_pred" in r for r in rows)
    header, _ = predict(spec, str(out / "last.pt"), ["CCO"])
    assert header == ["smiles", "y_pred"]


def test_predict_errors(trained, tiny, capsys):
    spec, out = trained
    assert main(["predict", spec, "--checkpoint", str(out / "best.pt"), "--smiles", "CCO", "C1CC"]) == 2
    assert "invalid SMILES `C1CC` (row 1)" in capsys.readouterr().err
    other = tiny(name="other.yaml", replace={"depth: 2": "depth: 3"})
    with pytest.raises(CheckpointError, match=r"model\.layers\[0\]\.depth is 2 in the checkpoint but 3 in"):
        predict(other, str(out / "best.pt"), ["CCO"])
    # training settings may differ: the model is the same
    longer = tiny(epochs=9, name="longer.yaml")
    assert predict(longer, str(out / "best.pt"), ["CCO"])[1][0][0] == "CCO"


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*bad\.pt.*corrupt or was not written by graphdl"):
        C.load(bad)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=r"is not a graphdl checkpoint"):
        C.load(tmp_path / "foreign.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": "graphdl.checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        C.load(tmp_path / "evil.pt")  # weights_only=True refuses to unpickle code
    with pytest.raises(CheckpointError, match="does not exist"):
        C.load(tmp_path / "missing.pt")


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    C.save(path, {"epoch": 1})

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        C.save(path, {"epoch": 2})
    monkeypatch.undo()
    assert C.load(path)["epoch"] == 1                      # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # and no temporary file is left
