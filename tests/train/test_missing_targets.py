"""Multi-task CSVs with missing labels: `missing_targets: mask` keeps the rows and leaves the
missing cells out of the loss, the normalisation and the metrics."""

import csv
import io
import math

import pytest
import torch
from conftest import write_csv

from graphdl.errors import DataError
from graphdl.train import metrics as M
from graphdl.train.progress import Progress
from graphdl.train.runner import run


def _rows(freesolv_rows, n=48):
    out = []
    for i, (s, y) in enumerate(freesolv_rows[:n]):
        a = "" if i % 3 == 0 else f"{y:.4f}"          # task a: every third label missing
        b = "NA" if i % 3 == 1 else f"{2 * y + 1:.4f}"  # task b: another third (spelled NA)
        out.append((s, a, b))
    return out


def _spec(tiny, mask: bool):
    replace = {"targets: [y]": "targets: [a, b]" + ("\n  missing_targets: mask" if mask else ""),
               "out_dim: 1": "out_dim: 2"}
    return tiny(epochs=2, replace=replace)


def test_missing_labels_are_refused_by_default_naming_the_option(tiny, tmp_path, freesolv_rows):
    spec = _spec(tiny, mask=False)
    write_csv(tmp_path / "mols.csv", _rows(freesolv_rows), header=("smiles", "a", "b"))
    with pytest.raises(DataError, match=r"row 0 \(line 2\): target `a` is ``, not a number.*missing_targets: mask"):
        run(spec, out=str(tmp_path / "r"), progress=Progress(io.StringIO(), bars=False))


def test_masked_labels_train_and_metrics_count_observed_cells_only(tiny, tmp_path, freesolv_rows):
    spec = _spec(tiny, mask=True)
    write_csv(tmp_path / "mols.csv", _rows(freesolv_rows), header=("smiles", "a", "b"))
    m = run(spec, out=str(tmp_path / "r"), progress=Progress(io.StringIO(), bars=False))
    assert m["dataset"]["graphs"] == 48
    test = m["final"]["test"]
    assert all(math.isfinite(e["train"]["loss"]) for e in m["epochs"])
    assert math.isfinite(test["loss"]) and math.isfinite(test["rmse/a"]) and math.isfinite(test["rmse/b"])
    # the reported per-task RMSE is the RMSE over the observed cells of the predictions CSV
    rows = list(csv.DictReader(open(tmp_path / "r" / "test_predictions.csv")))
    for t in ("a", "b"):
        pairs = [(float(r[f"{t}_pred"]), float(r[t])) for r in rows if r[t] != "nan"]
        assert 0 < len(pairs) <= len(rows)
        rmse = math.sqrt(sum((p - y) ** 2 for p, y in pairs) / len(pairs))
        # the CSV keeps 6 significant digits (%.6g): each residual is off by ≤ 5e-6·(|ŷ| + |y|), so the metric by
        # at most that; ×2
        assert rmse == pytest.approx(test[f"rmse/{t}"], abs=1e-5 * max(abs(p) + abs(y) for p, y in pairs))


def test_a_row_with_every_label_missing_is_invalid(tiny, tmp_path, freesolv_rows):
    spec = _spec(tiny, mask=True)
    rows = _rows(freesolv_rows)
    rows[5] = (rows[5][0], "", "")
    write_csv(tmp_path / "mols.csv", rows, header=("smiles", "a", "b"))
    with pytest.raises(DataError, match=r"row 5 \(line 7\): every target is missing"):
        run(spec, out=str(tmp_path / "r"), progress=Progress(io.StringIO(), bars=False))


def test_masked_regression_loss_and_gradient_ignore_missing_cells():
    from graphdl.train.tasks.base import _observed_mean

    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = torch.tensor([[0.0, float("nan")], [1.0, 1.0]])
    observed = ~torch.isnan(y)
    each = (pred - torch.nan_to_num(y)) ** 2
    loss = _observed_mean(each, observed)
    assert float(loss.detach()) == pytest.approx((1 + 4 + 9) / 3)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and float(pred.grad[0, 1]) == 0.0


def test_metrics_per_column_over_observed_rows():
    pred = torch.tensor([[1.0, 0.0], [2.0, 5.0], [3.0, 1.0]])
    target = torch.tensor([[1.0, float("nan")], [float("nan"), 3.0], [1.0, 1.0]])
    out = M.compute(["mae"], pred, target, ["a", "b"])
    assert out["mae/a"] == pytest.approx((0 + 2) / 2) and out["mae/b"] == pytest.approx((2 + 0) / 2)
    assert out["mae"] == pytest.approx(1.0)
    auc = M.compute(["roc_auc"], torch.tensor([[0.1], [0.9], [0.5]]), torch.tensor([[0.0], [1.0], [float("nan")]]))
    assert auc["roc_auc"] == 1.0
