"""Tasks: what a model's outputs are trained against, and how they are scored.

A task binds one or more model output fields to target fields of the dataset and owns
everything in between: the loss, target normalisation (its statistics are buffers, so they
travel in checkpoints), the metrics and the rows of the predictions CSV. A spec names it::

    task:
      type: regression        # a registered task type
      target: graph.y         # dataset field holding the targets
      output: graph.y         # model output field (default: the model's only output)
      loss: mse
      metrics: [rmse, mae, r2]

Built in: ``regression`` and ``classification``, each at graph level (``graph.*`` fields,
one row per graph) or node level (``node.*`` fields, one row per node), with any number of
target columns. New kinds (energy + forces, trajectories...) register themselves::

    @register_task("energy_forces")
    class EnergyForces(Task):
        class Params(TaskParams): ...
        kind = "regression"                  # metric family its metric names come from
        grad_in_eval = True                  # evaluation must keep autograd on (forces)
        def bind(self, data_fields, outputs): ...
        def loss(self, out, batch): ...
        def collect(self, out, batch, ids): ...     # tensors to concatenate over a split
        def metrics(self, collected): ...
        def table(self, collected): ...             # columns of the predictions CSV

The runner only calls the methods of :class:`Task`; it never looks inside ``out``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator
from torch import Tensor, nn

from graphdl.errors import InferenceError, SpecError, did_you_mean
from graphdl.train import metrics as M
from graphdl.types import FieldType, Irreps, Scalar, split_key


class TaskParams(BaseModel):
    """Base of every task type's parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str


class Task(nn.Module):
    """Base class of task types (see the module docstring for the contract).

    Attributes set by :meth:`bind`: ``monitor`` (the validation metric that picks the best
    epoch and drives early stopping) and ``columns`` (names of the target columns).
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[TaskParams]] = TaskParams
    kind: ClassVar[str] = "regression"
    grad_in_eval: ClassVar[bool] = False

    def __init__(self, p: TaskParams, data_fields: Mapping[str, FieldType],
                 outputs: Mapping[str, FieldType], target_names: Mapping[str, list[str]] | None = None):
        super().__init__()
        self.p = p
        self.target_names = dict(target_names or {})
        self.monitor = "loss"
        self.columns: list[str] = []
        self.row_mask: str | None = None
        """Set by the runner for node-level splits: a boolean node field; only its rows count."""
        self.bind(dict(data_fields), dict(outputs))

    # ------------------------------------------------------------------ contract
    def bind(self, data_fields: dict[str, FieldType], outputs: dict[str, FieldType]) -> None:  # pragma: no cover
        """Check the dataset and model fields fit; raise :class:`InferenceError` if not."""
        raise NotImplementedError

    def fit(self, graphs: Sequence) -> None:
        """Statistics from the training graphs (target normalisation); default: none."""

    def loss(self, out: dict[str, Tensor], batch) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def collect(self, out: dict[str, Tensor], batch, ids: Tensor) -> dict[str, Tensor]:  # pragma: no cover
        """Detached tensors of one batch, concatenated over a split for :meth:`metrics`.

        ``ids`` ``(B,)`` is the dataset index of each graph of the batch.
        """
        raise NotImplementedError

    def metrics(self, collected: dict[str, Tensor]) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def table(self, collected: dict[str, Tensor]) -> dict[str, list]:  # pragma: no cover
        """Columns of the predictions CSV; must include ``index`` (dataset index of the graph)."""
        raise NotImplementedError

    def predictions(self, out: dict[str, Tensor], batch) -> dict[str, Tensor]:  # pragma: no cover
        """Prediction columns for inputs without targets (``graphdl predict``), one value per row."""
        raise NotImplementedError

    def rows(self, batch) -> int:
        """Rows this batch contributes to the loss (for averaging over an epoch)."""
        return int(batch.num_graphs)

    @property
    def monitor_higher(self) -> bool:
        return self.monitor != "loss" and M.METRICS[self.monitor].higher_is_better


TASKS: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator registering a task type under ``name`` (the spec's ``task.type``)."""

    def deco(cls: type[Task]) -> type[Task]:
        if name in TASKS and TASKS[name].__qualname__ != cls.__qualname__:
            raise ValueError(f"task type `{name}` is already registered by {TASKS[name].__module__}")
        cls.name = name
        TASKS[name] = cls
        return cls

    return deco


