"""Autograd functions over graphdl's fused CPU edge kernels (:mod:`graphdl.ops.kernels`).

Each function takes the batch's CSR (rows = destinations, entries in edge order: a Graph's
edges are dst-sorted) and its transpose ``csr_t`` (rows = sources, ``col`` = destinations,
``perm`` = the edge of each entry), as ``graphdl.nn.conv._csr_pair`` caches them.

* :func:`relu_edge_sum` — GINE (Hu et al. 2020, eq. 2): ``out_i = Σ_{j->i} ReLU(x_j + e_ji)``.
* :func:`gated_sum` — ResGatedGraphConv (Bresson & Laurent 2017, eq. 11):
  ``out_i = Σ_{j->i} σ(k_i + q_j) ⊙ v_j``.
* :func:`max_aggregate` — GraphSAGE's max / max-pool aggregation ``out_i = max_{j->i} x_j``.
* :func:`gated_edge` — GatedGCN (Dwivedi et al. 2020, eqs. 25–27): ``ê_ji = a_i + b_j (+ c_ji)``,
  ``out_i = Σ σ(ê) ⊙ v_j`` divided by ``Σ σ(ê) + ε`` when ``eps`` is given; returns ``(out, ê)``.

Backward passes are the kernels' own (first derivatives, with gates recomputed rather than
stored); under ``create_graph`` (double backward) they differentiate the torch-op reference
formulas instead, so higher derivatives stay exact. Callers check
:func:`graphdl.ops.kernels.usable` first; the torch-op paths remain for every other case.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function

from graphdl.ops.csr import CSR
from graphdl.ops.kernels import index_pair, ops

_idx = index_pair


def _edges(csr: CSR) -> tuple[Tensor, Tensor]:
    """``(src, dst)`` of every entry of a dst-row CSR, in entry order."""
    return csr.col.long(), csr.row.long()


def _relu_edge_sum_reference(x: Tensor, e: Tensor, csr: CSR) -> Tensor:
    src, dst = _edges(csr)
    msg = torch.relu(x.index_select(0, src) + e)
    return torch.zeros(csr.num_rows, x.size(1), dtype=x.dtype, device=x.device).index_add(0, dst, msg)


def _grad_through(fn, inputs, grads_out):
    """Double backward: gradients of ``fn(*inputs)`` (torch-op reference) wrt those inputs that
    require grad, with ``create_graph`` so higher derivatives flow to their history."""
    outs = fn(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    pairs = [(o, g) for o, g in zip(outs, grads_out) if g is not None]
    wrt = [t for t in inputs if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], create_graph=True,
                                   allow_unused=True)) if wrt else iter(())
    return [next(got) if (t is not None and t.requires_grad) else None for t in inputs]


class _ReluEdgeSumK(Function):
    @staticmethod
    def forward(ctx, x, e, csr, csr_t):
        rowptr, col = _idx(csr)
        ctx.save_for_backward(x, e)
        ctx.csrs = (csr, csr_t)
        return ops().relu_sum(rowptr, col, x, e)

    @staticmethod
    def backward(ctx, grad):
        x, e = ctx.saved_tensors
        csr, csr_t = ctx.csrs
        if torch.is_grad_enabled():  # double backward: differentiate the reference
            gx, ge = _grad_through(lambda a, b: _relu_edge_sum_reference(a, b, csr), [x, e], [grad])
            return gx, ge, None, None
        rowptr, col = _idx(csr)
        ge = ops().relu_sum_backward(rowptr, col, x, e, grad.contiguous())
        gx = ops().csr_sum_rows(csr_t.rowptr, csr_t.perm, ge) if ctx.needs_input_grad[0] else None
        return gx, (ge if ctx.needs_input_grad[1] else None), None, None


def relu_edge_sum(x: Tensor, e: Tensor, csr: CSR, csr_t: CSR) -> Tensor:
    """GINE's aggregation ``out_i = Σ_{j->i} ReLU(x_j + e_ji)`` without an ``(E, C)`` message.

    Shapes: ``x (N, C)``, ``e (E, C)`` in edge order → ``(N, C)``. Backward writes ``∂e``
    ``(E, C)`` (the mask recomputed from ``x`` and ``e``) and sums it per source for ``∂x``."""
    return _ReluEdgeSumK.apply(x.contiguous(), e.contiguous(), csr, csr_t)


def gated_sum_reference(k: Tensor, q: Tensor, v: Tensor, csr: CSR) -> Tensor:
    """``Σ_{j->i} σ(k_i + q_j) ⊙ v_j`` in plain differentiable ops (the reference of :func:`gated_sum`)."""
    src, dst = _edges(csr)
    msg = torch.sigmoid(k.index_select(0, dst) + q.index_select(0, src)) * v.index_select(0, src)
    return torch.zeros(csr.num_rows, v.size(1), dtype=v.dtype, device=v.device).index_add(0, dst, msg)


class _GatedSumK(Function):
    @staticmethod
    def forward(ctx, k, q, v, csr, csr_t):
        rowptr, col = _idx(csr)
        ctx.save_for_backward(k, q, v)
        ctx.csrs = (csr, csr_t)
        return ops().gated_sum(rowptr, col, k, q, v)

    @staticmethod
    def backward(ctx, grad):
        k, q, v = ctx.saved_tensors
        csr, csr_t = ctx.csrs
        if torch.is_grad_enabled():  # double backward: differentiate the reference
            gk, gq, gv = _grad_through(lambda a, b, c: gated_sum_reference(a, b, c, csr), [k, q, v], [grad])
            return gk, gq, gv, None, None
        grad = grad.contiguous()
        need = ctx.needs_input_grad
        gk = gq = gv = None
        if need[0]:
            rowptr, col = _idx(csr)
            gk = ops().gated_sum_backward_dst(rowptr, col, k, q, v, grad)
        if need[1] or need[2]:
            t_rowptr, t_col = _idx(csr_t)
            gq, gv = ops().gated_sum_backward_src(t_rowptr, t_col, k, q, v, grad)
        return gk, (gq if need[1] else None), (gv if need[2] else None), None, None


def gated_sum(k: Tensor, q: Tensor, v: Tensor, csr: CSR, csr_t: CSR) -> Tensor:
    """ResGatedGraphConv's aggregation ``out_i = Σ_{j->i} σ(k_i + q_j) ⊙ v_j``.

    No ``(E, C)`` tensor in forward or backward: backward recomputes each gate in one pass over
    the destinations (``∂k``) and one over the sources (``∂q``, ``∂v``).

    Shapes: ``k``, ``q``, ``v`` ``(N, C)`` → ``(N, C)``."""
    return _GatedSumK.apply(k.contiguous(), q.contiguous(), v.contiguous(), csr, csr_t)


class _GatedEdgeK(Function):
    @staticmethod
    def forward(ctx, ax, bx, vx, ce, csr, csr_t, eps, into_ce):
        ctx.set_materialize_grads(False)
        rowptr, col = _idx(csr)
        num, den, e_hat = ops().gated_edge_forward(rowptr, col, ax, bx, ce, vx, eps is not None, into_ce)
        if into_ce:
            ctx.mark_dirty(ce)
        if eps is not None:
            den = den.add_(eps)
            agg = num.div_(den)
        else:
            den, agg = None, num
        ctx.save_for_backward(ax, bx, vx, ce, e_hat, agg, den)
        ctx.csrs, ctx.eps = (csr, csr_t), eps
        return agg, e_hat

    @staticmethod
    def backward(ctx, g_agg, g_ehat):
        from graphdl.nn.conv import gated_aggregate_reference

        ax, bx, vx, ce, e_hat, agg, den = ctx.saved_tensors
        csr, csr_t = ctx.csrs
        need = ctx.needs_input_grad
        if g_agg is None and g_ehat is None:
            return (None,) * 8
        if torch.is_grad_enabled():  # double backward: differentiate the reference
            src, dst = _edges(csr)

            def ref(a, b, v, c):
                return gated_aggregate_reference(a, b, v, c, src, dst, csr.num_rows, ctx.eps)

            ga, gb, gv, gc = _grad_through(ref, [ax, bx, vx, ce], [g_agg, g_ehat])
            return ga, gb, gv, gc, None, None, None, None
        g_num = torch.zeros_like(agg) if g_agg is None else (g_agg / den if den is not None else g_agg.contiguous())
        g_den = None if den is None or g_agg is None else (g_num * agg).neg_()
        rowptr, col = _idx(csr)
        d, gax = ops().gated_edge_backward_dst(rowptr, col, vx, e_hat, g_num, g_den,
                                               None if g_ehat is None else g_ehat.contiguous())
        gbx = gvx = None
        if need[1] or need[2]:
            t_rowptr, t_col = _idx(csr_t)
            gbx, gvx = ops().gated_edge_backward_src(t_rowptr, t_col, csr_t.perm, e_hat, d, g_num)
        return (gax if need[0] else None, gbx if need[1] else None, gvx if need[2] else None,
                d if need[3] else None, None, None, None, None)


def gated_edge(ax: Tensor, bx: Tensor, vx: Tensor, ce: Tensor | None, csr: CSR, csr_t: CSR,
               eps: float | None, overwrite_ce: bool = False) -> tuple[Tensor, Tensor]:
    """GatedGCN's gating: ``ê_ji = ax_i + bx_j (+ ce_ji)``, ``agg_i = Σ σ(ê_ji) ⊙ vx_j``, divided by
    ``Σ σ(ê_ji) + eps`` when ``eps`` is given. One pass writes ``ê`` (the layer's edge output) and
    the sums; the gate and the gated message are never stored (backward recomputes ``σ(ê)``).

    ``overwrite_ce``: write ``ê`` into ``ce``'s storage (one ``(E, C)`` allocation fewer) when the
    caller has no other use for ``ce``; ignored for a leaf that requires grad or a non-contiguous ``ce``.
    The edge's gradient is the same either way (``∂ce = ∂ê``).

    Shapes: ``ax``, ``bx``, ``vx`` ``(N, C)``, ``ce`` ``(E, C)`` or None → ``(agg (N, C), ê (E, C))``."""
    into = (overwrite_ce and ce is not None and ce.is_contiguous()
            and not (ce.is_leaf and ce.requires_grad) and ce._base is None)
    return _GatedEdgeK.apply(ax.contiguous(), bx.contiguous(), vx.contiguous(),
                             None if ce is None else ce.contiguous(), csr, csr_t, eps, into)


def max_aggregate_reference(x: Tensor, csr: CSR) -> Tensor:
    """``out_i = max_{j->i} x_j`` by a gather and :func:`graphdl.ops.segment_max` (the reference of
    :func:`max_aggregate`; same tie rule: ties split the gradient equally)."""
    from graphdl.ops.segment import segment_max

    src, dst = _edges(csr)
    return segment_max(x.index_select(0, src), dst, csr.num_rows, csr.rowptr.long())


class _MaxAggregateK(Function):
    @staticmethod
    def forward(ctx, x, csr, csr_t):
        rowptr, col = _idx(csr)
        out = ops().csr_max(rowptr, col, x)
        ctx.save_for_backward(x, out)
        ctx.csrs = (csr, csr_t)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, out = ctx.saved_tensors
        csr, csr_t = ctx.csrs
        if torch.is_grad_enabled():  # double backward: differentiate the reference
            (gx,) = _grad_through(lambda a: max_aggregate_reference(a, csr), [x], [grad])
            return gx, None, None
        rowptr, col = _idx(csr)
        share = ops().csr_max_share(rowptr, col, x, out, grad.contiguous())
        t_rowptr, t_col = _idx(csr_t)
        return ops().csr_max_backward_src(t_rowptr, t_col, x, out, share), None, None


def max_aggregate(x: Tensor, csr: CSR, csr_t: CSR) -> Tensor:
    """``out_i = max_{j->i} x_j`` elementwise (0 for a node without in-edges; NaN propagates), the
    max / max-pool aggregation of GraphSAGE (Hamilton et al. 2017, eq. 3) without ``(E, C)`` rows.

    The gradient of ``out_i`` goes to the in-edges whose source attains the maximum, split equally
    between ties (as :func:`graphdl.ops.segment_max`); backward counts ties per destination, then
    sums shares per source over the transposed CSR.

    Shapes: ``x (N, C)`` → ``(N, C)``."""
    return _MaxAggregateK.apply(x.contiguous(), csr, csr_t)


def edge_gather_add_reference(base, yd, ys, bias, csr: CSR) -> Tensor:
    """:func:`edge_gather_add` in plain ops (gathers and additions)."""
    src, dst = _edges(csr)
    out = None
    for t in (base, None if yd is None else yd.index_select(0, dst), None if ys is None else ys.index_select(0, src)):
        if t is not None:
            out = t if out is None else out + t
    return out if bias is None else out + bias


class _EdgeGatherAddK(Function):
    @staticmethod
    def forward(ctx, base, yd, ys, bias, csr, csr_t, channels, into):
        rowptr, col = _idx(csr)
        out = ops().edge_gather_add(rowptr, col, base, yd, ys, bias, channels, into)
        if into:
            ctx.mark_dirty(base)
        ctx.csrs = (csr, csr_t)
        ctx.num_nodes = csr.num_rows
        return out

    @staticmethod
    def backward(ctx, grad):
        csr, csr_t = ctx.csrs
        need = ctx.needs_input_grad
        gb = grad if need[0] else None
        gbias = grad.sum(0) if need[3] else None
        if torch.is_grad_enabled():  # double backward: the same sums in differentiable torch ops
            src, dst = _edges(csr)
            zeros = grad.new_zeros(ctx.num_nodes, grad.size(1))
            gd = zeros.index_add(0, dst, grad) if need[1] else None
            gs = zeros.index_add(0, src, grad) if need[2] else None
            return gb, gd, gs, gbias, None, None, None, None
        grad = grad.contiguous()
        gd = ops().segment_sum_rows(csr.rowptr, grad) if need[1] else None
        gs = ops().csr_sum_rows(csr_t.rowptr, csr_t.perm, grad) if need[2] else None
        return gb, gd, gs, gbias, None, None, None, None


def edge_gather_add(base: Tensor | None, yd: Tensor | None, ys: Tensor | None, bias: Tensor | None, csr: CSR,
                    csr_t: CSR, overwrite_base: bool = False) -> Tensor:
    """``out_e = base_e + yd_{dst e} + ys_{src e} + bias`` for every edge, in one pass (each term
    optional): the first layer of an edge MLP whose node parts were multiplied on the nodes
    (:func:`graphdl.nn.generic.split_linear`), without gathered ``(E, C)`` copies or partial sums.
    Backward: ``∂base = ∂out``, ``∂yd`` / ``∂ys`` = sums of ``∂out`` per destination / source.

    ``overwrite_base``: write the result into ``base`` (a fresh tensor the caller has no other use
    for); ignored for a leaf that requires grad, a view or a non-contiguous tensor.

    Shapes: ``base (E, C)``, ``yd``, ``ys`` ``(N, C)``, ``bias (C,)`` → ``(E, C)``."""
    parts = [t for t in (base, yd, ys) if t is not None]
    channels = parts[0].size(1)
    into = (overwrite_base and base is not None and base.is_contiguous() and base._base is None
            and not (base.is_leaf and base.requires_grad))
    c = (lambda t: None if t is None else t.contiguous())
    return _EdgeGatherAddK.apply(c(base), c(yd), c(ys), c(bias), csr, csr_t, channels, into)


__all__ = ["edge_gather_add", "edge_gather_add_reference", "gated_edge", "gated_sum", "gated_sum_reference", "max_aggregate", "max_aggregate_reference",
           "relu_edge_sum"]
