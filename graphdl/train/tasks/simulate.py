"""The ``simulate`` task: train a learned particle simulator (GNS) on trajectories and score it by rollouts.

The dataset holds one graph per trajectory (``node.position`` ``trajectory(T, D)``,
``node.particle_type``; see :mod:`graphdl.data.particles`). The task

* cuts each training trajectory into windows of ``C + 2`` frames (``C + 1`` inputs and the
  next frame), every start, as the reference's ``split_trajectory``;
* standardises with statistics of the *training split* only: velocity and acceleration mean
  and std per axis with the training noise's variance added, ``σ_v² = std_v² + σ²`` (the
  reference's ``_combine_std``), and the step context's mean and std; they are buffers of the
  task (saved in every checkpoint) and are copied into the model's ``history_velocities`` /
  ``standardize`` blocks (``GraphModel.set_statistics``);
* per training step adds random-walk noise to the inputs (``noise_std`` σ on the newest
  velocity: 6.7e-4 in the reference code, 3e-4 in the paper's text), none on kinematic
  particles, and regresses the normalised acceleration of the noisy history with the
  next position shifted by the newest noise (:func:`graphdl.simulate.core.acceleration_target`);
  loss = squared error summed over axes, mean over non-kinematic particles (the reference's);
* evaluates by rollouts: validation rolls out ``val_rollout.steps`` (20) steps from
  ``val_rollout.starts`` start frames of each trajectory and monitors MSE₂₀ (the best
  checkpoint is the one with the lowest); the test split is rolled out over the whole
  trajectory. Metrics: ``one_step_mse``, ``mse5``, ``mse20``, ``mse_full`` (position MSE),
  ``ekin_mse`` / ``ekin_rel`` (kinetic energy), ``inside_box`` (fraction of predicted
  positions within the walls ± R), and the same for the baseline that moves every particle
  at constant velocity plus the mean acceleration (``baseline_*``).
"""

from __future__ import annotations

import json
import math
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt, model_validator
from torch import Tensor

from graphdl.data.graph import Graph
from graphdl.errors import DataError, InferenceError
from graphdl.simulate import core
from graphdl.train.tasks.base import Task, TaskParams, register_task
from graphdl.types import Categorical, FieldType, Irreps, Scalar, Trajectory, split_key

METRICS = ("one_step_mse", "mse5", "mse20", "mse_full", "ekin_mse", "ekin_rel", "inside_box")