def task_type(name: Any, *, doc=None, path: tuple = ("task", "type")) -> type[Task]:
    if not isinstance(name, str) or name not in TASKS:
        msg = f"unknown task type `{name}`{did_you_mean(str(name), TASKS)}"
        if doc is not None:
            raise doc.error(path, msg)
        raise SpecError(msg, path=".".join(map(str, path)))
    return TASKS[name]


# --------------------------------------------------------------------------- helpers
def _metric_names(kind: str) -> Callable[[list[str]], list[str]]:
    def check(v: list[str]) -> list[str]:
        valid = [n for n, m in M.METRICS.items() if kind in m.kinds]
        for name in v:
            if name not in valid:
                raise ValueError(f"unknown {kind} metric `{name}`{did_you_mean(name, valid)}")
        if not v:
            raise ValueError(f"name at least one metric, e.g. `metrics: [{valid[0]}]`")
        return v

    return check


def _bind_fields(p, data_fields: dict[str, FieldType], outputs: dict[str, FieldType]) -> tuple[str, FieldType, FieldType]:
    """Resolve (output key, output type, target type) for a one-target task, with clear errors."""
    if p.target not in data_fields:
        have = ", ".join(f"`{k}`" for k in data_fields) or "none"
        raise InferenceError(f"task target `{p.target}` is not a field of the dataset (dataset fields: {have}); "
                             f"set `task.target`")
    out_key = p.output
    if out_key is None:
        if len(outputs) != 1:
            raise InferenceError(f"the model has {len(outputs)} outputs ({', '.join(outputs)}); name the one the "
                                 f"task reads with `task.output`")
        out_key = next(iter(outputs))
    if out_key not in outputs:
        raise InferenceError(f"task output `{out_key}` is not an output of the model (outputs: "
                             f"{', '.join(f'`{k}`' for k in outputs)}); list it under `model.outputs`")
    t_space, o_space = split_key(p.target)[0], split_key(out_key)[0]
    if t_space not in ("graph", "node"):
        raise InferenceError(f"task target `{p.target}` must be a graph or node field")
    if t_space != o_space:
        raise InferenceError(f"task target `{p.target}` is a {t_space} field but the model output `{out_key}` is a "
                             f"{o_space} field; add a readout (node -> graph) or pick a {t_space} output")
    return out_key, outputs[out_key], data_fields[p.target]


def _rows(x: Tensor, n: int) -> Tensor:
    return x.reshape(n, -1)


def _row_ids(level: str, batch, ids: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
    if level == "graph":
        return {"index": ids}
    node = torch.arange(batch.num_nodes, device=batch.batch.device) - batch.ptr[batch.batch]
    out = {"index": ids[batch.batch], "node": node}
    return out if mask is None else {k: v[mask] for k, v in out.items()}


def _observed_mean(elementwise: Tensor, observed: Tensor) -> Tensor:
    """Mean of ``elementwise`` over the ``observed`` entries (missing targets, see
    ``missing_targets: mask``), without a host sync; 0 when nothing in the batch is observed."""
    total = torch.where(observed, elementwise, torch.zeros_like(elementwise)).sum()
    return total / observed.sum().clamp_min(1).to(total.dtype)


def _labels(t: Tensor) -> list:
    """Class labels for the predictions CSV; a missing label (NaN) is an empty cell."""
    return [int(v) if v == v else "" for v in t.tolist()]


def _mask(task: Task, batch) -> Tensor | None:
    """The rows of this batch that count (node-level splits), or None for all."""
    if task.row_mask is None:
        return None
    return batch[task.row_mask].reshape(-1).bool()


# ------------------------------------------------------------------------ regression
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

    def predictions(self, out, batch):
        n = batch.num_graphs if self.level == "graph" else batch.num_nodes
        pred = (_rows(out[self.out_key], n) * self.std + self.mean).detach()
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


# -------------------------------------------------------------------- classification
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


__all__ = ["TASKS", "Classification", "Regression", "Task", "TaskParams", "register_task", "task_type"]

# task types defined in their own modules register on import (after the names above exist)
from graphdl.train import energy_forces as _energy_forces  # noqa: E402,F401
