"""Segment reductions: rows of an ``(E, ...)`` tensor reduced into ``num_segments`` rows.

Every reduction takes ``index`` ``(E,)`` (the segment of each row, int64, values in
``[0, num_segments)``) and, optionally, ``ptr`` ``(num_segments + 1,)``: the CSR offsets of
``index`` when it is sorted (``ptr[s]:ptr[s+1]`` are the rows of segment ``s``). ``ptr``
never changes a result, it only unlocks faster kernels; passing a ``ptr`` that does not
describe ``index`` is undefined behaviour (it is not checked, a check would sync the GPU).

Conventions shared by all reductions:

* empty segments give ``0`` (never ``-inf`` or NaN);
* float32/float64 (and half types through the general kernels); sum, max and min also take
  integer tensors (no gradient), mean of integers returns floats;
* no Python loop over rows, no host synchronisation: shapes are checked from metadata only;
* gradients are exact for sum and mean; max and min send the gradient of a segment to its
  arg-extremum and, when several rows tie for it, split it equally between them (the
  convention of ``torch.amax``);
* every backward is written with differentiable ops, so double backward (forces from an
  energy, gradient penalties) works.

Kernel choice on CPU (measured on 500k rows into 50k segments, 2 cores):

* sum with ``ptr``: a sparse CSR selector matrix times ``x`` (MKL), 1-3x faster than
  ``index_add_``; without ``ptr``: ``index_add_``.

Under ``torch.compile`` every reduction takes its traceable path (no sparse tensors; sums as
``scatter_add_``, see :func:`index_add_rows`), which Inductor fuses.
* max/min with ``ptr`` and fewer than 16 values per row: ``torch.segment_reduce`` (3-4x
  faster than ``scatter_reduce`` there); otherwise ``scatter_reduce`` with a custom backward
  (its autograd backward is 2-3x slower than the one here, and keeps more (E, *) temporaries).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor
from torch.autograd import Function

from graphdl.errors import DataError, did_you_mean
from graphdl.ops import kernels


def _silence_csr_beta_notice() -> None:
    """Fire torch's once-per-process "sparse CSR is beta" notice now, silenced.

    The notice is raised once from C++ on the first sparse CSR tensor; consuming it here keeps
    it out of users' logs without touching their warning filters.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.sparse_csr_tensor(
            torch.zeros(2, dtype=torch.long),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0),
            (1, 1),
            check_invariants=False,
        )


_silence_csr_beta_notice()

_SEGMENT_REDUCE_MAX_WIDTH = 16
"""Below this many values per row, ``torch.segment_reduce`` beats ``scatter_reduce`` (max/min)."""


# ----------------------------------------------------------------------------- checks
def _check(x: Tensor, index: Tensor, num_segments: int, ptr: Tensor | None, name: str) -> None:
    if index.dim() != 1:
        raise DataError(f"{name}: index must be 1-D (one segment per row), found shape {tuple(index.shape)}")
    if x.dim() == 0 or x.size(0) != index.numel():
        raise DataError(
            f"{name}: x has {x.size(0) if x.dim() else 0} rows but index has {index.numel()} entries; "
            f"they must match (x is (E, ...), index is (E,))"
        )
    if index.dtype != torch.long:
        raise DataError(f"{name}: index must be int64 (torch.long), found {index.dtype}; use `index.long()`")
    if num_segments < 0:
        raise DataError(f"{name}: num_segments must be >= 0, found {num_segments}")
    if ptr is not None and (ptr.dim() != 1 or ptr.numel() != num_segments + 1):
        raise DataError(
            f"{name}: ptr must have shape ({num_segments + 1},) (num_segments + 1 offsets), "
            f"found {tuple(ptr.shape)}"
        )
    if x.device != index.device:
        raise DataError(f"{name}: x is on {x.device} but index is on {index.device}; move both to one device")


def _expand_index(index: Tensor, like: Tensor) -> Tensor:
    """``index`` broadcast (without copy) to the shape of ``like`` along trailing dims."""
    return index.view((-1,) + (1,) * (like.dim() - 1)).expand_as(like)


