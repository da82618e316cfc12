"""Norms, distances and directions that stay smooth where points coincide.

``‖r‖ = sqrt(Σ r²)`` has no derivative at ``r = 0``: autograd's ``sqrt`` backward divides by
``2 sqrt(0) = 0`` (the gradient of ``sqrt(d²)`` is ``0 · ∞ = NaN``), ``Tensor.norm`` masks the
first derivative to 0 but its double backward is NaN again, and ``r / ‖r‖`` is ``0 / 0``.
Coincident points are ordinary input — two atoms of a bad conformer, particles of a
collapsed system, a node and its own self-loop — and forces are trained through a double
backward, so a geometric block needs a value, a first *and* a second derivative that are
finite at ``r = 0``.

The construction used everywhere in graphdl is the smooth floor

    ``‖r‖_ε = sqrt(‖r‖² + ε²)``                                        (:func:`safe_norm`)

(as in EDM's ``sqrt(radial + 1e-8)``, Hoogeboom et al. 2022): a C∞ function of ``r`` whose
value, gradient (``r / ‖r‖_ε``, of norm < 1) and Hessian (``(I − r rᵀ / ‖r‖_ε²) / ‖r‖_ε``, of norm at most
``1/ε``) are finite everywhere. It was chosen over a ``where`` mask (``sqrt`` only where
``‖r‖² > 0``, 0 elsewhere), which keeps the value exact but only moves the problem: its
derivatives still grow as ``1/‖r‖`` and ``1/‖r‖²`` next to zero and overflow in float32 for
``‖r‖²`` near the smallest normal number, and its derivative jumps at 0. The price is a
bias: ``0 < ‖r‖_ε − ‖r‖ ≤ min(ε, ε² / (2‖r‖))`` — with the default ``ε = 1e-8`` (in the units
of the coordinates) at most ``5e-17 / ‖r‖``, below float64 round-off for ``‖r‖ ≳ 1e-3`` and
far below float32 round-off for any distance float32 resolves.

Directions are ``r̂_ε = r / ‖r‖_ε`` (:func:`safe_unit`): a unit vector to relative error
``ε² / (2‖r‖²)`` away from zero, shrinking smoothly to the zero vector at ``r = 0`` (so
homogeneous functions of it, such as spherical harmonics of degree ``l ≥ 1``, go to 0 there
instead of taking an arbitrary direction). ``sin(x)/x`` bases use :func:`smooth_sinc`, whose
Taylor branch near 0 avoids both ``0/0`` and the cancellation of its autograd derivatives.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SAFE_NORM_EPS = 1e-8
"""Default smoothing length ``ε`` of :func:`safe_norm` (coordinate units)."""


def _eps2(eps: float, dtype: torch.dtype) -> float:
    # ε² must not underflow to 0 (float16: 1e-16 does), or sqrt(0 + 0) is back
    return max(eps * eps, torch.finfo(dtype).tiny)


def safe_sqrt(x: Tensor, eps: float = SAFE_NORM_EPS) -> Tensor:
    """``sqrt(x + ε²)`` for a squared length ``x ≥ 0``: smooth at ``x = 0`` (see the module docstring).

    Args:
        x: squared norms ``‖r‖²``, any shape, ``≥ 0``.
        eps: smoothing length ``ε`` (> 0, units of ``r``); ``ε²`` is floored at the dtype's
            smallest normal number so it never underflows.

    Returns:
        A tensor of ``x``'s shape, ``≥ ε``, within ``min(ε, ε²/(2 sqrt(x)))`` of ``sqrt(x)``.
    """
    return torch.sqrt(x + _eps2(eps, x.dtype))


def safe_norm(v: Tensor, dim: int = -1, keepdim: bool = False, eps: float = SAFE_NORM_EPS) -> Tensor:
    """Euclidean norm ``sqrt(Σ v² + ε²)`` along ``dim``, with finite derivatives of every order at 0.

    Replaces ``v.norm(dim=dim)`` / ``sqrt((v * v).sum(dim))`` on geometric quantities
    (relative positions, velocities). Value within ``min(ε, ε²/(2‖v‖))`` of ``‖v‖``; first
    derivative ``v / ‖v‖_ε`` (norm < 1), second derivative at most ``1/ε`` in norm.

    Shapes: ``v (..., k, ...)`` → ``(..., ...)`` (``(..., 1, ...)`` with ``keepdim``).
    """
    return safe_sqrt((v * v).sum(dim, keepdim=keepdim), eps)


def safe_unit(v: Tensor, dim: int = -1, eps: float = SAFE_NORM_EPS) -> Tensor:
    """Direction ``v / ‖v‖_ε`` (:func:`safe_norm`): unit to relative ``ε²/(2‖v‖²)``, 0 at ``v = 0``.

    Smooth everywhere (unlike ``torch.nn.functional.normalize``, whose double backward is NaN
    at 0). Shapes: ``v (..., k, ...)`` → same shape.
    """
    return v / safe_norm(v, dim, keepdim=True, eps=eps)


# sinc: Taylor branch below |πx| < 0.5 with terms to (πx)^12; its remainder (πx)^14/15! < 5e-17
# (relative; float64 round-off), and the second derivative of the remainder < 3e-14. Above it,
# sin(y)/y: the autograd derivatives cancel terms of size 2/y³ ≤ 16, so they lose at most
# ~16 ulp there (not the ~1/y³ of a direct formula at tiny y).
_SINC_SWITCH = 0.5
_SINC_COEF = [(-1) ** n / math.factorial(2 * n + 1) for n in range(7)]


def smooth_sinc(x: Tensor) -> Tensor:
    """``sin(πx) / (πx)`` (1 at 0), as ``torch.sinc``, with finite first and second derivatives at 0.

    ``torch.sinc``'s double backward is NaN at 0; this one is exact to round-off: a Taylor
    polynomial in ``(πx)²`` for ``|πx| < 0.5`` and ``sin(y)/y`` (on a denominator kept away from
    0 in the branch that is not taken, so its backward is never ``0/0``) elsewhere.

    Shapes: any → same.
    """
    y = math.pi * x
    small = y.abs() < _SINC_SWITCH
    y_big = torch.where(small, torch.ones_like(y), y)  # never 0: no NaN in the unused branch's backward
    y2 = torch.where(small, y, torch.zeros_like(y)) ** 2
    poly = torch.full_like(y, _SINC_COEF[-1])
    for c in reversed(_SINC_COEF[:-1]):  # Horner in y², seven terms (not a loop over data)
        poly = poly * y2 + c
    return torch.where(small, poly, torch.sin(y_big) / y_big)


__all__ = ["SAFE_NORM_EPS", "safe_norm", "safe_sqrt", "safe_unit", "smooth_sinc"]
