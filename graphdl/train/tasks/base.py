"""The task protocol: what a model is trained against, how it is scored and what a run keeps.

A task binds model output fields to target fields of the dataset and owns everything in
between: the training step's loss (and whatever the step does to its inputs first: noise,
masking), target normalisation (statistics are buffers, so they travel in checkpoints), the
evaluation of a split (a plain pass, or rollouts), its metrics and the artefacts it writes.
A spec names it::

    task:
      type: regression        # a registered task type
      target: graph.y         # dataset field holding the targets
      metrics: [rmse, mae, r2]

Each task type is one module of this package, registered with :func:`register_task`; the
runner (:mod:`graphdl.train.runner`) calls only the methods of :class:`Task` below and never
names a task. A new task adds a file here (or in a user module named by ``import:``)::

    @register_task("my_task")
    class MyTask(Task):
        class Params(TaskParams): ...
        def bind(self, data_fields, outputs): ...          # check fields, set monitor/columns
        def fit(self, graphs): ...                         # statistics of the training split
        def train_loss(self, model, batch): ...            # one step's loss (default: loss(model(batch)))
        def loss(self, out, batch): ...
        def evaluate(self, model, data): ...               # (metrics, collected) of a split
        def collect(self, out, batch, ids): ...            # used by the default evaluate
        def metrics(self, collected): ...
        def write_artefacts(self, path, collected, dataset): ...   # test-split artefacts

Built in: ``regression`` and ``classification`` (graph or node level, any number of target
columns), ``energy_forces`` (energies and conservative forces) and ``frame_denoising``
(backbone frames of protein chains from noisy ones, scored by FAPE, CA-RMSD and lDDT-Cα).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from graphdl.errors import InferenceError, SpecError, did_you_mean
from graphdl.train import metrics as M
from graphdl.types import FieldType, split_key


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

    def bind_meta(self, meta: dict) -> None:
        """The dataset's metadata (a simulator's time step, walls); default: unused."""

    def check_model(self, spec_inputs: Mapping[str, FieldType]) -> None:
        """Check the model's declared inputs beyond what :meth:`model_inputs` states; default: nothing."""

    def model_inputs(self, data_fields: Mapping[str, FieldType]) -> Mapping[str, FieldType]:
        """The fields (and types) the model is fed, which the spec's ``inputs:`` must match
        (default: the dataset's fields; a task that builds the model's inputs itself, such as
        ``simulate``, says which)."""
        return data_fields

    def prepare_model(self, model: nn.Module) -> None:
        """Give the model what :meth:`fit` found that it needs (e.g. data statistics for its
        standardising blocks, :meth:`graphdl.compile.GraphModel.set_statistics`); default: nothing."""

    def fit(self, graphs: Sequence) -> None:
        """Statistics from the training examples (target normalisation); default: none."""

    def examples(self, graphs: Sequence, index: Sequence[int], training: bool) -> list:
        """The examples a split's graphs give (default: the graphs themselves).

        A task may cut one dataset graph into several examples (windows of a trajectory) or
        drop some; :meth:`fit` and the loaders see what this returns.
        """
        return [graphs[i] for i in index]

    def train_loss(self, model: nn.Module, batch) -> Tensor:
        """The loss of one training step (default: :meth:`loss` of the model's outputs).

        Override to change the inputs first (noise, masking, teacher forcing) or to run the
        model several times; the runner back-propagates what this returns.
        """
        return self.loss(model(batch), batch)

    def loss(self, out: dict[str, Tensor], batch) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def evaluate(self, model: nn.Module, data) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Loss and metrics of a split, and what :meth:`write_artefacts` needs.

        ``data`` is the runner's :class:`~graphdl.train.runner.EvalSet` (``data.batches``:
        ``(batch, ids)`` pairs on the device, ``data.index``: dataset positions). The default
        runs the model once per batch (autograd on only if :attr:`grad_in_eval`) and gathers
        :meth:`collect`; tasks whose evaluation is a rollout override it.
        """
        model.eval()
        self.eval()
        if not data.index:
            return {}, {}
        parts: dict[str, list] = {}
        total = torch.zeros((), dtype=torch.float64)
        rows = 0
        ctx = torch.enable_grad() if self.grad_in_eval else torch.no_grad()
        with ctx:
            for batch, ids in data.batches:
                out = model(batch)
                n = self.rows(batch)
                total += self.loss(out, batch).detach().double().cpu() * n
                rows += n
                for k, v in self.collect(out, batch, ids).items():
                    parts.setdefault(k, []).append(v.detach().cpu())
        collected = {k: torch.cat(v) for k, v in parts.items()}
        return {"loss": float(total) / max(rows, 1), **self.metrics(collected)}, collected

    def collect(self, out: dict[str, Tensor], batch, ids: Tensor) -> dict[str, Tensor]:  # pragma: no cover
        """Detached tensors of one batch, concatenated over a split for :meth:`metrics`.

        ``ids`` ``(B,)`` is the dataset index of each graph of the batch.
        """
        raise NotImplementedError

    def metrics(self, collected: dict[str, Tensor]) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    artefacts: ClassVar[tuple[str, ...]] = ("test_predictions.csv",)
    """File names :meth:`write_artefacts` may write into the run directory."""

    def write_artefacts(self, path: Callable[[str], str], collected: dict[str, Tensor], dataset) -> None:
        """Write the test split's artefacts; ``path(name)`` gives where (default: the predictions CSV)."""
        if collected:
            from graphdl.train.predictions import write_predictions

            write_predictions(path("test_predictions.csv"), self.table(collected), dataset)

    def table(self, collected: dict[str, Tensor]) -> dict[str, list]:  # pragma: no cover
        """Columns of the predictions CSV; must include ``index`` (dataset index of the graph)."""
        raise NotImplementedError

    def transform(self, out: dict[str, Tensor], batch) -> Tensor:
        """The model's outputs as predictions in the targets' units, ``(rows, columns)``
        (what :meth:`graphdl.load(...).predict <graphdl.train.trained.TrainedModel.predict>` returns)."""
        raise NotImplementedError(f"task `{self.name}` does not define predictions of new inputs")

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


__all__ = ["TASKS", "Task", "TaskParams", "register_task", "task_type"]
