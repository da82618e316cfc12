"""Optimizers and learning-rate schedules from the ``train`` section.

Step-wise schedules (``noam``, ``cosine``) are a :class:`~torch.optim.lr_scheduler.LambdaLR`
stepped after every batch, with the factor a function of the global step ``s`` (``S`` steps
in all, ``W`` of warm-up):

* noam (chemprop): ``s < W``: ``a + (1 − a) s / W``; then ``f^((s − W) / (S − W))``
* cosine: ``s < W``: ``s / W``; then ``f + (1 − f) (1 + cos(π (s − W) / (S − W))) / 2``

with ``a`` = ``start_factor`` and ``f`` = ``final_factor``; ``exponential_decay`` (GNS):
``(1 − m) r^(s/D) + m`` with ``m = min_lr / lr``. ``step`` and ``exponential``
step once per epoch; ``plateau`` reads the monitored validation metric once per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from graphdl.train import sections as S


def make_optimizer(spec, params) -> torch.optim.Optimizer:
    if isinstance(spec, S.Adam):
        return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay)
    if isinstance(spec, S.AdamW):
        return torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay)
    if isinstance(spec, S.SGD):
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                               nesterov=spec.nesterov)
    raise TypeError(f"unknown optimizer spec {spec!r}")  # pragma: no cover


class NoamFactor:
    """Learning-rate factor of the noam schedule at a global step (see the module docstring)."""

    def __init__(self, warmup: int, total: int, start: float, final: float):
        self.warmup, self.total, self.start, self.final = warmup, max(total, 1), start, final

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (1 - self.start) * step / self.warmup
        span = max(self.total - self.warmup, 1)
        return self.final ** (min(step - self.warmup, span) / span)


class CosineFactor:
    def __init__(self, warmup: int, total: int, final: float):
        self.warmup, self.total, self.final = warmup, max(total, 1), final

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / self.warmup
        span = max(self.total - self.warmup, 1)
        t = min(step - self.warmup, span) / span
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * t))


class DecayFactor:
    """``lr(s) / lr`` of :class:`~graphdl.train.sections.ExponentialDecay`: ``(1 − m) r^(s/D) + m``, ``m = min_lr/lr``."""

    def __init__(self, lr: float, decay_steps: int, rate: float, min_lr: float):
        self.floor, self.decay_steps, self.rate = min_lr / lr, decay_steps, rate

    def __call__(self, step: int) -> float:
        return (1 - self.floor) * self.rate ** (step / self.decay_steps) + self.floor


@dataclass
class Schedule:
    """A scheduler and when to step it: ``per_step`` (after each batch) or per epoch;
    ``on_metric``: pass the monitored validation value (``plateau``)."""

    scheduler: object | None
    per_step: bool = False
    on_metric: bool = False

    def state_dict(self) -> dict:
        if self.scheduler is None:
            return {}
        sd = self.scheduler.state_dict()
        sd.pop("lr_lambdas", None)  # callables are rebuilt from the spec
        return sd

    def load_state_dict(self, sd: dict) -> None:
        if self.scheduler is not None and sd:
            if isinstance(self.scheduler, torch.optim.lr_scheduler.LambdaLR):
                sd = {**sd, "lr_lambdas": [None] * len(self.scheduler.lr_lambdas)}
            self.scheduler.load_state_dict(sd)


def make_schedule(spec, optimizer, *, epochs: int, steps_per_epoch: int, monitor_higher: bool) -> Schedule:
    total = epochs * steps_per_epoch
    if isinstance(spec, S.Constant):
        return Schedule(None)
    if isinstance(spec, S.Noam):
        warm = int(round(spec.warmup_epochs * steps_per_epoch))
        fn = NoamFactor(warm, total, spec.start_factor, spec.final_factor)
        return Schedule(torch.optim.lr_scheduler.LambdaLR(optimizer, fn), per_step=True)
    if isinstance(spec, S.Cosine):
        warm = int(round(spec.warmup_epochs * steps_per_epoch))
        fn = CosineFactor(warm, total, spec.final_factor)
        return Schedule(torch.optim.lr_scheduler.LambdaLR(optimizer, fn), per_step=True)
    if isinstance(spec, S.ExponentialDecay):
        lr = optimizer.param_groups[0]["lr"]
        fn = DecayFactor(lr, spec.decay_steps, spec.rate, spec.min_lr)
        return Schedule(torch.optim.lr_scheduler.LambdaLR(optimizer, fn), per_step=True)
    if isinstance(spec, S.Step):
        return Schedule(torch.optim.lr_scheduler.StepLR(optimizer, spec.step_epochs, spec.gamma))
    if isinstance(spec, S.Exponential):
        return Schedule(torch.optim.lr_scheduler.ExponentialLR(optimizer, spec.gamma))
    if isinstance(spec, S.Plateau):
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max" if monitor_higher else "min", factor=spec.factor, patience=spec.patience,
            min_lr=spec.min_lr)
        return Schedule(sched, on_metric=True)
    raise TypeError(f"unknown schedule spec {spec!r}")  # pragma: no cover


__all__ = ["CosineFactor", "DecayFactor", "NoamFactor", "Schedule", "make_optimizer", "make_schedule"]