class RolloutSpec(BaseModel):
    """Rollouts of a split: ``steps`` per rollout (``null``: to the end of the trajectory),
    ``starts`` start frames per trajectory spread evenly, ``one_step_windows`` windows per
    trajectory for the one-step MSE (``null``: every window)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: PositiveInt | None = 20
    starts: PositiveInt = 2
    one_step_windows: PositiveInt | None = 16


class SimulateParams(TaskParams):
    """Parameters of ``task: {type: simulate}`` (model fields, noise, rollouts)."""

    type: Literal["simulate"] = "simulate"
    position: str = "node.position"
    """Dataset field of the trajectories, ``trajectory(T, D)``."""
    particle_type: str | None = "node.particle_type"
    """Dataset (and model input) field of particle types, ``categorical(K)``; null: none."""
    context: str | None = None
    """Dataset (and model input) field of the global step context, if the model reads one."""
    history: str = "node.history"
    """Model input: the last ``C + 1`` positions, ``trajectory(C+1, D)``."""
    current: str = "node.pos"
    """Model input: the newest position, ``D`` channels (the radius graph's ``graph.positions``)."""
    output: str = "node.acc"
    """Model output: the normalised acceleration, ``D`` channels."""
    noise_std: NonNegativeFloat = 6.7e-4
    kinematic_types: list[int] | None = None
    """Particle types moved by the data (default: the dataset's ``kinematic_types``, DeepMind's [3])."""
    val_rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    test_rollout: RolloutSpec = Field(default_factory=lambda: RolloutSpec(steps=None, starts=1,
                                                                          one_step_windows=64))
    """The run's final test evaluation: full rollouts; the one-step MSE on 64 windows per
    trajectory (``graphdl rollout`` uses every window)."""
    monitor: Literal["mse20", "mse5", "mse_full", "one_step_mse", "loss"] = "mse20"
    metrics: list[Literal[METRICS]] = Field(default_factory=lambda: ["one_step_mse", "mse5", "mse20", "mse_full"])  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _horizon(self):
        need = {"mse20": 20, "mse5": 5}.get(self.monitor)
        steps = self.val_rollout.steps
        if need is not None and steps is not None and steps < need:
            raise ValueError(f"`monitor: {self.monitor}` needs validation rollouts of at least {need} steps, but "
                             f"`val_rollout.steps` is {steps}; raise it or monitor `mse_full`")
        return self


@register_task("simulate")
class Simulate(Task):
    """A learned simulator: see the module docstring. The model reads ``history`` and ``current``
    (and ``particle_type``, ``context``) and writes the normalised acceleration ``output``."""

    Params = SimulateParams
    kind = "simulate"
    artefacts = ("test_rollout.npz",)

    # ------------------------------------------------------------------ binding
    def bind(self, data_fields, outputs):
        p = self.p
        pos_t = data_fields.get(p.position)
        if not isinstance(pos_t, Trajectory):
            have = ", ".join(f"`{k}`: {v}" for k, v in data_fields.items()) or "none"
            raise InferenceError(f"simulate reads trajectories from `{p.position}`, which must be a "
                                 f"`trajectory(T, D)` node field of the dataset (dataset fields: {have})")
        self.dim = pos_t.size
        if p.particle_type is not None:
            tt = data_fields.get(p.particle_type)
            if not isinstance(tt, Categorical):
                raise InferenceError(f"simulate: particle types `{p.particle_type}` must be a categorical field of the "
                                     f"dataset, found {tt}; set `task.particle_type: null` for data without types")
        if p.context is not None and not isinstance(data_fields.get(p.context), Trajectory):
            raise InferenceError(f"simulate: `context: {p.context}` must be a per-frame graph field of the dataset "
                                 f"(`trajectory(T, k)`), found {data_fields.get(p.context)}")
        if p.output not in outputs:
            raise InferenceError(f"simulate reads the normalised acceleration from `{p.output}`, which is not an "
                                 f"output of the model (outputs: {', '.join(f'`{k}`' for k in outputs)}); set "
                                 f"`task.output`")
        out_t = outputs[p.output]
        if split_key(p.output)[0] != "node" or out_t.dim != self.dim or not isinstance(out_t, (Scalar, Irreps)):
            raise InferenceError(f"simulate: the model output `{p.output}` ({out_t}) must be a node field of {self.dim} "
                                 f"channels (one acceleration per particle and axis)")
        self.data_fields = dict(data_fields)
        self.fields = core.SimFields(p.history, p.current, p.particle_type, p.context, p.output)
        self.monitor = p.monitor
        self.columns = [f"x{i}" for i in range(self.dim)]
        d = self.dim
        for name in ("acc_mean", "vel_mean"):
            self.register_buffer(name, torch.zeros(d, dtype=torch.float64))
        for name in ("acc_std", "vel_std"):
            self.register_buffer(name, torch.ones(d, dtype=torch.float64))
        k = data_fields[p.context].size if p.context is not None else 1
        self.register_buffer("context_mean", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("context_std", torch.ones(k, dtype=torch.float64))
        self.frames: int | None = None  # C + 1, from the model's inputs
        self.dt, self.bounds, self.radius = 1.0, None, None
        self.kinematic = list(p.kinematic_types) if p.kinematic_types is not None else [3]
        self._train_traj: list[Tensor] = []

    def model_inputs(self, data_fields):
        """What each step feeds the model: ``history`` ``trajectory(C+1, D)`` (``C + 1`` from the
        spec's inputs, checked by the runner), ``current`` (``D``), types and context."""
        p = self.p
        out: dict[str, FieldType] = {p.current: Scalar(self.dim)}
        if self.frames is not None:
            out[p.history] = Trajectory(self.frames, self.dim)
        if p.particle_type is not None:
            out[p.particle_type] = data_fields[p.particle_type]
        if p.context is not None:
            out[p.context] = Scalar(data_fields[p.context].size)
        return out

    def check_model(self, spec_inputs: dict) -> None:
        """The model's declared ``history`` input fixes ``C + 1``; it must be ``trajectory(C+1, D)``."""
        t = spec_inputs.get(self.p.history)
        if not isinstance(t, Trajectory) or t.size != self.dim or t.frames < 3:
            raise InferenceError(f"simulate feeds the model the last C + 1 positions as `{self.p.history}`; declare it "
                                 f"under `inputs:` as `{self.p.history}: trajectory(6, {self.dim})` (C = 5 velocities, "
                                 f"as GNS; at least 3 frames), found {t}")
        self.frames = t.frames

    def bind_meta(self, meta: dict) -> None:
        """Time step, walls, radius and kinematic types from the dataset's metadata."""
        self.dt = float(meta.get("dt", 1.0) or 1.0)
        self.bounds = meta.get("bounds")
        self.radius = meta.get("default_connectivity_radius")
        if self.p.kinematic_types is None and "kinematic_types" in meta:
            self.kinematic = [int(k) for k in meta["kinematic_types"]]
        if any(meta.get("periodic") or []):
            raise DataError("the dataset has periodic boundaries (LagrangeBench's `periodic_boundary_conditions`); "
                            "the radius graph and wall features of `simulate` assume walls, so periodic data are not "
                            "supported yet")

    # ----------------------------------------------------------------- examples
    def _need_frames(self) -> int:
        if self.frames is None:
            raise InferenceError("simulate: the model's history length is unknown; call check_model(spec inputs)")
        return self.frames

    def examples(self, graphs, index, training):
        """Training: every window of ``C + 2`` frames of every trajectory (``node.window``); evaluation:
        the trajectories themselves (rolled out by :meth:`evaluate`)."""
        p = self.p
        if not training:
            # collated for evaluation: trajectories of a split are cut to its shortest one
            # (`graphdl rollout` rolls each out to its own end)
            out = [graphs[i] for i in index]
            lengths = {g[p.position].size(1) for g in out} if out else set()
            if len(lengths) > 1:
                t = min(lengths)
                out = [g.replace(**{p.position.replace(".", "__"): g[p.position][:, :t]},
                                 **({p.context.replace(".", "__"): g[p.context][:, :t]} if p.context else {}))
                       for g in out]
            return out
        c1 = self._need_frames()
        out = []
        self._train_traj = []
        for i in index:
            g = graphs[i]
            pos = g[p.position]  # (N, T, D)
            self._train_traj.append(pos)
            t_len = pos.size(1)
            for s in range(t_len - c1):
                fields = {"node.window": pos[:, s:s + c1 + 1]}
                if p.particle_type is not None:
                    fields[p.particle_type] = g[p.particle_type]
                if p.context is not None:
                    fields[p.context] = g[p.context][:, s + c1 - 1]
                out.append(Graph(None, g.num_nodes, fields, validate=False))
        if not out:
            raise DataError(f"the training trajectories are shorter than {c1 + 1} frames (C + 2); no training window")
        return out

    def fit(self, graphs) -> None:
        """Statistics of the training trajectories (those :meth:`examples` cut), noise variance added."""
        if not self._train_traj:
            raise DataError("simulate.fit needs the training trajectories; call examples(..., training=True) first")
        v_s = v_ss = a_s = a_ss = None
        nv = na = 0
        for pos in self._train_traj:
            x = pos.double()
            v = (x[:, 1:] - x[:, :-1]).reshape(-1, self.dim)
            a = (x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]).reshape(-1, self.dim)
            parts = (v.sum(0), (v * v).sum(0), a.sum(0), (a * a).sum(0))
            if v_s is None:
                v_s, v_ss, a_s, a_ss = parts
            else:
                v_s, v_ss, a_s, a_ss = v_s + parts[0], v_ss + parts[1], a_s + parts[2], a_ss + parts[3]
            nv, na = nv + v.size(0), na + a.size(0)
        s2 = self.p.noise_std ** 2
        vm, am = v_s / nv, a_s / na
        self.vel_mean.copy_(vm)
        self.vel_std.copy_(((v_ss / nv - vm * vm).clamp_min(0) + s2).sqrt())
        self.acc_mean.copy_(am)
        self.acc_std.copy_(((a_ss / na - am * am).clamp_min(0) + s2).sqrt())
        if not (self.acc_std > 0).all() or not (self.vel_std > 0).all():
            raise DataError("the training trajectories do not move (velocity or acceleration std 0) and noise_std is 0; "
                            "nothing to normalise by")
        if self.p.context is not None:
            ctx = torch.stack([g[self.p.context][0].double() for g in graphs])  # examples: (1, k) each -> (n, k)
            self.context_mean.copy_(ctx.mean(0))
            self.context_std.copy_(ctx.std(0, unbiased=False).clamp_min(1e-8))

    def prepare_model(self, model) -> None:
        """Copy the statistics into the model's standardising blocks."""
        stats = {"velocity": (self.vel_mean, self.vel_std), "acceleration": (self.acc_mean, self.acc_std),
                 "context": (self.context_mean, self.context_std)}
        need = model.statistics_needed()
        model.set_statistics({k: v for k, v in stats.items() if k in need})

    # ------------------------------------------------------------------ training
    def _kinematic_mask(self, types: Tensor | None, n: int, device) -> Tensor:
        if types is None or not self.kinematic:
            return torch.zeros(n, dtype=torch.bool, device=device)
        return torch.isin(types, torch.tensor(self.kinematic, dtype=types.dtype, device=device))

    def _acc(self) -> core.Normalizer:
        return core.Normalizer(self.acc_mean, self.acc_std)

    def train_loss(self, model, batch) -> Tensor:
        p = self.p
        w = batch["node.window"]
        hist, nxt = w[:, :-1], w[:, -1]
        types = batch[p.particle_type] if p.particle_type is not None else None
        moving = ~self._kinematic_mask(types, batch.num_nodes, w.device)
        noise = core.random_walk_noise(hist, p.noise_std) * moving[:, None, None].to(hist.dtype)
        ctx = batch[p.context] if p.context is not None else None
        g = core.model_graph(self.fields, hist + noise, types, batch.batch, batch.num_graphs, ctx)
        pred = model(g)[p.output]
        target = self._acc().normalize(core.acceleration_target(nxt, hist, noise))
        err = ((pred - target) ** 2).sum(-1) * moving.to(pred.dtype)
        return err.sum() / moving.sum().clamp_min(1).to(pred.dtype)

    def loss(self, out, batch):  # pragma: no cover - train_loss and evaluate replace it
        raise NotImplementedError("simulate computes its loss in train_loss")

    # ---------------------------------------------------------------- evaluation
    def _starts(self, t_len: int, steps: int, count: int) -> list[int]:
        c = self._need_frames() - 1
        last = t_len - 1 - steps
        if last < c:
            return []
        if count == 1:
            return [c]
        return sorted({round(c + (last - c) * i / (count - 1)) for i in range(count)})

    def evaluate(self, model, data):
        model.eval()
        self.eval()
        if not data.index:
            return {}, {}
        final = getattr(data, "split", "val") == "test"
        spec = self.p.test_rollout if final else self.p.val_rollout
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        collected: dict[str, list] = {}

        def add(name: str, values: Tensor) -> None:
            sums[name] = sums.get(name, 0.0) + float(values.double().sum())
            counts[name] = counts.get(name, 0) + values.numel()

        for batch, ids in data.batches:
            r_pred, r_base = self.rollout_batch(model, batch, spec)
            for r, prefix in ((r_pred, ""), (r_base, "baseline_")):
                for rr in r:
                    for k, v in core.rollout_metrics(rr, self.dt).items():
                        add(prefix + k, v)
                    if self.bounds is not None:
                        tol = float(self.radius or 0.0)
                        add(prefix + "inside_box", core.inside_box(rr.pred, self.bounds, tol).reshape(1))
            if final and r_pred:
                collected.setdefault("rollouts", []).append((ids.cpu(), r_pred[0]))
            for prefix, err in self.one_step_batch(model, batch, spec.one_step_windows).items():
                add(prefix + "one_step_mse", err)
        metrics = {k: sums[k] / max(counts[k], 1) for k in sums}
        metrics["loss"] = metrics.get("one_step_mse", math.nan)
        return metrics, collected

    def _batch_parts(self, batch):
        p = self.p
        pos = batch[p.position]
        types = batch[p.particle_type] if p.particle_type is not None else None
        ctx = batch[p.context] if p.context is not None else None  # (B, T, k)
        return pos, types, ctx, self._kinematic_mask(types, batch.num_nodes, pos.device)

    def rollout_batch(self, model, batch, spec: RolloutSpec) -> tuple[list[core.Rollout], list[core.Rollout]]:
        """Rollouts of the model and of the baseline for each start frame of ``spec`` (same starts for all graphs)."""
        pos, types, ctx, kin = self._batch_parts(batch)
        t_len = pos.size(1)
        c1 = self._need_frames()
        steps = spec.steps if spec.steps is not None else t_len - c1
        steps = min(steps, t_len - c1)
        out_m, out_b = [], []
        predict = core.model_predictor(model, self.fields)
        for t0 in self._starts(t_len, steps, spec.starts):
            t0s = torch.full((batch.num_graphs,), t0, dtype=torch.long, device=pos.device)
            args = (self._acc(), pos, batch.batch, batch.num_graphs, t0s, steps, c1, types, kin, ctx)
            out_m.append(core.rollout(predict, self.fields, *args))
            out_b.append(core.rollout(core.zero_predictor(self.fields), self.fields, *args))
        return out_m, out_b

    def one_step_batch(self, model, batch, windows: int | None) -> dict[str, Tensor]:
        """Per-particle squared errors of teacher-forced single steps at ``windows`` frames (all when null)."""
        pos, types, ctx, kin = self._batch_parts(batch)
        t_len = pos.size(1)
        c = self._need_frames() - 1
        starts = list(range(c, t_len - 1))
        if windows is not None and len(starts) > windows:
            starts = [starts[round(i * (len(starts) - 1) / (windows - 1))] for i in range(windows)] \
                if windows > 1 else [starts[0]]
        out: dict[str, list] = {"": [], "baseline_": []}
        predictors = {"": core.model_predictor(model, self.fields), "baseline_": core.zero_predictor(self.fields)}
        for t0 in starts:
            t0s = torch.full((batch.num_graphs,), t0, dtype=torch.long, device=pos.device)
            for prefix, pr in predictors.items():
                err = core.one_step(pr, self.fields, self._acc(), pos, batch.batch, batch.num_graphs, t0s, c + 1,
                                    types, kin, ctx)
                out[prefix].append(err.mean(-1))
        return {k: torch.cat(v) if v else torch.zeros(0) for k, v in out.items()}

    def metrics(self, collected):  # pragma: no cover - evaluate computes them
        return {}

    @property
    def monitor_higher(self) -> bool:
        return False

    def write_artefacts(self, path, collected, dataset) -> None:
        """``test_rollout.npz``: predicted and true positions ``(K, N, D)`` of the first test batch's
        rollout from frame ``C``, with particle types and graph ids (``graphdl rollout`` renders them)."""
        if not collected.get("rollouts"):
            return
        ids, r = collected["rollouts"][0]
        save_rollout(path("test_rollout.npz"), r, ids, {"dt": self.dt, "bounds": self.bounds})

    def rows(self, batch) -> int:
        return int(batch.num_graphs)


def save_rollout(path: str, r: core.Rollout, ids: Tensor, meta: dict) -> None:
    """An ``.npz`` of a rollout: ``predicted``, ``truth`` ``(K, N, D)``, ``initial`` ``(N, D)``,
    ``particle_type`` ``(N,)``, ``graph`` ``(N,)`` (index of the trajectory in the split's
    batch), ``trajectory_ids`` ``(B,)`` and ``meta`` (JSON text)."""
    from graphdl.data.cache import save_npz

    arrays = {"predicted": r.pred.cpu().numpy(), "truth": r.truth.cpu().numpy(), "initial": r.start.cpu().numpy(),
              "graph": r.batch.cpu().numpy(), "trajectory_ids": ids.cpu().numpy(),
              "meta": np.array(json.dumps(meta, default=float))}
    if r.types is not None:
        arrays["particle_type"] = r.types.cpu().numpy()
    save_npz(path, arrays)


__all__ = ["RolloutSpec", "Simulate", "SimulateParams", "save_rollout"]
