"""The ``frame_denoising`` task: recover clean backbone frames from noisy ones.

Each residue's frame ``(R, t)`` (CA at ``t``) is perturbed: ``t + σ_t ε`` with ``ε ~ N(0, I₃)``
(``σ_t = 2`` Å per coordinate) and ``R R(q)``, ``q = normalise(1, ω/2)``, ``ω ~ N(0, σ_R² I₃)``
(``σ_R = 0.3`` rad); the model sees the residue types and the noisy frames (its ``input`` frame
field is replaced by the noisy one) and predicts frames. Training draws fresh noise every
step; evaluation draws it once per chain from ``eval_seed`` and the chain's dataset index,
so every epoch, every model and the baselines see the same noisy chains.

Loss: backbone FAPE (AF2 supplement Algorithm 28; points are the CA atoms, clamp 10 Å, scale
10 Å, ε 1e-4) of the predicted frames against the clean ones, averaged over the iterations
when the model traces its frames (``trajectory``: e.g. ``node.frames: frame[8]``, AF2's
auxiliary loss), else of the final frames.

Metrics per split (mean over chains): ``fape`` (final frames, Å/10), ``ca_rmsd`` (Å, after
Kabsch superposition of the predicted CA onto the true CA), ``lddt_ca`` (global lDDT-Cα,
15 Å inclusion radius, thresholds 0.5/1/2/4 Å). Beside them, two baselines under the same
noise: the noisy input itself (``noisy_*``) and a 3-residue moving average of the noisy CA
positions within each chain (``moving_average_*``; frames keep the noisy rotations).
The test split's per-chain values go to ``test_chains.csv``.

A spec::

    task:
      type: frame_denoising
      frame: node.frame         # clean frames in the dataset; the model input that gets the noisy ones
      output: node.frame        # predicted frames
      trajectory: node.frames   # optional: frames of every iteration (frame[T])
      sigma_trans: 2.0
      sigma_rot: 0.3
"""

from __future__ import annotations

import csv
from typing import Literal

import torch
from pydantic import Field, PositiveFloat, field_validator
from torch import Tensor

from graphdl.errors import InferenceError, did_you_mean
from graphdl.ops.frames import fape, frame_parts, kabsch_rmsd, lddt_ca, make_frame, perturb_frames
from graphdl.train.tasks.base import Task, TaskParams, register_task
from graphdl.types import FRAME, Frame, Stacked

METRICS = ("fape", "ca_rmsd", "lddt_ca")
BASELINES = ("noisy", "moving_average")


def _check_metrics(v: list[str]) -> list[str]:
    for name in v:
        if name not in METRICS:
            raise ValueError(f"unknown frame_denoising metric `{name}`{did_you_mean(name, list(METRICS))}")
    if not v:
        raise ValueError("name at least one metric, e.g. `metrics: [ca_rmsd]`")
    return v


class FrameDenoisingParams(TaskParams):
    """See the module docstring. ``clamp``: FAPE clamp in Å (null: unclamped)."""

    type: Literal["frame_denoising"] = "frame_denoising"
    frame: str = "node.frame"
    output: str = "node.frame"
    trajectory: str | None = None
    sigma_trans: float = Field(2.0, ge=0.0)
    sigma_rot: float = Field(0.3, ge=0.0)
    clamp: PositiveFloat | None = 10.0
    scale: PositiveFloat = 10.0
    eval_seed: int = 0
    metrics: list[str] = Field(default_factory=lambda: list(METRICS))
    monitor: str = "ca_rmsd"

    _v_metrics = field_validator("metrics")(_check_metrics)

    @field_validator("monitor")
    @classmethod
    def _v_monitor(cls, v):
        if v != "loss" and v not in METRICS:
            raise ValueError(f"`monitor` must be `loss` or one of {', '.join(METRICS)}, found `{v}`")
        return v


def moving_average_ca(ca: Tensor, batch: Tensor) -> Tensor:
    """Mean of each residue's CA with its chain neighbours ``i − 1`` and ``i + 1`` (two at chain ends).

    Shapes: ``ca (N, 3)``, ``batch (N,)`` sorted → ``(N, 3)``.
    """
    n = ca.size(0)
    total, count = ca.clone(), torch.ones(n, 1, dtype=ca.dtype, device=ca.device)
    if n > 1:
        same = (batch[1:] == batch[:-1]).to(ca.dtype).unsqueeze(-1)  # i and i + 1 in one chain
        total[:-1] += same * ca[1:]
        count[:-1] += same
        total[1:] += same * ca[:-1]
        count[1:] += same
    return total / count


