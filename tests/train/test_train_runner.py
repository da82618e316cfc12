"""graphdl run end to end on a tiny dataset: artefacts, determinism, overrides, bad specs."""

import csv
import io
import json
import os

import pytest
import torch

from graphdl.cli import main
from graphdl.errors import SpecError
from graphdl.train.progress import Progress
from graphdl.train.runner import run


def quiet():
    return Progress(io.StringIO(), bars=False)


def test_run_writes_every_artefact(tiny, tmp_path):
    out = tmp_path / "run"
    m = run(tiny(), out=str(out), progress=quiet())
    for name in ("spec.yaml", "metrics.json", "best.pt", "last.pt", "learning_curve.png", "test_predictions.csv",
                 "timing.json"):
        assert (out / name).exists(), name
    data = json.loads((out / "metrics.json").read_text())
    assert data == json.loads(json.dumps(m))
    # 48 rows, chemprop-style sizes: floor(0.8 n) / floor(0.9 n) - floor(0.8 n) / rest
    assert data["split"]["sizes"] == {"train": 38, "val": 5, "test": 5}
    assert data["seed"] == 0
    assert [e["epoch"] for e in data["epochs"]] == [1, 2, 3]
    assert set(data["final"]["test"]) == {"loss", "rmse", "mae", "r2"}
    rows = list(csv.DictReader(open(out / "test_predictions.csv")))
    assert len(rows) == 5 and set(rows[0]) == {"row", "smiles", "y", "y_pred"}
    # the CSV's predictions give back the reported test RMSE
    err = [(float(r["y_pred"]) - float(r["y"])) ** 2 for r in rows]
    # the CSV keeps 6 significant digits (%.6g): each residual is off by ≤ 5e-6·(|ŷ| + |y|), so the metric by
    # at most that; ×2
    tol = 1e-5 * max(abs(float(r["y_pred"])) + abs(float(r["y"])) for r in rows)
    assert (sum(err) / len(err)) ** 0.5 == pytest.approx(data["final"]["test"]["rmse"], abs=tol)


def test_two_runs_give_identical_metrics(tiny, tmp_path):
    spec = tiny()
    run(spec, out=str(tmp_path / "a"), progress=quiet())
    run(spec, out=str(tmp_path / "b"), progress=quiet())
    a = (tmp_path / "a" / "metrics.json").read_bytes()
    b = (tmp_path / "b" / "metrics.json").read_bytes()
    assert a == b
    c = run(spec, out=str(tmp_path / "c"), seed=1, progress=quiet())
    assert c["epochs"][-1]["train"]["loss"] != json.loads(a)["epochs"][-1]["train"]["loss"]


