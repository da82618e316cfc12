"""The learned-simulator procedure of GNS, independent of any runner: training noise,
acceleration targets, the integrator, rollouts and their metrics.

Conventions (Sanchez-Gonzalez et al. 2020; DeepMind's ``learning_to_simulate``):

* time is counted in frames (dt = 1): velocity ``v_t = x_t − x_{t−1}``, acceleration
  ``a_t = x_{t+1} − 2 x_t + x_{t−1}``;
* the model sees the last ``C + 1`` positions (a ``trajectory(C+1, D)`` input, oldest first)
  and the newest position, and returns a *normalised* acceleration ``â``;
* semi-implicit Euler with dt = 1: ``a = â σ_a + μ_a``, ``v_{t+1} = v_t + a``,
  ``x_{t+1} = x_t + v_{t+1}``;
* kinematic particles (type 3 in DeepMind's data: walls, obstacles moved by the data) take
  their true next position in a rollout, get no training noise and no loss.

**Shapes**: a history is ``(N, C+1, D)``; trajectories ``(N, T, D)`` (particles first, as the
dataset's ``node.position``); rollouts ``(K, N, D)`` (steps first, as the reference's output).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from graphdl.data.graph import Graph


# --------------------------------------------------------------------------- training
def random_walk_noise(history: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Noise for a position history: a random walk on the ``C`` velocities integrated into positions.

    Each velocity step gets ``N(0, (σ/√C)²)`` per axis, so the noise of the newest velocity
    (the sum of ``C`` steps) has std ``σ``; the velocity noise is summed along time (the
    walk), then summed again into positions, with none on the first frame (reference:
    ``noise_utils.get_random_walk_noise_for_position_sequence``).

    Args:
        history: ``(N, C+1, D)`` positions (only its shape, dtype and device are used).
        sigma: std of the noise on the newest velocity (the reference's ``noise_std``).

    Returns:
        ``(N, C+1, D)`` position noise, zero at frame 0.
    """
    n, frames, d = history.shape
    c = frames - 1
    step = torch.randn((n, c, d), generator=generator, dtype=history.dtype, device=history.device)
    vel_noise = torch.cumsum(step * (sigma / math.sqrt(c)), dim=1)
    return torch.cat([history.new_zeros(n, 1, d), torch.cumsum(vel_noise, dim=1)], dim=1)


def acceleration_target(next_pos: Tensor, history: Tensor, noise: Tensor | None = None) -> Tensor:
    """The acceleration ``x_{t+1} − 2 x_t + x_{t−1}`` the model should predict from a (noisy) history.

    With ``noise`` (the history's noise, :func:`random_walk_noise`), the history is noisy and
    the next position is shifted by the noise of the newest frame, so the target velocity
    ``x_{t+1} + n_t − (x_t + n_t)`` is the true one: the model learns to undo the noise in its
    newest velocity, not in its position (the reference's ``next_position_adjusted``).

    Shapes: ``next_pos (N, D)``, ``history (N, C+1, D)`` (clean), ``noise`` like ``history``
    → ``(N, D)``.
    """
    if noise is not None:
        history = history + noise
        next_pos = next_pos + noise[:, -1]
    return next_pos - 2 * history[:, -1] + history[:, -2]


def integrate(history: Tensor, acceleration: Tensor) -> Tensor:
    """Semi-implicit Euler, dt = 1: ``x_{t+1} = x_t + (x_t − x_{t−1}) + a``. Shapes ``(N, C+1, D), (N, D) → (N, D)``."""
    last = history[:, -1]
    return last + (last - history[:, -2]) + acceleration


@dataclass(frozen=True)
class SimFields:
    """Which model fields a simulator feeds and reads."""

    history: str = "node.history"
    position: str = "node.pos"
    particle_type: str | None = "node.particle_type"
    context: str | None = None
    output: str = "node.acc"


@dataclass
class Normalizer:
    """``mean`` and ``std`` per axis ``(D,)`` of the acceleration (and the context), for (de)normalising."""

    mean: Tensor
    std: Tensor

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.std.to(x) + self.mean.to(x)


