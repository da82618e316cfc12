"""Sparse (CSR) × dense products with a custom backward, for copy-source message passing.

``spmm(csr, x, values)`` computes ``out[i] = Σ_{entries e of row i} values[e] · x[col[e]]``:
with ``csr = g.csr()`` (rows = destinations, columns = sources) that is the sum of the
(weighted) messages ``x[src]`` arriving at each node, without materialising ``(E, C)`` messages.

Kernels (chosen per call from dtype and device; no host sync):

* CPU float32/float64: graphdl's row-parallel C++ kernels (``csr_sum`` / ``csr_sum_heads`` and
  ``sddmm_heads`` of :mod:`graphdl.ops.kernels`; the sum about 2x MKL's CSR product on 64
  channels, all heads in one pass), when they are built;
* CPU float32/float64, CUDA float16/bfloat16/float32/float64: ``torch.sparse_csr_tensor``
  ``@ x`` (MKL / cuSPARSE). Building the sparse tensor only wraps the CSR's index tensors
  (about 10 µs; with ``values=None`` a ``(nnz,)`` vector of ones is allocated, about 0.2 ms
  for 500k entries). Multi-head products run one CSR product per head (``H`` is small).
* anything else (other dtypes, devices without sparse CSR kernels, a build without MKL):
  gather + ``index_add_``, as :func:`gather_scatter_reference`.

Backward: ``∂x = Aᵀ · ∂out`` is the same product on the transposed CSR (``csr_t``; its
entries are mapped back to this CSR's entries to gather ``values`` in transposed order), and
``∂values[e] = ⟨∂out[row[e]], x[col[e]]⟩`` is a sampled dense-dense product (SDDMM,
``torch.sparse.sampled_addmm`` where available). Both backward kernels are themselves
differentiable autograd functions of each other, so double backward works.

Under ``torch.compile`` both products run as :class:`_CsrSumTraced` / :class:`_SddmmTraced`:
autograd functions whose inputs are tensors only (the CSR, its transpose and the maps between
their entries, built inside the compiled graph), with forward and backward written as gathers
and ``torch.segment_reduce`` over row-sorted entries. No sparse tensor (untraceable), no Python
object on ``ctx``: Dynamo cannot soundly trace the eager functions, whose lazily transposed
pattern lifted a cached CSR's tensors and sizes into the traced backward as free variables of
the outer graph (``InternalTorchDynamoError: Argument '..._csr_t_num_rows' ... does not
belong to this Graph``). And no scatter: a plain gather + ``index_add_`` formulation has an
``index_add_`` in its backward, which Inductor (torch 2.13, CPU) fuses wrongly with batch-norm
backward kernels in deep residual stacks (GIN: gradients of the first layers off by O(1)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd import Function

from graphdl.errors import DataError
from graphdl.ops import kernels
from graphdl.ops.csr import CSR
from graphdl.ops.segment import index_add_rows  # importing segment also silences torch's CSR beta notice

_SPARSE_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
}
_SDDMM_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64),
}
_REDUCES = ("mean", "sum")


def _sparse_ok(x: Tensor, table: dict) -> bool:
    return x.dtype in table.get(x.device.type, ())


# --------------------------------------------------------------------------- patterns
class _Pattern:
    """A CSR plus, built on first use, its transpose and the map between their entries.

    ``t2c[j]`` is the entry of ``csr`` that entry ``j`` of ``csr_t`` stores, so values given
    in ``csr`` entry order read ``values[t2c]`` in ``csr_t`` entry order.
    """

    __slots__ = ("_c2t", "_csr_t", "_t2c", "_transposed", "csr")

    def __init__(self, csr: CSR, csr_t: CSR | None = None, c2t: Tensor | None = None):
        self.csr = csr
        self._csr_t = csr_t
        self._t2c: Tensor | None = None
        self._c2t = c2t  # the inverse map, when known: t2c is then its inverse (built lazily)
        self._transposed: _Pattern | None = None

    def t2c(self) -> Tensor:
        if self._t2c is None:
            csr = self.csr
            if self._c2t is not None:
                self._t2c = _inverse(self._c2t)
            elif self._csr_t is None:
                self._csr_t = _transpose(csr)
                self._t2c = self._csr_t.perm
            else:
                t = self._csr_t
                t2e = t.perm if t.perm is not None else torch.arange(t.nnz, device=t.col.device)
                self._t2c = t2e if csr.perm is None else _inverse(csr.perm).index_select(0, t2e)
        return self._t2c  # type: ignore[return-value]

    def transpose(self) -> _Pattern:
        if self._transposed is None:
            t2c = self.t2c()
            self._transposed = _Pattern(self._csr_t, self.csr, c2t=t2c)  # type: ignore[arg-type]
            self._transposed._transposed = self
        return self._transposed


def _transpose(csr: CSR) -> CSR:
    """The transposed CSR; its ``perm`` maps each of its entries to the entry of ``csr`` it copies.

    Like ``CSR.from_coo`` but without ``bincount`` (a host sync on CUDA, untraceable by
    torch.compile): row offsets come from ``searchsorted`` on the sorted rows.
    """
    if kernels.usable_index(csr.col, csr.row):  # entries are row-sorted: a stable sort by column is the transpose
        rowptr, perm, row_t, col_t = kernels.ops().counting_sort(csr.col.contiguous(), csr.row.contiguous(),
                                                                 csr.num_cols)
        return CSR(rowptr, col_t, row_t, perm, csr.num_cols, csr.num_rows)
    key = csr.col * max(csr.num_rows, 1) + csr.row
    perm = torch.sort(key, stable=True).indices
    row_t, col_t = csr.col.index_select(0, perm), csr.row.index_select(0, perm)
    bounds = torch.arange(csr.num_cols + 1, dtype=row_t.dtype, device=row_t.device)
    rowptr = torch.searchsorted(row_t, bounds)
    return CSR(rowptr, col_t, row_t, perm, csr.num_cols, csr.num_rows)


def _inverse(perm: Tensor) -> Tensor:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), dtype=perm.dtype, device=perm.device)
    return inv


# ---------------------------------------------------------------------------- kernels
def _sparse_csr(rowptr: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    return torch.sparse_csr_tensor(rowptr, col.to(rowptr.dtype), values, shape, check_invariants=False)


def _csr_mm(a: Tensor, x: Tensor) -> Tensor:
    """``a @ x`` for a sparse CSR ``a``. On CPU, ``addmm`` into a fresh output with ``beta=0``
    skips the zero fill and the extra copy ``a @ x`` makes around MKL: 4.2 -> 2.0 ms for a
    50k x 50k, 500k-entry product of 64 float32 channels (2 cores)."""
    if x.device.type != "cpu":
        return a @ x
    out = x.new_empty(a.size(0), x.size(1))
    return torch.addmm(out, a, x, beta=0.0, out=out)


def _gather_scatter(csr: CSR, x: Tensor, values: Tensor | None) -> Tensor:
    msg = x.index_select(0, csr.col)
    if values is not None:
        msg = msg * values.view(values.shape + (1,) * (x.dim() - values.dim()))
    return index_add_rows(x.new_zeros((csr.num_rows,) + tuple(x.shape[1:])), csr.row, msg)


def _gather_dot(csr: CSR, a: Tensor, b: Tensor) -> Tensor:
    return (a.index_select(0, csr.row) * b.index_select(0, csr.col)).sum(-1)


def _spmm_sum(pattern: _Pattern, x: Tensor, values: Tensor | None) -> Tensor:
    """Forward of the sum product: ``x`` ``(num_cols, F)`` with ``values`` ``(nnz,)`` or None,
    or ``x`` ``(num_cols, H, F)`` with ``values`` ``(nnz, H)``."""
    csr = pattern.csr
    nrows, nnz = csr.num_rows, csr.nnz
    if nnz == 0 or nrows == 0 or x[0].numel() == 0:
        return x.new_zeros((nrows,) + tuple(x.shape[1:]))
    if x.dim() in (2, 3) and kernels.usable(x, values):  # graphdl's own row-parallel kernels (ops/kernels.py)
        rowptr, col = kernels.index_pair(csr)
        if x.dim() == 3:  # heads: values (nnz, H)
            return kernels.ops().csr_sum_heads(rowptr, col, values.contiguous(), x.contiguous())  # type: ignore[union-attr]
        return kernels.ops().csr_sum(rowptr, col, None if values is None else values.contiguous(), x.contiguous())
    if _sparse_ok(x, _SPARSE_DTYPES):
        try:
            if x.dim() == 2:
                vals = x.new_ones(nnz) if values is None else values.contiguous()
                return _csr_mm(_sparse_csr(csr.rowptr, csr.col, vals, (nrows, csr.num_cols)), x)
            # One product per head on contiguous slices. Measured against one block-diagonal
            # product of all heads: 10-20% faster on an idle CPU, but 8 parallel regions instead
            # of 1, so it suffers more when the cores are oversubscribed.
            rows, cols = nrows, csr.num_cols
            xt, vt = x.transpose(0, 1).contiguous(), values.t().contiguous()  # type: ignore[union-attr]
            return torch.stack(
                [_csr_mm(_sparse_csr(csr.rowptr, csr.col, vt[h], (rows, cols)), xt[h]) for h in range(x.size(1))], 1
            )
        except (RuntimeError, NotImplementedError):  # no MKL/cuSPARSE kernel here: general path
            pass
    return _gather_scatter(csr, x, values)


def _sddmm(pattern: _Pattern, a: Tensor, b: Tensor) -> Tensor:
    """``out[e] = ⟨a[row[e]], b[col[e]]⟩`` over the last dim: ``(nnz,)``, or ``(nnz, H)`` with heads."""
    csr = pattern.csr
    nnz = csr.nnz
    if kernels.usable(a, b) and a.dtype == b.dtype:  # graphdl's row-parallel kernel
        rowptr, col = kernels.index_pair(csr)
        a3, b3 = (a.unsqueeze(1), b.unsqueeze(1)) if a.dim() == 2 else (a, b)
        out = kernels.ops().sddmm_heads(rowptr, col, a3.contiguous(), b3.contiguous())
        return out.squeeze(1) if a.dim() == 2 else out
    if nnz == 0 or a.size(-1) == 0 or not _sparse_ok(a, _SDDMM_DTYPES):
        return _gather_dot(csr, a, b)
    try:
        # beta=0 still reads the mask's values (0·NaN = NaN), so they must be zeros, not empty.
        mask = _sparse_csr(csr.rowptr, csr.col, a.new_zeros(nnz), (csr.num_rows, csr.num_cols))
        if a.dim() == 2:
            return torch.sparse.sampled_addmm(mask, a, b.t(), beta=0.0).values()
        at, bt = a.transpose(0, 1).contiguous(), b.transpose(0, 1).contiguous()
        dots = [
            torch.sparse.sampled_addmm(mask, at[h], bt[h].t(), beta=0.0).values() for h in range(a.size(1))
        ]
        return torch.stack(dots, 1)
    except (RuntimeError, NotImplementedError):
        return _gather_dot(csr, a, b)


class _SpmmSum(Function):
    """``out = A(values) @ x``; backward: ``∂x = Aᵀ @ ∂out``, ``∂values = SDDMM(∂out, x)``."""

    @staticmethod
    def forward(ctx, pattern: _Pattern, x: Tensor, values: Tensor | None) -> Tensor:
        ctx.pattern = pattern
        ctx.save_for_backward(x, values)
        return _spmm_sum(pattern, x, values)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, values = ctx.saved_tensors
        pattern: _Pattern = ctx.pattern
        grad_x = grad_values = None
        if ctx.needs_input_grad[1]:
            tp = pattern.transpose()
            values_t = None if values is None else values.index_select(0, pattern.t2c())
            grad_x = _SpmmSum.apply(tp, grad, values_t)
        if ctx.needs_input_grad[2]:
            grad_values = _Sddmm.apply(pattern, grad, x)
        return None, grad_x, grad_values


class _Sddmm(Function):
    """``out[e] = ⟨a[row e], b[col e]⟩``; backward ``∂a = A(∂out) @ b``, ``∂b = Aᵀ(∂out) @ a``."""

    @staticmethod
    def forward(ctx, pattern: _Pattern, a: Tensor, b: Tensor) -> Tensor:
        ctx.pattern = pattern
        ctx.save_for_backward(a, b)
        return _sddmm(pattern, a, b)

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, b = ctx.saved_tensors
        pattern: _Pattern = ctx.pattern
        grad_a = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_a = _SpmmSum.apply(pattern, b, grad)
        if ctx.needs_input_grad[2]:
            grad_b = _SpmmSum.apply(pattern.transpose(), a, grad.index_select(0, pattern.t2c()))
        return None, grad_a, grad_b


# ------------------------------------------------------------------ torch.compile path
def _row_sum(x: Tensor, values: Tensor | None, col: Tensor, rowptr: Tensor) -> Tensor:
    """``out[i] = Σ_{e in row i} values[e] · x[col[e]]`` by a gather and a segment reduction."""
    msg = x.index_select(0, col)
    if values is not None:
        msg = msg * values.view(values.shape + (1,) * (x.dim() - values.dim()))
    return torch.segment_reduce(msg, "sum", offsets=rowptr.long(), axis=0)


class _CsrSumTraced(Function):
    """``A(values) @ x`` for torch.compile; ``(rowptr, col, row)`` is A, ``t_*`` its transpose,
    ``t2c`` / ``c2t`` map transposed entries to A's and back. Backward: ``∂x = Aᵀ(values) @ ∂out``
    (this function on the transpose), ``∂values = SDDMM(∂out, x)``; twice differentiable."""

    @staticmethod
    def forward(ctx, x, values, rowptr, col, row, t_rowptr, t_col, t_row, t2c, c2t):
        ctx.save_for_backward(x, values, rowptr, col, row, t_rowptr, t_col, t_row, t2c, c2t)
        return _row_sum(x, values, col, rowptr)

    @staticmethod
    def backward(ctx, grad):
        x, values, rowptr, col, row, t_rowptr, t_col, t_row, t2c, c2t = ctx.saved_tensors
        grad_x = grad_values = None
        if ctx.needs_input_grad[0]:
            values_t = None if values is None else values.index_select(0, t2c)
            grad_x = _CsrSumTraced.apply(grad, values_t, t_rowptr, t_col, t_row, rowptr, col, row, c2t, t2c)
        if ctx.needs_input_grad[1]:
            grad_values = _SddmmTraced.apply(grad, x, rowptr, col, row, t_rowptr, t_col, t_row, t2c, c2t)
        return (grad_x, grad_values) + (None,) * 8


class _SddmmTraced(Function):
    """``out[e] = ⟨a[row e], b[col e]⟩`` for torch.compile (structure as :class:`_CsrSumTraced`).
    Backward: ``∂a = A(∂out) @ b``, ``∂b = Aᵀ(∂out) @ a``; twice differentiable."""

    @staticmethod
    def forward(ctx, a, b, rowptr, col, row, t_rowptr, t_col, t_row, t2c, c2t):
        ctx.save_for_backward(a, b, rowptr, col, row, t_rowptr, t_col, t_row, t2c, c2t)
        return (a.index_select(0, row) * b.index_select(0, col)).sum(-1)

    @staticmethod
    def backward(ctx, grad):
        a, b, rowptr, col, row, t_rowptr, t_col, t_row, t2c, c2t = ctx.saved_tensors
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = _CsrSumTraced.apply(b, grad, rowptr, col, row, t_rowptr, t_col, t_row, t2c, c2t)
        if ctx.needs_input_grad[1]:
            grad_b = _CsrSumTraced.apply(a, grad.index_select(0, t2c), t_rowptr, t_col, t_row,
                                         rowptr, col, row, c2t, t2c)
        return (grad_a, grad_b) + (None,) * 8


def _traced_structure(csr: CSR, csr_t: CSR | None) -> tuple[Tensor, ...]:
    """``(rowptr, col, row, t_rowptr, t_col, t_row, t2c, c2t)`` for the traced functions."""
    pattern = _Pattern(csr, csr_t)
    t2c = pattern.t2c()
    t = pattern.transpose().csr
    c2t = torch.argsort(t2c)  # the inverse permutation (a sort: no scatter in the graph)
    return csr.rowptr, csr.col, csr.row, t.rowptr, t.col, t.row, t2c, c2t


# ----------------------------------------------------------------------------- public
def _check(csr: CSR, x: Tensor, values: Tensor | None, reduce: str, csr_t: CSR | None, name: str) -> None:
    if reduce not in _REDUCES:
        raise ValueError(f"{name}: unknown reduce `{reduce}`; valid names are `sum`, `mean`")
    if not isinstance(csr, CSR):
        raise DataError(
            f"{name}: csr must be a graphdl.ops.CSR (e.g. `graph.csr()`), found {type(csr).__name__}"
        )
    if x.dim() < 2 or x.size(0) != csr.num_cols:
        raise DataError(
            f"{name}: x must have shape ({csr.num_cols}, C) or ({csr.num_cols}, H, C) "
            f"(one row per CSR column), found {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise DataError(f"{name}: x must be floating point, found {x.dtype}")
    if x.device != csr.col.device:
        raise DataError(
            f"{name}: x is on {x.device} but the CSR is on {csr.col.device}; use `csr.to(device)`"
        )
    if values is not None:
        if values.dtype != x.dtype or values.device != x.device:
            raise DataError(
                f"{name}: values ({values.dtype}, {values.device}) must match x ({x.dtype}, {x.device})"
            )
        ok = (values.dim() == 1 and values.numel() == csr.nnz) or (
            values.dim() == 2 and x.dim() == 3 and tuple(values.shape) == (csr.nnz, x.size(1))
        )
        if not ok:
            heads = f" or ({csr.nnz}, {x.size(1)}) for x with heads" if x.dim() == 3 else ""
            raise DataError(
                f"{name}: values must have shape ({csr.nnz},) (one per CSR entry){heads}, "
                f"found {tuple(values.shape)}"
            )
    if csr_t is not None and (csr_t.num_rows, csr_t.num_cols, csr_t.nnz) != (
        csr.num_cols,
        csr.num_rows,
        csr.nnz,
    ):
        raise DataError(
            f"{name}: csr_t is {csr_t.num_rows}x{csr_t.num_cols} with {csr_t.nnz} entries; the transpose of "
            f"this CSR is {csr.num_cols}x{csr.num_rows} with {csr.nnz} entries (use `graph.csr_t()`)"
        )


def _mean_scale(csr: CSR, out: Tensor) -> Tensor:
    deg = csr.degree().to(out.dtype).clamp_(min=1)
    return out / deg.view((-1,) + (1,) * (out.dim() - 1))


def spmm(
    csr: CSR,
    x: Tensor,
    values: Tensor | None = None,
    reduce: str = "sum",
    csr_t: CSR | None = None,
) -> Tensor:
    """Sparse × dense product: ``out[i] = ⊕_{e ∈ row i} values[e] · x[col[e]]``, ⊕ = sum or mean.

    With ``csr = graph.csr()`` this aggregates ``values``-weighted source features at each
    destination (GCN, SAGE, GIN; with per-head values, GAT). ``reduce="mean"`` divides by the
    row's entry count (empty rows give 0). Differentiable in ``x`` and ``values`` with a custom
    backward (and twice differentiable).

    Args:
        csr: sparse pattern, ``num_rows x num_cols``.
        x: dense input, one row per CSR column.
        values: weight of each entry, in the CSR's entry order (for ``graph.csr()``, edge
            order); ``None`` means all ones.
        reduce: ``"sum"`` or ``"mean"``.
        csr_t: the transposed CSR (``graph.csr_t()``), whose ``perm`` maps its entries to
            edge ids; used for the gradient wrt ``x``. Built once per call when omitted.

    Shapes:
        x ``(num_cols, *)`` with values ``(nnz,)`` or None → ``(num_rows, *)``;
        x ``(num_cols, H, C)`` with values ``(nnz, H)`` → ``(num_rows, H, C)``.
    """
    _check(csr, x, values, reduce, csr_t, "spmm")
    if torch.compiler.is_compiling():  # see the module docstring
        out = _CsrSumTraced.apply(x, values, *_traced_structure(csr, csr_t))
        return _mean_scale(csr, out) if reduce == "mean" else out
    pattern = _Pattern(csr, csr_t)
    if values is None or values.dim() == 1:
        # One weight per entry: trailing dims are just more columns of one product.
        out = _SpmmSum.apply(pattern, x.reshape(x.size(0), math.prod(x.shape[1:])), values)
        out = out.reshape((csr.num_rows,) + tuple(x.shape[1:]))
    else:
        out = _SpmmSum.apply(pattern, x, values)
    return _mean_scale(csr, out) if reduce == "mean" else out


def sddmm(csr: CSR, a: Tensor, b: Tensor, csr_t: CSR | None = None) -> Tensor:
    """Sampled dense-dense product: ``out[e] = ⟨a[row[e]], b[col[e]]⟩`` for every entry ``e`` of ``csr``.

    With ``csr = graph.csr()`` (rows = destinations) this is the dot-product attention logit
    ``q_i · k_j`` of every edge ``j -> i`` without materialising ``(E, C)`` gathers. The
    transpose of :func:`spmm` in its values; differentiable in ``a`` and ``b`` (twice).

    Args:
        csr: sparse pattern, ``num_rows x num_cols``.
        a: one row per CSR row; b: one row per CSR column.
        csr_t: the transposed CSR (``graph.csr_t()``), for the gradient wrt ``b``.

    Shapes:
        a ``(num_rows, C)``, b ``(num_cols, C)`` → ``(nnz,)``;
        a ``(num_rows, H, C)``, b ``(num_cols, H, C)`` → ``(nnz, H)``.
    """
    if (
        a.dim() not in (2, 3)
        or b.shape[1:] != a.shape[1:]
        or a.size(0) != csr.num_rows
        or b.size(0) != csr.num_cols
    ):
        raise DataError(
            f"sddmm: a must be ({csr.num_rows}, [H,] C) and b ({csr.num_cols}, [H,] C) with the same "
            f"trailing shape, found {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if not a.is_floating_point() or a.dtype != b.dtype or a.device != b.device or a.device != csr.col.device:
        raise DataError(
            f"sddmm: a ({a.dtype}, {a.device}) and b ({b.dtype}, {b.device}) must share one floating "
            f"dtype and the CSR's device ({csr.col.device})"
        )
    if torch.compiler.is_compiling():  # see the module docstring
        # a view of b: Dynamo refuses one tensor passed twice to an autograd function (sddmm(csr, h, h))
        return _SddmmTraced.apply(a, b.view_as(b), *_traced_structure(csr, csr_t))
    return _Sddmm.apply(_Pattern(csr, csr_t), a, b)


def gather_scatter_reference(
    csr: CSR, x: Tensor, values: Tensor | None = None, reduce: str = "sum"
) -> Tensor:
    """Reference for :func:`spmm` with plain ops: gather ``x[col]``, weight, ``index_add_`` into rows.

    Materialises the ``(nnz, *)`` messages; autograd supplies the backward.

    Shapes:
        as :func:`spmm`.
    """
    _check(csr, x, values, reduce, None, "gather_scatter_reference")
    out = _gather_scatter(csr, x, values)
    return _mean_scale(csr, out) if reduce == "mean" else out


__all__ = ["gather_scatter_reference", "sddmm", "spmm"]