@register_task("frame_denoising")
class FrameDenoising(Task):
    """Denoise backbone frames (see the module docstring).

    Shapes: ``out[output]`` ``(N, 4, 3)``; ``out[trajectory]`` ``(N, T, 4, 3)``; the dataset's
    ``frame`` ``(N, 4, 3)``.
    """

    Params = FrameDenoisingParams
    kind = "regression"
    artefacts = ("test_chains.csv",)

    def bind(self, data_fields, outputs):
        p = self.p
        if p.frame not in data_fields or not isinstance(data_fields[p.frame], Frame):
            have = ", ".join(f"`{k}: {t}`" for k, t in data_fields.items()) or "none"
            raise InferenceError(f"frame_denoising needs the clean frames `{p.frame}` (type frame) in the dataset "
                                 f"(dataset fields: {have}); set `task.frame`")
        if p.output not in outputs or outputs[p.output] != FRAME:
            have = ", ".join(f"`{k}: {t}`" for k, t in outputs.items()) or "none"
            raise InferenceError(f"frame_denoising reads predicted frames `{p.output}` (type frame), but the model "
                                 f"outputs {have}; list the frames under `model.outputs` or set `task.output`")
        if p.trajectory is not None:
            t = outputs.get(p.trajectory)
            if not (isinstance(t, Stacked) and isinstance(t.inner, Frame)):
                raise InferenceError(f"frame_denoising `trajectory: {p.trajectory}` must be a model output of frames "
                                     f"per iteration (type frame[T], from a layer's `trace:`), found "
                                     f"{t if t is not None else 'no such output'}")
        self.columns = [p.frame.split(".", 1)[1]]
        self.monitor = p.monitor
        self._eval_noise: dict[int, Tensor] = {}

    @property
    def monitor_higher(self) -> bool:
        return self.monitor == "lddt_ca"

    # ------------------------------------------------------------------- training
    def _noisy(self, batch, clean: Tensor, generator=None) -> Tensor:
        return perturb_frames(clean, self.p.sigma_trans, self.p.sigma_rot, generator=generator)

    def train_loss(self, model, batch) -> Tensor:
        clean = batch[self.p.frame]
        out = model(batch.replace(**{self.p.frame.replace(".", "__"): self._noisy(batch, clean)}))
        return self.loss(out, batch)

    def loss(self, out, batch) -> Tensor:
        p = self.p
        pred = out[p.trajectory] if p.trajectory is not None else out[p.output]
        clean = batch[p.frame].to(pred.dtype)
        return fape(pred, clean, batch.batch, batch.num_graphs, clamp=p.clamp, scale=p.scale)

    # ----------------------------------------------------------------- evaluation
    def eval_noise(self, clean: Tensor, ids: Tensor, batch) -> Tensor:
        """The fixed noisy frames of the chains ``ids`` (drawn once per chain, cached)."""
        ptr = batch.ptr.tolist()
        parts = []
        for b, i in enumerate(ids.tolist()):  # once per chain and run, not per step
            if i not in self._eval_noise:
                gen = torch.Generator().manual_seed(self.p.eval_seed * 1_000_003 + int(i))
                self._eval_noise[i] = perturb_frames(clean[ptr[b]:ptr[b + 1]].detach().cpu().double(),
                                                     self.p.sigma_trans, self.p.sigma_rot, generator=gen)
            parts.append(self._eval_noise[i])
        return torch.cat(parts).to(device=clean.device, dtype=clean.dtype)

    def evaluate(self, model, data):
        model.eval()
        self.eval()
        if not data.index:
            return {}, {}
        parts: dict[str, list] = {}
        total, rows = torch.zeros((), dtype=torch.float64), 0
        with torch.no_grad():
            for batch, ids in data.batches:
                clean = batch[self.p.frame]
                noisy = self.eval_noise(clean, ids, batch)
                out = model(batch.replace(**{self.p.frame.replace(".", "__"): noisy}))
                total += self.loss(out, batch).double().cpu() * batch.num_graphs
                rows += batch.num_graphs
                for k, v in self._scores(out[self.p.output], noisy, clean, batch, ids).items():
                    parts.setdefault(k, []).append(v.cpu())
        c = {k: torch.cat(v) for k, v in parts.items()}
        return {"loss": float(total) / max(rows, 1), **self.metrics(c)}, c

    def _scores(self, pred: Tensor, noisy: Tensor, clean: Tensor, batch, ids: Tensor) -> dict[str, Tensor]:
        """Per-chain FAPE, CA-RMSD and lDDT-Cα of the prediction and of both baselines (float64)."""
        b = batch.num_graphs
        clean = clean.double()
        ca_true = clean[:, 3]
        noisy = noisy.double()
        avg = moving_average_ca(noisy[:, 3], batch.batch)
        rot_noisy, _ = frame_parts(noisy)
        cands = {"": pred.double(), "noisy_": noisy, "moving_average_": make_frame(rot_noisy, avg)}
        out = {"index": ids, "residues": batch.ptr[1:] - batch.ptr[:-1]}
        for name, fr in cands.items():
            out[name + "fape"] = fape(fr, clean, batch.batch, b, clamp=self.p.clamp, scale=self.p.scale,
                                      per_graph=True)
            out[name + "ca_rmsd"] = kabsch_rmsd(fr[:, 3], ca_true, batch.batch, b)
            out[name + "lddt_ca"] = lddt_ca(fr[:, 3], ca_true, batch.batch, b)
        return out

    def metrics(self, c):
        out = {k: float(c[k].mean()) for k in self.p.metrics}
        for base in BASELINES:
            for k in METRICS:
                out[f"{base}_{k}"] = float(c[f"{base}_{k}"].mean())
        return out

    def write_artefacts(self, path, collected, dataset) -> None:
        if not collected:
            return
        chains = (getattr(dataset, "meta", None) or {}).get("chains") or []
        cols = ["index", "chain", "residues"] + [f"{pre}{k}" for pre in ("", "noisy_", "moving_average_")
                                                 for k in METRICS]
        with open(path("test_chains.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for r in range(len(collected["index"])):
                i = int(collected["index"][r])
                name = chains[i]["file"] if i < len(chains) else ""
                w.writerow([i, name, int(collected["residues"][r])]
                           + [f"{float(collected[k][r]):.6g}" for k in cols[3:]])

    def predictions(self, out, batch):
        t = out[self.p.output][:, 3]
        return {"index": batch.batch, "x": t[:, 0], "y": t[:, 1], "z": t[:, 2]}


__all__ = ["BASELINES", "METRICS", "FrameDenoising", "FrameDenoisingParams", "moving_average_ca"]