def index_add_rows(out: Tensor, index: Tensor, src: Tensor) -> Tensor:
    """``out[index[e]] += src[e]`` for every row ``e``, in place; returns ``out``.

    ``out.index_add_(0, index, src)`` in eager mode. Under ``torch.compile`` it is
    ``scatter_add_`` with the index broadcast over trailing dims: Inductor's CPU code for an
    ``index_add_`` into a single row (one segment: a batch of one graph) fails an assertion in
    its vectorised atomic add (torch 2.13), while the scatter lowering is correct for every
    shape and dtype. Differentiable (twice) either way.

    Shapes:
        out ``(S, *)``, index ``(E,)`` int64, src ``(E, *)`` → out.
    """
    if torch.compiler.is_compiling():
        return out.scatter_add_(0, _expand_index(index, src), src)
    return out.index_add_(0, index, src)


def _segment_counts(index: Tensor, num_segments: int, ptr: Tensor | None, dtype: torch.dtype) -> Tensor:
    """Rows per segment, ``(num_segments,)`` in ``dtype`` (no host sync, unlike ``bincount``)."""
    if ptr is not None:
        return (ptr[1:] - ptr[:-1]).to(dtype)
    ones = torch.ones(index.numel(), dtype=dtype, device=index.device)
    return index_add_rows(torch.zeros(num_segments, dtype=dtype, device=index.device), index, ones)


def _csr_sum_ok(x: Tensor, ptr: Tensor | None) -> bool:
    return (
        ptr is not None
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not torch.compiler.is_compiling()  # sparse tensors cannot be traced; index_add_ can
    )


# -------------------------------------------------------------------------------- sum
def _sum_forward(x: Tensor, index: Tensor, num_segments: int, ptr: Tensor | None) -> Tensor:
    """Segment sum without autograd bookkeeping (used inside other kernels)."""
    out_shape = (num_segments,) + tuple(x.shape[1:])
    if ptr is not None and x.dim() >= 1 and ptr.numel() == num_segments + 1 and kernels.usable(x):
        # graphdl's C++ kernel: each segment's contiguous rows summed in its own loop
        width = math.prod(x.shape[1:])  # explicit: E may be 0
        return kernels.ops().segment_sum_rows(ptr.contiguous(), x.reshape(x.size(0), width).contiguous()).reshape(
            out_shape)
    if _csr_sum_ok(x, ptr) and x.numel() > 0 and num_segments > 0:
        try:
            e = x.size(0)
            selector = torch.sparse_csr_tensor(
                ptr,
                torch.arange(e, dtype=ptr.dtype, device=x.device),
                torch.ones(e, dtype=x.dtype, device=x.device),
                (num_segments, e),
                check_invariants=False,
            )
            return (selector @ x.reshape(e, -1)).reshape(out_shape)
        except (RuntimeError, NotImplementedError):  # MKL missing in this build: use the general path
            pass
    return index_add_rows(x.new_zeros(out_shape), index, x)


