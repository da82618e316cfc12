"""Evaluation metrics, computed once per epoch over every prediction of a split.

A metric takes ``pred`` and ``target`` as ``(n, T)`` tensors (``n`` rows: graphs or nodes,
``T`` targets) and returns one value per target, ``(T,)``; the runner reports the mean over
targets (and each target's value when there are several). Metrics are not part of the
training graph: they run under ``torch.no_grad`` on the concatenated predictions.

=========  ==========================================================  ===============
name       definition (per target column)                              better
=========  ==========================================================  ===============
mae        mean |ŷ − y|                                                lower
mse        mean (ŷ − y)²                                               lower
rmse       √mse                                                        lower
r2         1 − Σ(ŷ − y)² / Σ(y − ȳ)²  (coefficient of determination)   higher
accuracy   fraction of rows whose predicted class is the true class    higher
roc_auc    P(score of a random positive > score of a random negative)  higher
           (Mann–Whitney U / (n₊ n₋), ties count ½)
bits_per_  mean cross-entropy of the true class in bits, −log₂ p(y)    lower
token      (softmax over C logits; sigmoid per column for binary);
           a character-level language model's bits per character
=========  ==========================================================  ===============

For classification, ``pred`` holds logits: ``(n, T)`` for binary / multi-label tasks (one
logit per target) and ``(n, C)`` for a multiclass task with integer ``target`` ``(n, 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Metric:
    """A named metric: ``fn(pred, target) -> (T,)``, its direction and the task kinds it fits."""

    name: str
    fn: Callable[[Tensor, Tensor], Tensor]
    higher_is_better: bool
    kinds: tuple[str, ...]


METRICS: dict[str, Metric] = {}


def register_metric(name: str, higher_is_better: bool, kinds: tuple[str, ...]):
    """Decorator registering ``fn(pred, target) -> (T,)`` under ``name``."""

    def deco(fn):
        METRICS[name] = Metric(name, fn, higher_is_better, kinds)
        return fn

    return deco


# -------------------------------------------------------------------------- regression
@register_metric("mae", False, ("regression",))
def mae(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().mean(0)


@register_metric("mse", False, ("regression",))
def mse(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).pow(2).mean(0)


@register_metric("rmse", False, ("regression",))
def rmse(pred: Tensor, target: Tensor) -> Tensor:
    return mse(pred, target).sqrt()


@register_metric("r2", True, ("regression",))
def r2(pred: Tensor, target: Tensor) -> Tensor:
    ss_res = (pred - target).pow(2).sum(0)
    ss_tot = (target - target.mean(0)).pow(2).sum(0)
    # a constant target has no variance to explain: R² is undefined (NaN), not ±inf
    return torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp_min(torch.finfo(ss_tot.dtype).tiny),
                       torch.full_like(ss_tot, float("nan")))


# ---------------------------------------------------------------------- classification
def _classes(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(predicted class, true class) per row and column for binary or multiclass logits."""
    if target.size(1) == 1 and pred.size(1) > 1:  # multiclass: argmax over classes
        return pred.argmax(1, keepdim=True), target.long()
    return (pred > 0).long(), target.long()


@register_metric("accuracy", True, ("classification",))
def accuracy(pred: Tensor, target: Tensor) -> Tensor:
    p, t = _classes(pred, target)
    return (p == t).to(pred.dtype).mean(0)


def _binary_auc(score: Tensor, label: Tensor) -> Tensor:
    """ROC-AUC of one column via average ranks (ties share their mean rank)."""
    n = score.numel()
    pos = label.bool()
    n_pos = int(pos.sum())
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return score.new_tensor(float("nan"))
    order = torch.argsort(score, stable=True)
    sorted_scores = score[order]
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    avg_rank = ends - (counts.to(torch.float64) - 1) / 2  # 1-based mean rank of each tie group
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = avg_rank[inverse]
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2
    return (u / (n_pos * n_neg)).to(score.dtype)


@register_metric("roc_auc", True, ("classification",))
def roc_auc(pred: Tensor, target: Tensor) -> Tensor:
    pred, target = pred.detach().cpu(), target.detach().cpu()
    if target.size(1) == 1 and pred.size(1) > 1:  # multiclass: macro one-vs-rest
        t = target[:, 0].long()
        per_class = torch.stack([_binary_auc(pred[:, c], t == c) for c in range(pred.size(1))])
        return torch.nanmean(per_class).reshape(1)
    return torch.stack([_binary_auc(pred[:, j], target[:, j]) for j in range(pred.size(1))])


@register_metric("bits_per_token", False, ("classification",))
def bits_per_token(pred: Tensor, target: Tensor) -> Tensor:
    if target.size(1) == 1 and pred.size(1) > 1:  # multiclass: −log₂ softmax(pred)[y]
        nats = torch.nn.functional.cross_entropy(pred, target[:, 0].long())
        return (nats / math.log(2)).reshape(1)
    nats = torch.nn.functional.binary_cross_entropy_with_logits(pred, target, reduction="none").mean(0)
    return nats / math.log(2)


def _per_observed_column(fn, pred: Tensor, target: Tensor, missing: Tensor) -> Tensor:
    """``fn`` per target column over the rows where that column is observed (a column with no
    observed row gives NaN). One class-id column against C logits drops the rows without a label."""
    if target.size(1) == 1 and pred.size(1) > 1:
        keep = ~missing[:, 0]
        return fn(pred[keep], target[keep])
    per = []
    for j in range(target.size(1)):  # a loop over target columns, not over rows
        keep = ~missing[:, j]
        per.append(fn(pred[keep, j:j + 1], target[keep, j:j + 1]).reshape(-1) if bool(keep.any())
                   else pred.new_full((1,), float("nan")))
    return torch.cat(per)


def compute(names: list[str], pred: Tensor, target: Tensor, columns: list[str] | None = None) -> dict[str, float]:
    """Every metric in ``names`` as ``{name: mean over targets}``, plus ``{name/column: value}``
    per target column when there is more than one."""
    out: dict[str, float] = {}
    pred, target = pred.detach().double(), target.detach().double()
    missing = torch.isnan(target)  # only where the dataset masks missing targets
    for name in names:
        if bool(missing.any()):
            per = _per_observed_column(METRICS[name].fn, pred, target, missing)
        else:
            per = METRICS[name].fn(pred, target)
        out[name] = float(torch.nanmean(per)) if per.numel() else float("nan")
        if per.numel() > 1 and columns is not None and len(columns) == per.numel():
            for c, v in zip(columns, per.tolist()):
                out[f"{name}/{c}"] = float(v)
    return out


__all__ = ["METRICS", "Metric", "accuracy", "bits_per_token", "compute", "mae", "mse", "r2", "register_metric", "rmse", "roc_auc"]
