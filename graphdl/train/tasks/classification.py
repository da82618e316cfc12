"""The ``classification`` task: binary, multi-label or multiclass, graph or node level."""

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
    _labels,
    _mask,
    _metric_names,
    _observed_mean,
    _row_ids,
    _rows,
    register_task,
)
from graphdl.types import Irreps, Scalar, split_key


class ClassificationParams(TaskParams):
    """``num_classes: 2``: binary (or multi-label, one logit per target column, loss bce);
    ``num_classes: C > 2``: one integer class per row, ``C`` logits, loss cross_entropy."""

    type: Literal["classification"] = "classification"
    target: str = "graph.y"
    output: str | None = None
    num_classes: int = Field(2, ge=2)
    metrics: list[str] = Field(default_factory=lambda: ["accuracy", "roc_auc"])
    monitor: str | None = None
    pos_weight: list[PositiveFloat] | None = None

    _v_metrics = field_validator("metrics")(_metric_names("classification"))


@register_task("classification")
class Classification(Task):
    """Binary / multi-label (sigmoid + BCE) or multiclass (softmax + cross-entropy) classification.

    Shapes: binary output ``(B, T)`` logits against ``(B, T)`` 0/1 targets; multiclass output
    ``(B, C)`` logits against ``(B, 1)`` class ids (node level: ``N`` rows instead of ``B``).
    """

    Params = ClassificationParams
    kind = "classification"

    def bind(self, data_fields, outputs):
        p = self.p
        self.out_key, out_t, tgt_t = _bind_fields(p, data_fields, outputs)
        if not isinstance(tgt_t, (Scalar, Irreps)) or not tgt_t.invariant:
            raise InferenceError(f"classification target `{p.target}` must be scalar, found {tgt_t}")
        self.level = split_key(p.target)[0]
        self.multiclass = p.num_classes > 2
        want = p.num_classes if self.multiclass else tgt_t.dim
        if self.multiclass and tgt_t.dim != 1:
            raise InferenceError(f"a {p.num_classes}-class task needs one class id per row in `{p.target}`, "
                                 f"which has {tgt_t.dim} columns")
        if out_t.dim != want:
            what = f"{p.num_classes} logits (one per class)" if self.multiclass else f"{want} logit(s) (one per target)"
            raise InferenceError(f"model output `{self.out_key}` has {out_t.dim} channels; the task needs {what}")
        names = self.target_names.get(p.target)
        base = split_key(p.target)[1]
        if names is None or len(names) != tgt_t.dim:
            names = [base] if tgt_t.dim == 1 else [f"{base}{i}" for i in range(tgt_t.dim)]
        self.columns = list(names)
        if p.pos_weight is not None and (self.multiclass or len(p.pos_weight) != tgt_t.dim):
            raise InferenceError(f"`pos_weight` needs one weight per binary target ({tgt_t.dim})")
        self.register_buffer("pos_weight", torch.tensor(p.pos_weight) if p.pos_weight else torch.ones(tgt_t.dim))
        self.monitor = p.monitor or p.metrics[0]
        if self.monitor != "loss" and self.monitor not in p.metrics:
            raise InferenceError(f"`task.monitor: {self.monitor}` is not one of `task.metrics` "
                                 f"({', '.join(p.metrics)}) nor `loss`")

    def rows(self, batch) -> int:
        mask = _mask(self, batch)
        if mask is not None:
            return int(mask.sum())
        return int(batch.num_graphs if self.level == "graph" else batch.num_nodes)

    def _pair(self, out, batch) -> tuple[Tensor, Tensor]:
        y = batch[self.p.target]
        n = y.size(0)
        pred, y = _rows(out[self.out_key], n), _rows(y, n)
        mask = _mask(self, batch)
        return (pred, y) if mask is None else (pred[mask], y[mask])

    def loss(self, out, batch):
        logits, y = self._pair(out, batch)
        observed = ~torch.isnan(y)  # NaN only where the dataset masks missing labels
        y = torch.nan_to_num(y)
        if self.multiclass:
            each = F.cross_entropy(logits, y[:, 0].long(), reduction="none")
            return _observed_mean(each, observed[:, 0])
        each = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), pos_weight=self.pos_weight,
                                                  reduction="none")
        return _observed_mean(each, observed)

    def collect(self, out, batch, ids):
        logits, y = self._pair(out, batch)
        ids = _row_ids(self.level, batch, ids, _mask(self, batch))
        return {"pred": logits.detach(), "target": y.detach().to(logits.dtype), **ids}

    def metrics(self, c):
        return M.compute(self.p.metrics, c["pred"], c["target"], None if self.multiclass else self.columns)

    def transform(self, out, batch):
        """Probabilities: ``(rows, C)`` softmax for C classes, ``(rows, T)`` sigmoids for binary targets."""
        n = batch.num_graphs if self.level == "graph" else batch.num_nodes
        logits = _rows(out[self.out_key], n)
        return logits.softmax(1) if self.multiclass else logits.sigmoid()

    def predictions(self, out, batch):
        n = batch.num_graphs if self.level == "graph" else batch.num_nodes
        logits = _rows(out[self.out_key], n).detach()
        cols: dict[str, Tensor] = _row_ids(self.level, batch, torch.arange(batch.num_graphs, device=logits.device))
        if self.multiclass:
            probs = logits.softmax(1)
            cols[f"{self.columns[0]}_pred"] = probs.argmax(1)
            cols.update({f"{self.columns[0]}_prob{k}": probs[:, k] for k in range(probs.size(1))})
        else:
            cols.update({f"{c}_prob": logits[:, j].sigmoid() for j, c in enumerate(self.columns)})
        return cols

    def table(self, c):
        cols: dict[str, list] = {"index": c["index"].tolist()}
        if "node" in c:
            cols["node"] = c["node"].tolist()
        logits = c["pred"].double()
        if self.multiclass:
            name = self.columns[0]
            probs = logits.softmax(1)
            cols[name] = _labels(c["target"][:, 0])
            cols[f"{name}_pred"] = probs.argmax(1).tolist()
            for k in range(probs.size(1)):
                cols[f"{name}_prob{k}"] = probs[:, k].tolist()
            return cols
        probs = logits.sigmoid()
        for j, name in enumerate(self.columns):
            cols[name] = _labels(c["target"][:, j])
            cols[f"{name}_prob"] = probs[:, j].tolist()
        return cols



__all__ = ["Classification", "ClassificationParams"]