def model_graph(fields: SimFields, history: Tensor, types: Tensor | None, batch: Tensor, num_graphs: int,
                context: Tensor | None = None) -> Graph:
    """The model's input graph for one step: ``history`` ``(N, C+1, D)``, the newest position,
    particle types ``(N,)`` and the context ``(B, k)`` (edges are made by the model's ``graph:``)."""
    data = {fields.history: history, fields.position: history[:, -1]}
    if fields.particle_type is not None and types is not None:
        data[fields.particle_type] = types
    if fields.context is not None and context is not None:
        data[fields.context] = context
    return Graph(None, history.size(0), data, batch=batch, num_graphs=num_graphs, validate=False)


Predictor = Callable[[Graph], Tensor]
"""Input graph -> normalised acceleration ``(N, D)``."""


def model_predictor(model, fields: SimFields) -> Predictor:
    return lambda g: model(g)[fields.output]


def zero_predictor(fields: SimFields) -> Predictor:
    """The baseline 'constant velocity + mean acceleration': a normalised acceleration of 0."""
    return lambda g: torch.zeros_like(g[fields.position])


# ---------------------------------------------------------------------------- rollouts
@dataclass
class Rollout:
    """Predicted and true positions of ``K`` steps for a batch of trajectories.

    ``pred``, ``truth`` ``(K, N, D)``; ``start`` ``(N, D)`` the newest input frame (for the
    first velocity); ``batch`` ``(N,)`` graph of each particle; ``types`` ``(N,)``."""

    pred: Tensor
    truth: Tensor
    start: Tensor
    batch: Tensor
    num_graphs: int
    types: Tensor | None = None


def rollout(predict: Predictor, fields: SimFields, acc: Normalizer, positions: Tensor, batch: Tensor,
            num_graphs: int, t0: Tensor, steps: int, frames: int, types: Tensor | None = None,
            kinematic: Tensor | None = None, context: Tensor | None = None) -> Rollout:
    """Autoregressive rollout of ``steps`` steps from the true frames ``t0 − C .. t0`` of each graph.

    Args:
        predict: input graph -> normalised acceleration (:func:`model_predictor`).
        positions: ``(N, T, D)`` true trajectories (the batch's ``node.position``).
        batch: ``(N,)`` graph of each particle; ``num_graphs``: ``B``.
        t0: ``(B,)`` newest input frame per graph (``≥ C``, ``t0 + steps ≤ T − 1``).
        frames: ``C + 1``, the history length the model reads.
        types: ``(N,)`` particle types (model input); ``kinematic`` ``(N,)`` bool: these
            particles take their true positions.
        context: ``(B, T, k)`` step context; frame ``t`` of it goes with the history ending at
            ``t`` (the reference's ``step_context[-2]``); standardised by the model.

    Returns:
        :class:`Rollout` with ``pred``/``truth`` ``(steps, N, D)``. Runs without autograd.
    """
    n = positions.size(0)
    c = frames - 1
    node_t0 = t0.index_select(0, batch)  # (N,)
    ar = torch.arange(n, device=positions.device)
    offsets = torch.arange(-c, 1, device=positions.device)
    history = positions[ar[:, None], node_t0[:, None] + offsets]  # (N, C+1, D)
    start = history[:, -1].clone()
    preds, truths = [], []
    with torch.no_grad():
        for k in range(steps):
            ctx = None
            if context is not None:
                ctx = context[torch.arange(num_graphs, device=context.device), t0 + k]
            g = model_graph(fields, history, types, batch, num_graphs, ctx)
            nxt = integrate(history, acc.denormalize(predict(g)))
            true_next = positions[ar, node_t0 + k + 1]
            if kinematic is not None:
                nxt = torch.where(kinematic[:, None], true_next, nxt)
            preds.append(nxt)
            truths.append(true_next)
            history = torch.cat([history[:, 1:], nxt[:, None]], 1)
    return Rollout(torch.stack(preds), torch.stack(truths), start, batch, num_graphs, types)