def test_summary_lines_when_not_a_terminal(tiny, tmp_path, capsys):
    assert main(["run", tiny(epochs=2), "--out", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().out.splitlines()
    epoch_lines = [l for l in lines if l.startswith("epoch ")]
    assert len(epoch_lines) == 2
    assert "train loss" in epoch_lines[0] and "val loss" in epoch_lines[0] and "rmse" in epoch_lines[0]
    assert not any("\r" in l for l in lines)


def test_progress_bar_on_a_terminal(tiny, tmp_path):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    run(tiny(epochs=1), out=str(tmp_path / "r"), progress=Progress(stream))
    text = stream.getvalue()
    assert "\r" in text and "batch" in text  # tqdm redraws the bar
    assert "epoch 1/1  train loss" in text     # and the summary line stays


def test_epochs_and_seed_overrides_are_recorded(tiny, tmp_path):
    out = tmp_path / "r"
    m = run(tiny(), out=str(out), epochs=2, seed=3, progress=quiet())
    assert len(m["epochs"]) == 2 and m["seed"] == 3
    text = (out / "spec.yaml").read_text()
    assert "epochs: 2" in text and "seed: 3" in text


def test_early_stopping_stops_and_keeps_best(tiny, tmp_path):
    # a learning rate too small to move val rmse by min_delta: epoch 1 stays best
    spec = tiny(epochs=40, replace={"schedule: {type: noam, warmup_epochs: 1}":
                "optimizer: {type: sgd, lr: 1.0e-9, momentum: 0.0}\n  early_stopping: {patience: 3, min_delta: 1.0}"})
    out = tmp_path / "r"
    m = run(spec, out=str(out), progress=quiet())
    # epoch 1 is best, and 3 more epochs without improvement stop the run
    assert m["stopped_early"] is True and m["best_epoch"] == 1 and len(m["epochs"]) == 4


def test_run_needs_task_and_dataset(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("graphdl: 1\ninputs: {node.h: 4}\nmodel:\n  layers: [{type: linear, out_dim: 1}]\n")
    with pytest.raises(SpecError, match=r"`graphdl run` needs a `task:` section"):
        run(str(p), out=str(tmp_path / "r"), progress=quiet())


def test_inputs_must_match_the_dataset(tiny, tmp_path):
    spec = tiny(replace={"node.h: 72": "node.h: 64"})
    with pytest.raises(SpecError, match=r"tiny.yaml:3:\d+: inputs.node.h: the spec declares `node.h: 64` but dataset "
                                         r"`molecule_table` gives `node.h: 72`"):
        run(spec, out=str(tmp_path / "r"), progress=quiet())


def test_task_output_mismatch_is_a_spec_error(tiny, tmp_path):
    spec = tiny(replace={"hidden: [16], out_dim: 1": "hidden: [16], out_dim: 2"})
    with pytest.raises(SpecError, match=r"task: model output `graph.y` \(2\) does not match task target `graph.y` \(1\)"):
        run(spec, out=str(tmp_path / "r"), progress=quiet())


def test_cli_reports_user_errors_in_one_line(tiny, tmp_path, capsys):
    spec = tiny(replace={"type: regression": "type: regresion"})
    assert main(["run", spec, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "task.type: unknown task type `regresion`; did you mean `regression`?" in err


def test_cuda_requested_without_cuda(tiny, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from graphdl.errors import KernelUnavailableError

    with pytest.raises(KernelUnavailableError, match="--device cuda"):
        run(tiny(), out=str(tmp_path / "r"), device="cuda", progress=quiet())


def test_resolved_spec_runs_again_identically(tiny, tmp_path):
    run(tiny(epochs=2), out=str(tmp_path / "a"), progress=quiet())
    run(str(tmp_path / "a" / "spec.yaml"), out=str(tmp_path / "b"), progress=quiet())
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    assert os.path.exists(tmp_path / "b" / "spec.yaml")


def test_eval_every_validates_on_every_kth_and_the_last_epoch(tiny, tmp_path):
    spec = tiny(epochs=5, replace={"  batch_size: 8\n": "  batch_size: 8\n  eval_every: 2\n"})
    m = run(spec, out=str(tmp_path / "r"), progress=quiet())
    seen = [e["epoch"] for e in m["epochs"] if e["val"]]
    assert seen == [2, 4, 5]
    assert m["best_epoch"] in seen
    assert all("rmse" in e["val"] for e in m["epochs"] if e["val"])
    assert (tmp_path / "r" / "learning_curve.png").stat().st_size > 0


def test_relative_paths_in_a_base_spec_resolve_next_to_the_base(tiny, tmp_path):
    """`extends:` from another folder: the base's `dataset.path: mols.csv` is the base's neighbour."""
    base = tiny(epochs=1)
    (tmp_path / "variants").mkdir()
    child = tmp_path / "variants" / "child.yaml"
    child.write_text("graphdl: 1\nextends: ../tiny.yaml\nname: child\ntrain: {batch_size: 4}\n")
    m = run(os.fspath(child), out=str(tmp_path / "c"), progress=quiet())
    assert m["spec"] == "child" and m["dataset"]["graphs"] == 48
    # a path the child itself writes is relative to the child
    (tmp_path / "variants" / "mols.csv").write_text((tmp_path / "mols.csv").read_text().splitlines()[0] + "\n"
                                                    + "\n".join((tmp_path / "mols.csv").read_text().splitlines()[1:21])
                                                    + "\n")
    child.write_text("graphdl: 1\nextends: ../tiny.yaml\nname: child\ndataset: {path: mols.csv}\n")
    m = run(os.fspath(child), out=str(tmp_path / "d"), progress=quiet())
    assert m["dataset"]["graphs"] == 20
    assert os.path.dirname(base) == os.fspath(tmp_path)