class _SegmentSumCSR(Function):
    """Segment sum through a CSR selector product; backward gathers the output gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, num_segments: int, ptr: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        return _sum_forward(x, index, num_segments, ptr)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None, None


def segment_sum(x: Tensor, index: Tensor, num_segments: int, ptr: Tensor | None = None) -> Tensor:
    """Sum the rows of ``x`` that share a segment: ``out[s] = Σ_{e: index[e] = s} x[e]``.

    Args:
        x: values to reduce, float.
        index: segment of each row of ``x`` (int64).
        num_segments: number of output rows ``S``.
        ptr: optional CSR offsets of a sorted ``index`` (faster kernel on CPU).

    Shapes:
        x ``(E, *)``, index ``(E,)``, ptr ``(S + 1,)`` → ``(S, *)``; empty segments are 0.
    """
    _check(x, index, num_segments, ptr, "segment_sum")
    if _csr_sum_ok(x, ptr):
        return _SegmentSumCSR.apply(x, index, num_segments, ptr)
    return index_add_rows(x.new_zeros((num_segments,) + tuple(x.shape[1:])), index, x)


def segment_mean(x: Tensor, index: Tensor, num_segments: int, ptr: Tensor | None = None) -> Tensor:
    """Average the rows of each segment: ``out[s] = Σ_{e: index[e] = s} x[e] / max(1, |s|)``.

    Shapes:
        x ``(E, *)``, index ``(E,)``, ptr ``(S + 1,)`` → ``(S, *)``; empty segments are 0.
    """
    _check(x, index, num_segments, ptr, "segment_mean")
    total = segment_sum(x, index, num_segments, ptr)
    count = _segment_counts(index, num_segments, ptr, x.dtype).clamp_(min=1)
    return total / count.view((-1,) + (1,) * (x.dim() - 1))


# --------------------------------------------------------------------------- max / min
def _extremum_forward(x: Tensor, index: Tensor, num_segments: int, ptr: Tensor | None, mode: str) -> Tensor:
    """Per-segment max (``mode="max"``) or min without autograd; empty segments give 0."""
    out_shape = (num_segments,) + tuple(x.shape[1:])
    if x.numel() == 0 or num_segments == 0:
        return x.new_zeros(out_shape)
    width = x.numel() // x.size(0)
    if ptr is not None and width < _SEGMENT_REDUCE_MAX_WIDTH and x.is_floating_point():
        out = torch.segment_reduce(x, mode, offsets=ptr, axis=0)
        nonempty = (ptr[1:] > ptr[:-1]).view((-1,) + (1,) * (x.dim() - 1))
        return torch.where(nonempty, out, out.new_zeros(()))
    reduce = "amax" if mode == "max" else "amin"
    return x.new_zeros(out_shape).scatter_reduce_(0, _expand_index(index, x), x, reduce, include_self=False)


class _SegmentExtremum(Function):
    """Segment max/min; the gradient goes to the arg-extremum, split equally between ties."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, num_segments: int, ptr: Tensor | None, mode: str) -> Tensor:
        out = _extremum_forward(x, index, num_segments, ptr, mode)
        ctx.save_for_backward(x, index, out)
        ctx.ptr = ptr
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, index, out = ctx.saved_tensors
        num_segments = out.size(0)
        # One (E, *) buffer is reused for the gathered extrema, the tie mask and the result:
        # fresh (E, *) temporaries cost more (page faults) than the arithmetic itself.
        buf = out.detach().index_select(0, index)
        hit = torch.eq(x, buf)
        ties = _sum_forward(buf.copy_(hit), index, num_segments, ctx.ptr).clamp_(min=1)
        if torch.is_grad_enabled():  # create_graph=True: stay differentiable in `grad`
            share = (grad / ties).index_select(0, index)
            return torch.where(hit, share, share.new_zeros(())), None, None, None, None
        torch.index_select(grad / ties, 0, index, out=buf)
        return buf.mul_(hit), None, None, None, None


def segment_max(x: Tensor, index: Tensor, num_segments: int, ptr: Tensor | None = None) -> Tensor:
    """Largest row of each segment, elementwise: ``out[s] = max_{e: index[e] = s} x[e]``.

    The gradient of ``out[s]`` goes to the row(s) attaining the maximum; ties split it equally.

    Shapes:
        x ``(E, *)``, index ``(E,)``, ptr ``(S + 1,)`` → ``(S, *)``; empty segments are 0.
    """
    _check(x, index, num_segments, ptr, "segment_max")
    return _SegmentExtremum.apply(x, index, num_segments, ptr, "max")


def segment_min(x: Tensor, index: Tensor, num_segments: int, ptr: Tensor | None = None) -> Tensor:
    """Smallest row of each segment, elementwise: ``out[s] = min_{e: index[e] = s} x[e]``.

    The gradient of ``out[s]`` goes to the row(s) attaining the minimum; ties split it equally.

    Shapes:
        x ``(E, *)``, index ``(E,)``, ptr ``(S + 1,)`` → ``(S, *)``; empty segments are 0.
    """
    _check(x, index, num_segments, ptr, "segment_min")
    return _SegmentExtremum.apply(x, index, num_segments, ptr, "min")


