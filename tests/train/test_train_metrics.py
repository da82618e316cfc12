"""Metrics against values worked out by hand."""

import math

import pytest
import torch

from graphdl.train.metrics import METRICS, compute


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_regression_metrics_by_hand():
    pred, y = t([1.0], [2.0], [4.0]), t([1.0], [3.0], [2.0])
    out = compute(["mae", "mse", "rmse", "r2"], pred, y)
    assert out["mae"] == pytest.approx(1.0)              # (0 + 1 + 2) / 3
    assert out["mse"] == pytest.approx(5 / 3)            # (0 + 1 + 4) / 3
    assert out["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert out["r2"] == pytest.approx(1 - 5 / 2)         # ss_tot = (1-2)^2 + (3-2)^2 + 0 = 2


def test_multi_target_reports_mean_and_each_column():
    pred, y = t([0.0, 1.0], [0.0, 1.0]), t([1.0, 1.0], [1.0, 3.0])
    out = compute(["mae"], pred, y, ["a", "b"])
    assert out == {"mae": pytest.approx(1.0), "mae/a": pytest.approx(1.0), "mae/b": pytest.approx(1.0)}


def test_r2_of_constant_target_is_nan():
    assert math.isnan(compute(["r2"], t([1.0], [2.0]), t([3.0], [3.0]))["r2"])


def test_roc_auc_with_ties_and_accuracy():
    # positives score 0.9, 0.4; negatives 0.4, 0.1: pairs (0.9>0.4), (0.9>0.1), (0.4=0.4: 1/2), (0.4>0.1)
    logits = torch.logit(t([0.9], [0.4], [0.4], [0.1]))
    y = t([1.0], [1.0], [0.0], [0.0])
    out = compute(["roc_auc", "accuracy"], logits, y)
    assert out["roc_auc"] == pytest.approx(3.5 / 4)
    assert out["accuracy"] == pytest.approx(3 / 4)       # 0.4 < 0.5 -> predicted 0


def test_multiclass_accuracy_and_auc():
    logits = t([3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [0.0, 5.0, 0.0])
    y = t([0.0], [1.0], [2.0], [2.0])
    out = compute(["accuracy", "roc_auc"], logits, y)
    assert out["accuracy"] == pytest.approx(3 / 4)
    # one-vs-rest: class 0 AUC 1, class 1 2/3 (2 beats 0, 0, loses to 5), class 2 3/4 (ties count 1/2)
    assert out["roc_auc"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_directions():
    assert not METRICS["rmse"].higher_is_better and METRICS["r2"].higher_is_better
    assert METRICS["roc_auc"].higher_is_better and "classification" in METRICS["accuracy"].kinds
