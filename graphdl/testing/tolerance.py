"""Tolerances derived from the method, so a test states where its bound comes from in one line.

Two sources of error are modelled:

* **round-off**: a result computed in ``dtype`` through a chain of operations differs from the
  exact value by at most ``factor · eps(dtype) · scale``, where ``scale`` is a measured magnitude
  (the largest entry of the reference, or of a larger intermediate when terms cancel) and
  ``factor`` the operation-count factor (length of the sums and depth of the chain; a test
  names it beside the call). Summation order — BLAS kernels, thread counts — only moves the
  error inside that bound.
* **truncation** of a central difference ``D(h) = (f(x+h) − f(x−h)) / 2h``:
  ``D(h) − f′(x) = h²/6 · f‴(ξ)``, estimated without knowing ``f‴`` from two steps
  (Richardson): ``D(2h) − D(h) = h²/2 · f‴ + O(h⁴) = 3 · (D(h) − f′)``.

Example::

    atol = roundoff(ref, factor=64)  # float64, 3 matmuls of width <= 64 between input and output
"""

from __future__ import annotations

import torch
from torch import Tensor


def eps(dtype: torch.dtype = torch.float64) -> float:
    """Machine epsilon of ``dtype`` (2.2e-16 for float64, 1.2e-7 for float32)."""
    return float(torch.finfo(dtype).eps)


def roundoff(scale, factor: float = 1.0, dtype: torch.dtype | None = None) -> float:
    """``factor · eps(dtype) · scale``: an absolute round-off bound.

    ``scale``: a float, or a tensor / NumPy array whose largest absolute entry is used (and
    whose dtype is the default ``dtype``); ``factor``: the operation-count factor, named
    beside the call. ``dtype`` defaults to float64 for plain numbers.
    """
    if not isinstance(scale, (Tensor, int, float)):  # a NumPy array or scalar
        scale = torch.as_tensor(scale)
    if isinstance(scale, Tensor):
        dtype = dtype or scale.dtype
        scale = float(scale.detach().abs().max()) if scale.numel() else 0.0
    return factor * eps(dtype or torch.float64) * float(scale)


def central_difference_bound(d_h, d_2h, h: float, value_scale: float, *, factor: float,
                             dtype: torch.dtype = torch.float64, safety: float = 2.0):
    """Elementwise bound on ``|D(h) − f′(x)|`` for central differences of a function ``f``.

    ``d_h``, ``d_2h``: the central differences with steps ``h`` and ``2h`` (tensors or NumPy
    arrays; the bound has their type and shape); ``value_scale``: the
    magnitude of ``f`` near ``x`` (each evaluation carries round-off ``≤ factor · eps · value_scale``).

    * round-off: ``(δ₊ − δ₋) / 2h ≤ factor · eps · value_scale / h``;
    * truncation: ``h²/6 · |f‴| ≈ |D(2h) − D(h)| / 3`` (Richardson), times ``safety``; the
      estimate itself carries at most ``(r(h) + r(2h)) / 3`` of round-off, which only adds to it.
    """
    r = roundoff(value_scale, factor, dtype) / h
    return r + safety * abs(d_2h - d_h) / 3


__all__ = ["central_difference_bound", "eps", "roundoff"]