# ----------------------------------------------------------------------------- softmax
class _SegmentSoftmax(Function):
    """Softmax within segments; backward ``y * (g - Σ_seg g·y)`` (saved output, so twice differentiable)."""

    @staticmethod
    def forward(ctx, logits: Tensor, index: Tensor, num_segments: int, ptr: Tensor | None) -> Tensor:
        finfo = torch.finfo(logits.dtype)
        # +inf would make (l - max) NaN; the largest finite value keeps the result a softmax.
        z = logits.clamp(max=finfo.max)
        top = _extremum_forward(z, index, num_segments, ptr, "max")
        # A segment whose logits are all -inf has max -inf; shift it by 0 so exp gives 0, not NaN.
        top = torch.where(top == float("-inf"), top.new_zeros(()), top)
        z = z.sub_(top.index_select(0, index)).exp_()
        total = _sum_forward(z, index, num_segments, ptr).clamp_(min=finfo.tiny)
        y = z.div_(total.index_select(0, index))
        ctx.save_for_backward(y, index)
        ctx.num_segments, ctx.ptr = num_segments, ptr
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        y, index = ctx.saved_tensors
        dot = segment_sum(grad * y, index, ctx.num_segments, ctx.ptr)
        return y * (grad - dot.index_select(0, index)), None, None, None


def segment_softmax(logits: Tensor, index: Tensor, num_segments: int, ptr: Tensor | None = None) -> Tensor:
    """Softmax over the rows of each segment: ``y[e] = exp(l[e]) / Σ_{f: index[f] = index[e]} exp(l[f])``.

    Computed as ``exp(l - max_seg l)`` (shift-invariant, so it never overflows). Each column
    (e.g. each attention head) is normalised separately. ``+inf`` logits are treated as the
    largest finite value; a segment whose logits are all ``-inf`` gets weights 0 (not NaN);
    NaN logits propagate NaN.

    Args:
        logits: unnormalised scores, float.
        index: segment of each row (for attention: the destination node of each edge).
        num_segments: number of segments ``S``.
        ptr: optional CSR offsets of a sorted ``index`` (faster kernels on CPU).

    Shapes:
        logits ``(E,)`` or ``(E, H, ...)``, index ``(E,)`` → same shape as ``logits``.
    """
    _check(logits, index, num_segments, ptr, "segment_softmax")
    if not logits.is_floating_point():
        raise DataError(f"segment_softmax: logits must be floating point, found {logits.dtype}")
    return _SegmentSoftmax.apply(logits, index, num_segments, ptr)


# ----------------------------------------------------------------------------- dispatch
_REDUCERS = {"sum": segment_sum, "mean": segment_mean, "max": segment_max, "min": segment_min}
REDUCTIONS = tuple(sorted(_REDUCERS))
"""Names accepted by :func:`scatter`'s ``reduce``."""


def scatter(
    x: Tensor, index: Tensor, num_segments: int, reduce: str = "sum", ptr: Tensor | None = None
) -> Tensor:
    """Reduce rows of ``x`` into segments with ``reduce`` ∈ {sum, mean, max, min}: ``out[s] = ⊕_{index[e]=s} x[e]``.

    Raises:
        ValueError: for any other ``reduce`` name (the message lists the valid ones).

    Shapes:
        x ``(E, *)``, index ``(E,)``, ptr ``(S + 1,)`` → ``(S, *)``; empty segments are 0.
    """
    fn = _REDUCERS.get(reduce) if isinstance(reduce, str) else None
    if fn is None:
        hint = did_you_mean(str(reduce), REDUCTIONS)
        hint = hint if hint.startswith("; did you mean") else ""
        valid = ", ".join(f"`{r}`" for r in REDUCTIONS)
        raise ValueError(f"scatter: unknown reduce `{reduce}`{hint}; valid names are {valid}")
    return fn(x, index, num_segments, ptr)


__all__ = [
    "REDUCTIONS",
    "index_add_rows",
    "scatter",
    "segment_max",
    "segment_mean",
    "segment_min",
    "segment_softmax",
    "segment_sum",
]
