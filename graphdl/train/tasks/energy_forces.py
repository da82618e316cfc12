"""The ``energy_forces`` task: fit a potential-energy model to energies and forces at once.

The model returns a graph-level energy ``Ê`` and per-atom forces ``F̂`` (in practice
``F̂ = −∂Ê/∂x`` from ``model.forces: autograd``, so the fitted force field is conservative).
The loss, per batch of ``B`` graphs and ``N`` atoms (Schütt et al. 2017, SchNet; Batzner et
al. 2022, NequIP; Batatia et al. 2022, MACE)::

    L = w_E · (1/B) Σ_g ((Ê_g − E_g)/σ)²  +  w_F · (1/3N) Σ_i Σ_α ((F̂_iα − F_iα)/σ)²

with forces weighted heavily by default (``w_E = 1``, ``w_F = 100``: SchNetPack weighs
energies 0.01 against forces 0.99, MACE energies 1 against forces 100). A spec::

    model: {layers: [...], outputs: [graph.energy], forces: autograd}
    task:
      type: energy_forces
      energy: graph.energy        # dataset targets
      forces: node.forces
      energy_weight: 1.0
      force_weight: 100.0
      monitor: loss               # or force_mae, energy_mae, ...

``normalize: auto`` (NequIP's shift and scale): the model's raw energy is read as
``E = σ · out_E + μ · n_atoms`` and its forces as ``F = σ · out_F``, with ``σ`` the RMS of
the training force components and ``μ`` the mean training energy per atom. Both are
buffers (saved in checkpoints). Being affine in ``out_E`` with a position-independent
shift, this keeps ``F = −∂E/∂x`` exactly. Metrics are in the dataset's units.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat, field_validator, model_validator
from torch import Tensor

from graphdl.errors import InferenceError, did_you_mean
from graphdl.ops.segment import segment_sum
from graphdl.train.tasks.base import Task, TaskParams, register_task
from graphdl.types import VECTOR, Irreps, Scalar, split_key

METRICS = ("energy_mae", "energy_rmse", "force_mae", "force_rmse")
"""Energy MAE / RMSE over graphs; force MAE / RMSE over every force component (x, y, z of every atom)."""


def _check_metrics(v: list[str]) -> list[str]:
    for name in v:
        if name not in METRICS:
            raise ValueError(f"unknown energy_forces metric `{name}`{did_you_mean(name, list(METRICS))}; "
                             f"choose from {', '.join(METRICS)}")
    if not v:
        raise ValueError("name at least one metric, e.g. `metrics: [energy_mae, force_mae]`")
    return v


class EnergyForcesParams(TaskParams):
    """``energy`` / ``forces``: the dataset's target fields; ``energy_output`` /
    ``forces_output``: the model's outputs (default: its only graph-level scalar of width 1
    and its only ``1o`` node output); ``energy_weight`` / ``force_weight``: loss weights;
    ``normalize``: ``auto`` (shift and scale, see the module docstring) or ``none``;
    ``monitor``: ``loss`` (the weighted validation loss, default) or one of ``metrics``."""

    type: Literal["energy_forces"] = "energy_forces"
    energy: str = "graph.energy"
    forces: str = "node.forces"
    energy_output: str | None = None
    forces_output: str | None = None
    energy_weight: NonNegativeFloat = 1.0
    force_weight: NonNegativeFloat = 100.0
    normalize: Literal["auto", "none"] = "auto"
    metrics: list[str] = Field(default_factory=lambda: list(METRICS))
    monitor: str = "loss"

    _v_metrics = field_validator("metrics")(_check_metrics)

    @model_validator(mode="after")
    def _weights(self):
        if self.energy_weight == 0 and self.force_weight == 0:
            raise ValueError("`energy_weight` and `force_weight` are both 0: nothing would be trained")
        if self.monitor != "loss" and self.monitor not in self.metrics:
            raise ValueError(f"`monitor: {self.monitor}` is not one of `metrics` ({', '.join(self.metrics)}) "
                             f"nor `loss`")
        return self


def _is_energy(key: str, t) -> bool:
    return split_key(key)[0] == "graph" and isinstance(t, (Scalar, Irreps)) and t.invariant and t.dim == 1


def _is_force(key: str, t) -> bool:
    return split_key(key)[0] == "node" and t == VECTOR


def _pick(kind: str, want, given: str | None, fields: dict, where: str, fix: str) -> str:
    """The field of ``fields`` named ``given`` (checked by ``want``), or the only one that fits."""
    listed = ", ".join(f"`{k}: {t}`" for k, t in fields.items()) or "none"
    if given is not None:
        if given not in fields:
            raise InferenceError(f"the {kind} `{given}` is not {where} ({listed}); {fix}")
        if not want(given, fields[given]):
            raise InferenceError(f"the {kind} `{given}` has the wrong type ({fields[given]}); {fix}")
        return given
    cands = [k for k, t in fields.items() if want(k, t)]
    if len(cands) != 1:
        found = "none" if not cands else ", ".join(f"`{k}`" for k in cands)
        raise InferenceError(f"cannot pick the {kind} among {where} ({listed}; fitting: {found}); {fix}")
    return cands[0]


@register_task("energy_forces")
class EnergyForces(Task):
    """Energies (graph level, one value) and forces (node level, ``1o``) fitted together.

    Shapes: ``out[energy_output]`` ``(B, 1)``, ``out[forces_output]`` ``(N, 3)``; targets
    the same. Metrics: ``energy_mae``, ``energy_rmse`` (over graphs), ``force_mae``,
    ``force_rmse`` (over the ``3N`` components). The predictions CSV has one row per graph:
    atoms, energy and its prediction, and that graph's force MAE and RMSE.
    """

    Params = EnergyForcesParams
    kind = "regression"
    grad_in_eval = True
    level = "graph"

    def bind(self, data_fields, outputs):
        p = self.p
        _pick("energy target", _is_energy, p.energy, data_fields, "a dataset field of one channel at graph level",
              "set `task.energy` to the dataset's energy field")
        _pick("forces target", _is_force, p.forces, data_fields, "a `1o` node field of the dataset",
              "set `task.forces` to the dataset's forces field")
        self.energy_key = _pick("energy output", _is_energy, p.energy_output, outputs,
                                "the model's graph-level scalar outputs of width 1",
                                "list the energy under `model.outputs` or name it with `task.energy_output`")
        self.forces_key = _pick("forces output", _is_force, p.forces_output, outputs, "the model's `1o` node outputs",
                                "add `forces: autograd` to the `model:` section (forces = −∂E/∂positions) or name "
                                "them with `task.forces_output`")
        self.columns = [split_key(p.energy)[1]]
        self.monitor = p.monitor
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("shift", torch.zeros(()))

    @property
    def monitor_higher(self) -> bool:
        return False  # the loss and every metric of this task are errors

    def fit(self, graphs):
        if self.p.normalize == "none" or not len(graphs):
            return
        f = torch.cat([g[self.p.forces].reshape(-1) for g in graphs]).to(torch.float64)
        e = torch.cat([g[self.p.energy].reshape(-1) for g in graphs]).to(torch.float64)
        n = torch.tensor([g.num_nodes for g in graphs], dtype=torch.float64)
        rms = f.pow(2).mean().sqrt()
        self.scale.fill_(float(rms) if torch.isfinite(rms) and rms > 0 else 1.0)
        self.shift.fill_(float(e.sum() / n.sum()))

    def rows(self, batch) -> int:
        return int(batch.num_graphs)

    def _physical(self, out, batch) -> tuple[Tensor, Tensor]:
        """Predicted energies ``(B,)`` and forces ``(N, 3)`` in the dataset's units."""
        e, f = out[self.energy_key].reshape(-1), out[self.forces_key]
        n_atoms = (batch.ptr[1:] - batch.ptr[:-1]).to(e.dtype)
        return e * self.scale + self.shift * n_atoms, f * self.scale

    def loss(self, out, batch):
        e, f = self._physical(out, batch)
        de = (e - batch[self.p.energy].reshape(-1).to(e.dtype)) / self.scale
        df = (f - batch[self.p.forces].to(f.dtype)) / self.scale
        return self.p.energy_weight * de.pow(2).mean() + self.p.force_weight * df.pow(2).mean()

    def collect(self, out, batch, ids):
        e, f = self._physical(out, batch)
        y = batch[self.p.energy].reshape(-1).to(e.dtype)
        df = (f - batch[self.p.forces].to(f.dtype)).detach()
        n = batch.num_graphs
        ptr = batch.ptr
        return {"index": ids, "energy": y.detach(), "energy_pred": e.detach(), "n_atoms": ptr[1:] - ptr[:-1],
                "force_abs": segment_sum(df.abs().sum(1, keepdim=True), batch.batch, n, ptr=ptr).reshape(-1),
                "force_sq": segment_sum(df.pow(2).sum(1, keepdim=True), batch.batch, n, ptr=ptr).reshape(-1)}

    def metrics(self, c):
        de = (c["energy_pred"] - c["energy"]).double()
        comps = 3 * c["n_atoms"].sum().double()
        values = {"energy_mae": de.abs().mean(), "energy_rmse": de.pow(2).mean().sqrt(),
                  "force_mae": c["force_abs"].double().sum() / comps,
                  "force_rmse": (c["force_sq"].double().sum() / comps).sqrt()}
        return {k: float(values[k]) for k in self.p.metrics}

    def table(self, c):
        name = self.columns[0]
        comps = 3 * c["n_atoms"].double()
        return {"index": c["index"].tolist(), "atoms": c["n_atoms"].tolist(),
                name: c["energy"].double().tolist(), f"{name}_pred": c["energy_pred"].double().tolist(),
                "force_mae": (c["force_abs"].double() / comps).tolist(),
                "force_rmse": (c["force_sq"].double() / comps).sqrt().tolist()}

    def transform(self, out, batch):
        """Energies in the dataset's units, ``(B, 1)`` (forces: ``self._physical``)."""
        return self._physical(out, batch)[0].reshape(-1, 1)

    def predictions(self, out, batch):
        e, f = self._physical(out, batch)
        rms = (segment_sum(f.detach().pow(2).sum(1, keepdim=True), batch.batch, batch.num_graphs, ptr=batch.ptr)
               .reshape(-1) / (3 * (batch.ptr[1:] - batch.ptr[:-1]))).sqrt()
        return {"index": torch.arange(batch.num_graphs, device=e.device), "atoms": batch.ptr[1:] - batch.ptr[:-1],
                f"{self.columns[0]}_pred": e.detach(), "force_rms_pred": rms}


__all__ = ["METRICS", "EnergyForces", "EnergyForcesParams"]
