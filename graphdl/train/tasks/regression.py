"""The ``regression`` task: one target field (any number of columns), graph or node level."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, field_validator
from torch import Tensor

from graphdl.errors import InferenceError
from graphdl.train import metrics as M
from graphdl.train.tasks.base import (
    Task,
    TaskParams,
    _bind_fields,
    _mask,
    _metric_names,
    _observed_mean,
    _row_ids,
    _rows,
    register_task,
)
from graphdl.types import split_key


class RegressionParams(TaskParams):
    """``target``: dataset field; ``output``: model output (default: the only one);
    ``loss``: mse | mae | huber | smooth_l1; ``normalize``: standardise targets with the
    training set's mean and std (``auto``: for invariant targets; never for vectors)."""

    type: Literal["regression"] = "regression"
    target: str = "graph.y"
    output: str | None = None
    loss: Literal["mse", "mae", "huber", "smooth_l1"] = "mse"
    huber_delta: PositiveFloat = 1.0
    metrics: list[str] = Field(default_factory=lambda: ["rmse", "mae", "r2"])
    monitor: str | None = None
    normalize: Literal["auto", "standard", "none"] = "auto"

    _v_metrics = field_validator("metrics")(_metric_names("regression"))


@register_task("regression")
class Regression(Task):
    """Regression of one target field (``T`` columns) at graph or node level.

    With normalisation the model learns ``z = (y − μ) / σ`` (μ, σ per column, from the
    training split) and predictions are ``ŷ = out · σ + μ``; metrics are in target units.

    Shapes: output and target ``(B, T)`` (graph level) or ``(N, T)`` (node level); a vector
    target (``1o``) is ``(N, 3)`` and is never normalised (that would break rotations).
    """

    Params = RegressionParams
    kind = "regression"

    def bind(self, data_fields, outputs):
        p = self.p
        self.out_key, out_t, tgt_t = _bind_fields(p, data_fields, outputs)
        if out_t.dim != tgt_t.dim or (not tgt_t.invariant and out_t != tgt_t):
            raise InferenceError(f"model output `{self.out_key}` ({out_t}) does not match task target "
                                 f"`{p.target}` ({tgt_t}); make the last layer write {tgt_t}")
        self.level = split_key(p.target)[0]
        norm = p.normalize
        if norm == "auto":
            norm = "standard" if tgt_t.invariant else "none"
        if norm == "standard" and not tgt_t.invariant:
            raise InferenceError(f"`normalize: standard` would shift the components of the {tgt_t} target "
                                 f"`{p.target}` and break rotation equivariance; use `normalize: none`")
        self.normalize = norm
        dim = tgt_t.dim
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        names = self.target_names.get(p.target)
        if names is None or len(names) != dim:
            base = split_key(p.target)[1]
            names = [base] if dim == 1 else [f"{base}{i}" for i in range(dim)]
        self.columns = list(names)
        self.monitor = p.monitor or p.metrics[0]
        if self.monitor != "loss" and self.monitor not in p.metrics:
            raise InferenceError(f"`task.monitor: {self.monitor}` is not one of `task.metrics` "
                                 f"({', '.join(p.metrics)}) nor `loss`")

    def rows(self, batch) -> int:
        mask = _mask(self, batch)
        if mask is not None:
            return int(mask.sum())
        return int(batch.num_graphs if self.level == "graph" else batch.num_nodes)

    def fit(self, graphs):
        if self.normalize != "standard" or not len(graphs):
            return
        ys = [g[self.p.target].reshape(-1, self.mean.numel()) for g in graphs]
        if self.row_mask is not None:
            ys = [y[g[self.row_mask].reshape(-1).bool()] for y, g in zip(ys, graphs)]
        y = torch.cat(ys).to(torch.float64)
        mean = torch.nanmean(y, 0)  # missing targets (NaN, `missing_targets: mask`) do not count
        std = torch.nanmean((y - mean) ** 2, 0).sqrt()
        std = torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std))
        self.mean.copy_(torch.nan_to_num(mean).to(self.mean.dtype))
        self.std.copy_(std.to(self.std.dtype))

    def _pair(self, out, batch) -> tuple[Tensor, Tensor]:
        y = batch[self.p.target]
        n = y.size(0)
        pred, y = _rows(out[self.out_key], n), _rows(y, n).to(out[self.out_key].dtype)
        mask = _mask(self, batch)
        return (pred, y) if mask is None else (pred[mask], y[mask])

    def loss(self, out, batch):
        pred, y = self._pair(out, batch)
        observed = ~torch.isnan(y)  # a target is NaN only where the dataset masks missing values
        z = torch.nan_to_num((y - self.mean) / self.std)
        if self.p.loss == "mse":
            each = F.mse_loss(pred, z, reduction="none")
        elif self.p.loss == "mae":
            each = F.l1_loss(pred, z, reduction="none")
        elif self.p.loss == "huber":
            each = F.huber_loss(pred, z, delta=self.p.huber_delta, reduction="none")
        else:
            each = F.smooth_l1_loss(pred, z, beta=self.p.huber_delta, reduction="none")
        return _observed_mean(each, observed)

    def collect(self, out, batch, ids):
        pred, y = self._pair(out, batch)
        ids = _row_ids(self.level, batch, ids, _mask(self, batch))
        return {"pred": (pred * self.std + self.mean).detach(), "target": y.detach(), **ids}

    def metrics(self, c):
        return M.compute(self.p.metrics, c["pred"], c["target"], self.columns)

    def transform(self, out, batch):
        """``out · σ + μ`` per target column: ``(B, T)`` or ``(N, T)``."""
        n = batch.num_graphs if self.level == "graph" else batch.num_nodes
        return _rows(out[self.out_key], n) * self.std + self.mean

    def predictions(self, out, batch):
        pred = self.transform(out, batch).detach()
        cols = _row_ids(self.level, batch, torch.arange(batch.num_graphs, device=pred.device))
        return {**cols, **{f"{c}_pred": pred[:, j] for j, c in enumerate(self.columns)}}

    def table(self, c):
        cols: dict[str, list] = {"index": c["index"].tolist()}
        if "node" in c:
            cols["node"] = c["node"].tolist()
        for j, name in enumerate(self.columns):
            cols[name] = c["target"][:, j].tolist()
            cols[f"{name}_pred"] = c["pred"][:, j].tolist()
        return cols



__all__ = ["Regression", "RegressionParams"]