def one_step(predict: Predictor, fields: SimFields, acc: Normalizer, positions: Tensor, batch: Tensor,
             num_graphs: int, t0: Tensor, frames: int, types=None, kinematic=None, context=None) -> Tensor:
    """Squared position error of one teacher-forced step per particle and axis ``(N, D)``."""
    r = rollout(predict, fields, acc, positions, batch, num_graphs, t0, 1, frames, types, kinematic, context)
    return (r.pred[0] - r.truth[0]) ** 2


# ----------------------------------------------------------------------------- metrics
def per_graph_mean(x: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Mean over each graph's particles and the trailing axes: ``(..., N, D) → (..., B)``."""
    per_node = x.mean(-1)  # (..., N)
    flat = per_node.reshape(-1, per_node.size(-1))
    sums = torch.zeros(flat.size(0), num_graphs, dtype=x.dtype, device=x.device).index_add_(1, batch, flat)
    counts = torch.bincount(batch, minlength=num_graphs).clamp_min(1).to(x.dtype)
    return (sums / counts).reshape(*per_node.shape[:-1], num_graphs)


def kinetic_energy(frames: Tensor, first: Tensor, batch: Tensor, num_graphs: int, dt: float) -> Tensor:
    """``E_t = ½ Σ_i ‖(x_i(t) − x_i(t−1)) / dt‖²`` per graph and frame (unit masses): ``(K, B)``.

    ``frames`` ``(K, N, D)`` are frames ``t0+1..t0+K``, ``first`` ``(N, D)`` is frame ``t0``."""
    prev = torch.cat([first[None], frames[:-1]], 0)
    e = 0.5 * (((frames - prev) / dt) ** 2).sum(-1)  # (K, N)
    return torch.zeros(e.size(0), num_graphs, dtype=e.dtype, device=e.device).index_add_(1, batch, e)


def rollout_metrics(r: Rollout, dt: float, horizons: tuple[int, ...] = (5, 20)) -> dict[str, Tensor]:
    """Per-graph metrics of a rollout ``(B,)`` each (float64):

    * ``mse{k}``: position MSE averaged over the first ``k`` steps (LagrangeBench's MSE₅, MSE₂₀;
      only for ``k ≤ K``); ``mse_full``: over all ``K`` steps;
    * ``ekin_mse``: mean over frames of ``(E_pred − E_true)²`` (:func:`kinetic_energy`, with
      ``dt`` the time between frames); ``ekin_rel``: ``mean |E_pred − E_true| / mean E_true``.

    MSE is the mean over particles (kinematic ones included, as the reference) and axes.
    """
    err = (r.pred.double() - r.truth.double()) ** 2
    per_step = per_graph_mean(err, r.batch, r.num_graphs)  # (K, B)
    out = {"mse_full": per_step.mean(0)}
    for k in horizons:
        if k <= per_step.size(0):
            out[f"mse{k}"] = per_step[:k].mean(0)
    ep = kinetic_energy(r.pred.double(), r.start.double(), r.batch, r.num_graphs, dt)
    et = kinetic_energy(r.truth.double(), r.start.double(), r.batch, r.num_graphs, dt)
    out["ekin_mse"] = ((ep - et) ** 2).mean(0)
    out["ekin_rel"] = (ep - et).abs().mean(0) / et.mean(0).clamp_min(torch.finfo(torch.float64).tiny)
    return out


def inside_box(pred: Tensor, bounds, tol: float = 0.0) -> Tensor:
    """Fraction of predicted particle positions ``(K, N, D)`` within ``bounds ± tol`` (a scalar tensor)."""
    b = torch.as_tensor(bounds, dtype=pred.dtype, device=pred.device)
    ok = ((pred >= b[:, 0] - tol) & (pred <= b[:, 1] + tol)).all(-1)
    return ok.double().mean()


__all__ = [
    "Normalizer",
    "Rollout",
    "SimFields",
    "acceleration_target",
    "inside_box",
    "integrate",
    "kinetic_energy",
    "model_graph",
    "model_predictor",
    "one_step",
    "random_walk_noise",
    "rollout",
    "rollout_metrics",
    "zero_predictor",
]
