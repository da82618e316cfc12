"""``graphdl.load``: a trained run as a Python object that predicts in the targets' units.

::

    import graphdl
    fs = graphdl.load("runs/fs")                 # a run directory (best.pt) or a checkpoint file
    fs.predict(["CCO", "c1ccccc1O"])             # tensor (2, 1): kcal/mol, de-normalised
    fs.predict([rdkit_mol, nx_graph, graph])     # RDKit molecules, networkx graphs, graphdl graphs

The checkpoint holds the resolved spec (every default spelled out), the weights and the task's
state (target normalisation), so nothing else is needed: :func:`load` rebuilds the model from
the spec, loads both state dicts and keeps the task, whose :meth:`~graphdl.train.tasks.base.Task.transform`
turns raw outputs into predictions (regression: ``out · σ + μ``; classification: probabilities;
energy_forces: energies in the dataset's units).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from graphdl.data.graph import Graph, collate
from graphdl.errors import CheckpointError, DataError
from graphdl.types import parse_type, split_key


def _checkpoint_path(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("best.pt", "last.pt"):
            if os.path.exists(os.path.join(path, name)):
                return os.path.join(path, name)
        raise CheckpointError(f"`{path}` holds no best.pt or last.pt; give a run directory of `graphdl run` or a "
                              f"checkpoint file")
    return path


class TrainedModel:
    """A compiled model with its trained weights and the task that reads its outputs.

    Attributes:
        model: the :class:`~graphdl.compile.compiler.GraphModel` (eval mode).
        task: the task with its fitted state (normalisation).
        spec: the resolved spec the run was trained from (a dict).
        columns: names of the predicted columns (target names).
    """

    def __init__(self, exp, model, task, spec: dict, checkpoint: str):
        self.exp, self.model, self.task, self.spec, self.checkpoint = exp, model, task, spec, checkpoint
        self.columns = list(task.columns)

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.parameters()), torch.zeros(())).device

    def to(self, device) -> TrainedModel:
        self.model.to(device)
        self.task.to(device)
        return self

    # ---------------------------------------------------------------- inputs
    def graph(self, item: Any, index: int = 0) -> Graph:
        """One input as a graph with the model's input fields (see :meth:`predict`)."""
        if isinstance(item, Graph):
            return item
        kind = type(item).__module__.split(".")[0]
        if isinstance(item, str) or kind == "rdkit":
            featurize = getattr(self.exp.data.cls, "featurize", None)
            if featurize is None:
                raise DataError(f"input {index}: the model was trained on dataset type `{self.exp.data.cls.name}`, "
                                f"which does not make graphs from molecules; pass graphdl graphs")
            if isinstance(item, str):
                return featurize(self.exp.data.params, item, row=index)
            from rdkit import Chem

            return featurize(self.exp.data.params, Chem.MolToSmiles(item), row=index)
        if kind == "networkx":
            from graphdl.data.convert import from_networkx

            inputs = self.model.input_fields
            node = {split_key(k)[1]: k for k in inputs if k.startswith("node.")}
            edge = {split_key(k)[1]: k for k in inputs if k.startswith("edge.")}
            graph = {split_key(k)[1]: k for k in inputs if k.startswith("graph.")}
            return from_networkx(item, node, edge, graph, dtype=self.model._float_dtype())
        raise DataError(f"input {index}: cannot predict from a {type(item).__name__}; give SMILES strings, RDKit "
                        f"molecules, networkx graphs (attributes named like the model's inputs: "
                        f"{', '.join(self.model.input_fields)}) or graphdl graphs")

    # ------------------------------------------------------------ prediction
    def predict(self, inputs: Sequence[Any] | Any, *, batch_size: int = 256) -> Tensor:
        """Predictions in the targets' units, one row per input (per node for node-level tasks).

        ``inputs``: a list of SMILES strings, RDKit molecules, networkx graphs or graphdl graphs
        (a single one is accepted too). Returns ``(rows, columns)``: de-normalised values for
        regression, probabilities for classification (``(rows, C)`` for C classes).

        Raises:
            DataError: an input that cannot be turned into a graph (invalid SMILES: its index).
        """
        if isinstance(inputs, (str, Graph)) or not isinstance(inputs, Sequence):
            inputs = [inputs]
        graphs = [self.graph(x, i) for i, x in enumerate(inputs)]
        dev = self.device
        outs = []
        self.model.eval()
        self.task.eval()
        ctx = torch.enable_grad() if self.task.grad_in_eval else torch.no_grad()
        with ctx:
            for start in range(0, len(graphs), batch_size):
                batch = collate(graphs[start:start + batch_size]).to(dev)
                outs.append(self.task.transform(self.model(batch), batch).detach())
        return torch.cat(outs) if outs else torch.zeros(0, len(self.columns))

    def __repr__(self) -> str:
        name = self.spec.get("name") or "?"
        return (f"TrainedModel(`{name}`, task {self.task.name} -> {', '.join(self.columns)}, "
                f"{sum(p.numel() for p in self.model.parameters()):,} parameters, from {self.checkpoint})")


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu", trust: bool | None = None) -> TrainedModel:
    """A trained model from a run directory (its ``best.pt``) or a checkpoint file.

    ``trust``: let the saved spec's ``import:`` run its modules (custom blocks; see
    :mod:`graphdl.spec.loader`). Raises :class:`CheckpointError` for a missing or foreign file.
    """
    from graphdl.compile.compiler import build
    from graphdl.spec.loader import trusted_imports
    from graphdl.train import checkpoint as C
    from graphdl.train.runner import make_task_from_fields, prepare

    ck_path = _checkpoint_path(path)
    ck = C.load(ck_path)
    spec = ck["spec"]
    if trust is None:
        exp = prepare(spec)
    else:
        with trusted_imports(trust):
            exp = prepare(spec)
    fields = {k: parse_type(v) for k, v in ck.get("data_fields", {}).items()}
    task = make_task_from_fields(exp, fields, ck.get("target_names") or {})
    model = build(exp.plan)
    model.load_state_dict(ck["model"])
    task.load_state_dict(ck["task"])
    out = TrainedModel(exp, model.eval(), task.eval(), spec, ck_path)
    return out.to(device)


__all__ = ["TrainedModel", "load"]
