"""NaN and inf stop a run, with the epoch, the batch and the first block that went non-finite.

Watching costs no host sync per step while nothing is wrong: the runner keeps, on the device,
the index of the first step whose loss was not finite (:class:`Watch`), and reads it once per
:data:`CHECK_EVERY` steps and at the end of the epoch, together with one check that every
parameter is finite (a non-finite gradient shows up there after the optimizer step, or in the
next step's loss).

When something is found, :func:`search` replays the epoch from its first step — model,
optimizer, scheduler, task and random-generator states restored from a snapshot taken when
the epoch began, the loader's order fixed by ``(seed, epoch)`` — with the model's
``check_finite`` debug mode on (one host sync per block) and a check of the loss, of every
gradient and of every parameter after each step. The first failing check names the place.
Evaluation is searched the same way, without a replay (it changes no state).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from graphdl.errors import NonFiniteError

CHECK_EVERY = 50
"""Training steps between two reads of the device-side watch (one host sync each)."""


def _what(t: Tensor) -> str:
    return "nan" if bool(torch.isnan(t).any()) else "inf"


class Watch:
    """Device-side record of the first step (0-based) whose loss was not finite; -1 while none."""

    def __init__(self, device):
        self.first = torch.full((), -1, dtype=torch.long, device=device)

    def step(self, i: int, loss: Tensor) -> None:
        bad = ~torch.isfinite(loss.detach())
        self.first = torch.where(bad & (self.first < 0), torch.full_like(self.first, i), self.first)

    def failed(self, model) -> int | None:
        """Host sync: the first bad step, ``-1`` when only the parameters went non-finite, or ``None``."""
        first = int(self.first)
        if first >= 0:
            return first
        flags = [torch.isfinite(p).all() for p in model.parameters()]
        if flags and not bool(torch.stack(flags).all()):
            return -1
        return None


def snapshot(model, task, opt, sched) -> dict:
    """Everything a replay of the coming epoch needs (copied: training changes the originals in place)."""
    return {"model": copy.deepcopy(model.state_dict()), "task": copy.deepcopy(task.state_dict()),
            "opt": copy.deepcopy(opt.state_dict()), "sched": copy.deepcopy(sched.state_dict()),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _restore(state: dict, model, task, opt, sched) -> None:
    model.load_state_dict(state["model"])
    task.load_state_dict(state["task"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def _owner(model, name: str) -> str:
    """``blocks.3.mlp.0.weight`` -> ``model.layers[2] (egnn) parameter `mlp.0.weight```."""
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 2 and parts[1].isdigit():
        idx = int(parts[1])
        for step, j in zip(model.plan.steps, model._order):
            if j == idx:
                return f"{step.where} ({step.label}) parameter `{'.'.join(parts[2:])}`"
    return f"parameter `{name}`"


def search(model, task, loader, opt, sched, grad_clip, device, state: dict, upto: int | None) -> str | None:
    """Replay the epoch from ``state`` up to step ``upto`` (all steps if ``None``); where it fails, or ``None``."""
    _restore(state, model, task, opt, sched)
    model.train()
    task.train()
    model.check_finite = True
    n = len(loader)
    try:
        for i, batch in enumerate(loader):
            if upto is not None and i > upto:
                break
            at = f"batch {i + 1} of {n}"
            batch = batch.to(device)
            try:
                loss = task.train_loss(model, batch)
            except NonFiniteError as e:
                return f"{at}: {e}"
            if not bool(torch.isfinite(loss).all()):
                return f"{at}: the loss is {_what(loss)} while every block output is finite (the task's loss)"
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for name, p in model.named_parameters():
                if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                    return (f"{at}: the gradient of {_owner(model, name)} is {_what(p.grad)} (the forward pass and "
                            f"the loss are finite)")
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            if sched.per_step:
                sched.scheduler.step()
            for name, p in model.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    return f"{at}: the optimizer step made {_owner(model, name)} {_what(p)}"
        return None
    finally:
        model.check_finite = False


def search_eval(model, task, batches) -> str | None:
    """The first evaluation batch whose forward pass or loss is not finite, and where."""
    model.check_finite = True
    try:
        ctx = torch.enable_grad() if task.grad_in_eval else torch.no_grad()
        with ctx:
            for i, (batch, _ids) in enumerate(batches):
                at = f"batch {i + 1} of {len(batches)}"
                try:
                    out = model(batch)
                except NonFiniteError as e:
                    return f"{at}: {e}"
                loss = task.loss(out, batch)
                if not bool(torch.isfinite(loss).all()):
                    return f"{at}: the loss is {_what(loss)} while every block output is finite (the task's loss)"
        return None
    finally:
        model.check_finite = False


__all__ = ["CHECK_EVERY", "Watch", "search", "search_eval", "snapshot"]
