"""Classic message-passing convolutions: GCN, GraphSAGE, GIN, GINE, GatedGCN, MoNet.

Each block is one node-centric layer ``h_i' = U(h_i, ⊕_{j∈N(i)} M(h_i, h_j, e_ji))`` over the
edges of the batch (``j -> i``: row 0 of ``edge_index`` is the source ``j``, row 1 the
destination ``i``). Every one matches the PyTorch Geometric layer of the same name with
copied weights (``tests/nn/test_conv_parity.py``).

Lowerings (the block picks the cheapest one its message allows):

* copy-source messages with sum/mean (GCN, SAGE mean/sum, GIN, MoNet mean/sum): a CSR
  sparse × dense product (:func:`graphdl.ops.spmm`); no ``(E, C)`` message tensor exists,
  and the gradient is the same product on the transposed CSR;
* edge-dependent messages (GINE, GatedGCN, SAGE max): gather source rows, build the
  ``(E, C)`` messages, reduce them with a segment reduction over the dst-sorted edges
  (:func:`graphdl.ops.segment_sum` / :func:`~graphdl.ops.segment_max` with the CSR's
  ``rowptr``); on CPU the gathers' backward is a CSR selector product instead of
  ``index_add_`` (2-3x faster there).

The CSR products use 32-bit copies of the batch's CSR indices (cached), which MKL takes
without converting them on every call.

Normalisation coefficients that depend only on the graph (GCN without edge weights,
MoNet's degree pseudo-coordinates) are cached on the batch (``Graph._cache``), keyed by
the settings that shape them, so a model with several layers computes them once.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, field_validator
from torch import Tensor, nn
from torch.autograd import Function

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, DGLLowering, Signature, dgl_forward, register_block
from graphdl.nn.basic import FieldParams, _check_key
from graphdl.nn.mlp import MLP, ActName, BatchNorm1d, activation
from graphdl.ops import CSR, kernels, segment_max, segment_sum, spmm
from graphdl.ops.fused import gated_edge, gated_sum, max_aggregate, relu_edge_sum
from graphdl.types import FieldTable, Scalar, split_key

__all__ = ["GCN", "GIN", "GINE", "SAGE", "GatedGCN", "MoNet", "degree_pseudo", "gcn_norm"]


# ------------------------------------------------------------------------------ shared
class ConvParams(FieldParams):
    """Node field in (``input``, default ``node.h``), node field out (``output``, default
    the input's key), ``out_dim`` channels, ``bias``."""

    out_dim: PositiveInt
    bias: bool = True


def _node_dims(cls: type[Block], p: ConvParams, fields: FieldTable) -> int:
    """Width of the node input; errors when input/output are not node fields."""
    for what, key in (("input", p.input), ("output", p.out_key)):
        space = split_key(key)[0]
        if space != "node":
            raise InferenceError(
                f"{cls.name} reads and writes node fields, but `{what}: {key}` is a {space} field; "
                f"use a node field such as `node.h`"
            )
    return fields.need_scalar(p.input, cls.name)


def _edge_dim(cls: type[Block], key: str, fields: FieldTable, what: str) -> int:
    space = split_key(key)[0]
    if space != "edge":
        raise InferenceError(f"{cls.name}: `{what}: {key}` must be an edge field (e.g. `edge.e`), found a {space} field")
    return fields.need_scalar(key, cls.name)


def _glorot(t: Tensor) -> Tensor:
    """Glorot-uniform over the last two dims (the initialiser PyG uses for these weights)."""
    bound = math.sqrt(6.0 / (t.size(-2) + t.size(-1)))
    with torch.no_grad():
        return t.uniform_(-bound, bound)


def _csr_pair(g) -> tuple[CSR, CSR]:
    """The batch's CSR and its transpose with 32-bit ``rowptr``/``col`` (cached on the batch).

    MKL's sparse kernels take 32-bit indices; handed 64-bit ones, torch converts both index
    arrays on every product (measured: 48 -> 29 ms for one 50k x 50k, 500k-entry product
    of 64 channels on 2 loaded cores). Graphs beyond 2^31 entries keep 64-bit indices.
    """
    hit = g._cache.get("csr_int32")
    if hit is None:
        csr, csr_t = g.csr(), g.csr_t()
        if max(csr.nnz, csr.num_rows, csr.num_cols) < 2**31 - 1:
            csr = CSR(csr.rowptr.int(), csr.col.int(), csr.row, csr.perm, csr.num_rows, csr.num_cols)
            csr_t = CSR(csr_t.rowptr.int(), csr_t.col.int(), csr_t.row, csr_t.perm, csr_t.num_rows, csr_t.num_cols)
        hit = g._cache["csr_int32"] = (csr, csr_t)
    return hit  # type: ignore[return-value]


def _aggregate_copy(g, x: Tensor, reduce: str, values: Tensor | None = None) -> Tensor:
    """``out_i = ⊕_{j->i} values_ji · x_j`` (⊕ sum or mean) as a CSR product: ``(N, *) -> (N, *)``."""
    csr, csr_t = _csr_pair(g)
    return spmm(csr, x, values, reduce=reduce, csr_t=csr_t)


def _with_loops(rowptr: Tensor, row: Tensor, col: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Insert one ``(r, r)`` entry into every row of a column-sorted CSR, keeping columns sorted.

    Returns the new ``rowptr``, the new position of every old entry and of every loop, and
    the new ``col``. No sort: an entry moves down by its row index, plus one when its column
    is past the row's diagonal (the loop goes after any existing ``(r, r)`` entries).
    """
    e = col.numel()
    ar = torch.arange(n, device=col.device)
    after = (col > row).long()
    entry_pos = torch.arange(e, device=col.device) + row + after
    before = (rowptr[1:] - rowptr[:-1]) - segment_sum(after, row, n)  # entries of row r at or left of r
    loop_pos = rowptr[:-1] + ar + before
    new_col = torch.empty(e + n, dtype=torch.long, device=col.device)
    new_col[entry_pos] = col
    new_col[loop_pos] = ar
    new_rowptr = rowptr + torch.arange(n + 1, device=col.device)
    return new_rowptr, entry_pos, loop_pos, new_col


LOOPED_AFTER_USES = 16
"""Uses of a batch by blocks with a diagonal term after which :func:`_looped_pair` is built.

Building ``A + I`` and its transpose costs about as much as 6-30 products with a separate
diagonal multiply-add save (50k nodes, 500k edges, one thread: build ~28 ms; a cached product
over ``A + I`` is 1-5 ms faster than the plain CSR product plus ``addcmul``). A fresh batch per
step (molecules, sampled subgraphs) therefore never pays for it; a batch reused every epoch
(full-graph training, an evaluation set) builds it once, at its 16th use."""


def _use_looped(g) -> bool:
    """Whether this use of ``g`` runs over the cached ``A + I`` (see :data:`LOOPED_AFTER_USES`)."""
    if "csr_loops_int32" in g._cache:
        return True
    uses = g._cache["looped_uses"] = g._cache.get("looped_uses", 0) + 1
    return uses >= LOOPED_AFTER_USES


def _looped_pair(g) -> tuple[CSR, CSR, Tensor]:
    """The CSR of ``A + I`` and its transpose (32-bit indices), cached on the batch, and
    ``take``: the index of each ``A + I`` entry in ``cat([edge values (E), diagonal (N)])``.

    Folding a diagonal term (GCN's self-loops, GIN's ``(1 + ε) h_i``) into the product saves
    an ``(N, C)`` multiply-add forward and another backward.
    """
    hit = g._cache.get("csr_loops_int32")
    if hit is None:
        csr, csr_t = g.csr(), g.csr_t()
        n, e = g.num_nodes, g.num_edges
        ar = torch.arange(n, device=g.device)
        rowptr, pos, loop_pos, col = _with_loops(csr.rowptr, csr.row, csr.col, n)
        row = torch.empty_like(col)
        row[pos], row[loop_pos] = csr.row, ar
        take = torch.empty_like(col)
        take[pos], take[loop_pos] = torch.arange(e, device=g.device), e + ar
        rowptr_t, pos_t, loop_pos_t, col_t = _with_loops(csr_t.rowptr, csr_t.row, csr_t.col, n)
        row_t = torch.empty_like(col_t)
        row_t[pos_t], row_t[loop_pos_t] = csr_t.row, ar
        perm_t = torch.empty_like(col_t)  # transposed entry -> entry of A + I
        perm_t[pos_t], perm_t[loop_pos_t] = pos.index_select(0, csr_t.perm), loop_pos
        wide = max(e + n, n + 1) >= 2**31 - 1
        idx = (lambda t: t) if wide else (lambda t: t.int())
        hit = (CSR(idx(rowptr), idx(col), row, None, n, n), CSR(idx(rowptr_t), idx(col_t), row_t, perm_t, n, n), take)
        g._cache["csr_loops_int32"] = hit
    return hit  # type: ignore[return-value]



class _Gather(Function):
    """``x[index]`` for ``index`` = the edges' sources or destinations; the backward sums each
    node's edge gradients with a cached ``(N, E)`` CSR selector product (MKL), 2-3x faster on
    CPU than the ``index_add_`` of ``index_select``'s own backward."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, selector: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.selector = selector
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        return _SelectorSum.apply(grad, index, ctx.selector), None, None


class _SelectorSum(Function):
    """``selector @ rows``: per-node sums of edge rows; backward gathers (so double backward works)."""

    @staticmethod
    def forward(ctx, rows: Tensor, index: Tensor, selector: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.selector = selector
        out = _selector_mm(selector, rows.reshape(rows.size(0), -1))
        return out.reshape((selector.size(0),) + tuple(rows.shape[1:]))

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        return _Gather.apply(grad, index, ctx.selector), None, None


def _selector_mm(selector: Tensor, rows: Tensor) -> Tensor:
    """``selector @ rows`` via ``addmm`` into a fresh output (``beta=0`` skips the zero fill and
    the copy that ``@`` makes around MKL)."""
    out = rows.new_empty(selector.size(0), rows.size(1))
    return torch.addmm(out, selector, rows, beta=0.0, out=out)


def _selector(g, side: str, x: Tensor) -> Tensor | None:
    """The cached ``(N, E)`` 0/1 CSR matrix summing each node's out-edges (``src``) or
    in-edges (``dst``); None where the selector lowering does not apply (GPU, other dtypes,
    no edges, torch.compile, which cannot trace sparse tensors)."""
    if (x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or g.num_edges == 0
            or torch.compiler.is_compiling()):
        return None
    key = ("gather_selector", side, x.dtype)
    sel = g._cache.get(key)
    if sel is None:
        csr, csr_t = _csr_pair(g)
        e = g.num_edges
        if side == "src":  # rows = sources; csr_t's perm lists each source's edges
            rowptr, cols = csr_t.rowptr, csr_t.perm.to(csr_t.rowptr.dtype)
        else:  # edges are sorted by destination: row i holds edges rowptr[i]:rowptr[i+1]
            rowptr, cols = csr.rowptr, torch.arange(e, dtype=csr.rowptr.dtype, device=x.device)
        sel = torch.sparse_csr_tensor(rowptr, cols, torch.ones(e, dtype=x.dtype, device=x.device),
                                      (g.num_nodes, e), check_invariants=False)
        g._cache[key] = sel
    return sel


def _selectors(g, x: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(src selector, dst selector)`` of :func:`_selector`, or None where they do not apply;
    built only on the paths that use them (a fresh batch pays two sparse-tensor builds)."""
    sel_src = _selector(g, "src", x)
    return None if sel_src is None else (sel_src, _selector(g, "dst", x))


def _gather(g, x: Tensor, side: str) -> Tensor:
    """Rows of ``x`` at each edge's ``src`` or ``dst``: ``(N, *) -> (E, *)``."""
    index = g.src if side == "src" else g.dst
    sel = _selector(g, side, x)
    return x.index_select(0, index) if sel is None else _Gather.apply(x, index, sel)


class _ReluEdgeSum(Function):
    """GINE's aggregate ``out_i = Σ_{j->i} ReLU(x_j + e_ji)`` with one ``(E, C)`` buffer
    updated in place (each fresh ``(E, C)`` tensor costs a page-faulting allocation on CPU).

    Backward: ``g_ji = ∂out_i · [m_ji > 0]``, ``∂e_ji = g_ji``, ``∂x_j = Σ_{edges j->·} g``
    (selector product). With ``create_graph`` it is built from differentiable ops (ReLU's
    second derivative is 0, so the mask is a constant).
    """

    @staticmethod
    def forward(ctx, x: Tensor, e: Tensor, src: Tensor, dst: Tensor, sel_src: Tensor, sel_dst: Tensor) -> Tensor:
        msg = x.index_select(0, src)
        msg.add_(e).relu_()
        ctx.save_for_backward(msg, src, dst)
        ctx.selectors = (sel_src, sel_dst)
        return _selector_mm(sel_dst, msg)

    @staticmethod
    def backward(ctx, grad: Tensor):
        msg, src, dst = ctx.saved_tensors
        sel_src, sel_dst = ctx.selectors
        if torch.is_grad_enabled():
            gm = _Gather.apply(grad, dst, sel_dst) * (msg > 0).to(grad.dtype)
        else:
            gm = grad.index_select(0, dst)
            # ReLU's backward written into gm (6 ms for 500k x 64 on 2 cores; masked_fill_ takes 60)
            torch.ops.aten.threshold_backward.grad_input(gm, msg, 0.0, grad_input=gm)
        gx = _SelectorSum.apply(gm, src, sel_src) if ctx.needs_input_grad[0] else None
        return gx, (gm if ctx.needs_input_grad[1] else None), None, None, None, None


def gated_aggregate_reference(ax: Tensor, bx: Tensor, vx: Tensor, ce: Tensor | None, src: Tensor, dst: Tensor,
                              num_nodes: int, eps: float | None) -> tuple[Tensor, Tensor]:
    """GatedGCN's edge gating in plain differentiable ops: ``ê = ax[dst] + bx[src] (+ ce)``,
    ``η = σ(ê)``, ``agg_i = Σ_{j->i} η ⊙ vx_j`` (divided by ``Σ η + eps`` when ``eps`` is given).
    Returns ``(agg (N, m), ê (E, m))``; the reference of :class:`_GatedAggregate`."""
    e_hat = ax.index_select(0, dst) + bx.index_select(0, src)
    if ce is not None:
        e_hat = e_hat + ce
    gate = torch.sigmoid(e_hat)
    agg = torch.zeros(num_nodes, vx.size(1), dtype=vx.dtype, device=vx.device).index_add(
        0, dst, gate * vx.index_select(0, src))
    if eps is not None:
        den = torch.zeros_like(agg).index_add(0, dst, gate)
        agg = agg / (den + eps)
    return agg, e_hat


class _GatedAggregate(Function):
    """GatedGCN's gate, gated message and reduction in one step over dst-sorted edges (CPU,
    with the cached selectors of :func:`_selector`).

    Forward keeps two ``(E, m)`` tensors: ``ê`` (an output: the updated edges) and the gate
    ``η = σ(ê)`` (what backward needs); the gated message ``η ⊙ vx_j`` is built in place in one
    buffer and freed after its reduction. Backward, with ``g_num = ∂agg / den`` and
    ``g_den = -g_num ⊙ agg`` (normalised gates) or ``g_num = ∂agg``:
    ``∂vx_j = Σ_{j->i} g_num_i ⊙ η_ji``, ``∂η_ji = g_num_i ⊙ vx_j + g_den_i``,
    ``∂ê = ∂η ⊙ η(1 - η) + ∂ê_out``, ``∂ax_i = Σ_{j->i} ∂ê``, ``∂bx_j = Σ_{j->·} ∂ê``, ``∂ce = ∂ê``.
    Under ``create_graph`` the backward differentiates :func:`gated_aggregate_reference` instead.
    """

    @staticmethod
    def forward(ctx, ax, bx, vx, ce, src, dst, sel_src, sel_dst, eps):
        ctx.set_materialize_grads(False)
        e_hat = ax.index_select(0, dst)
        e_hat.add_(bx.index_select(0, src))
        if ce is not None:
            e_hat.add_(ce)
        gate = torch.sigmoid(e_hat)
        msg = vx.index_select(0, src)
        msg.mul_(gate)
        num = _selector_mm(sel_dst, msg)
        del msg
        if eps is not None:
            den = _selector_mm(sel_dst, gate).add_(eps)
            agg = num / den
        else:
            den, agg = None, num
        ctx.save_for_backward(ax, bx, vx, ce, src, dst, gate, agg, den)
        ctx.selectors, ctx.eps = (sel_src, sel_dst), eps
        return agg, e_hat

    @staticmethod
    def backward(ctx, g_agg, g_ehat):
        ax, bx, vx, ce, src, dst, gate, agg, den = ctx.saved_tensors
        sel_src, sel_dst = ctx.selectors
        need = ctx.needs_input_grad
        if torch.is_grad_enabled():  # double backward: differentiate the reference
            ins = [t for t in (ax, bx, vx, ce) if t is not None]
            outs = gated_aggregate_reference(ax, bx, vx, ce, src, dst, ax.size(0), ctx.eps)
            pairs = [(o, go) for o, go in zip(outs, (g_agg, g_ehat)) if go is not None]
            grads = torch.autograd.grad([o for o, _ in pairs], ins, [go for _, go in pairs], create_graph=True,
                                        allow_unused=True)
            it = iter(grads)
            return (next(it), next(it), next(it), None if ce is None else next(it), None, None, None, None, None)
        d_ehat = None
        gvx = None
        if g_agg is not None:
            g_num = g_agg / den if den is not None else g_agg
            t = g_num.index_select(0, dst)  # (E, m)
            if need[2]:
                gvx = _selector_mm(sel_src, t * gate)
            t.mul_(vx.index_select(0, src))  # ∂η
            if den is not None:
                t.sub_((g_num * agg).index_select(0, dst))
            d_ehat = torch.ops.aten.sigmoid_backward(t, gate)
        if g_ehat is not None:
            d_ehat = g_ehat.clone() if d_ehat is None else d_ehat.add_(g_ehat)
        if d_ehat is None:
            return (None,) * 9
        gax = _selector_mm(sel_dst, d_ehat) if need[0] else None
        gbx = _selector_mm(sel_src, d_ehat) if need[1] else None
        return gax, gbx, gvx, (d_ehat if need[3] else None), None, None, None, None, None


def _gather_reduce(g, msg: Tensor, reduce: str) -> Tensor:
    """Reduce ``(E, *)`` edge messages into their destinations (dst-sorted, so ``ptr`` = rowptr)."""
    fn = segment_sum if reduce == "sum" else segment_max
    return fn(msg, g.dst, g.num_nodes, _csr_pair(g)[0].rowptr)


# -------------------------------------------------------------------------------- GCN
def gcn_norm(
    g,
    edge_weight: Tensor | None = None,
    *,
    improved: bool = False,
    add_self_loops: bool = True,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor | None]:
    """Symmetric normalisation of Kipf & Welling: ``Â = D̂^-1/2 (A + λI) D̂^-1/2``.

    Self-loops follow PyG's ``add_remaining_self_loops``: every existing loop edge is dropped
    from ``A`` and each node gets exactly one loop on the diagonal, weighted by the (last)
    existing loop's weight where the node had one, else by ``λ`` (1, or 2 when ``improved``).
    ``D̂_ii = Σ_j Â_ij`` (weighted in-degree); nodes of degree 0 get coefficient 0.

    The loops are returned as a diagonal instead of as extra edges, so the product
    ``Â x = spmm(A_values, x) + diag ⊙ x`` needs no re-sorted edge list.

    Returns:
        ``values`` ``(E,)``: the coefficient of each edge (0 for loop edges when loops are
        added), and ``diag`` ``(N,)`` (``None`` when ``add_self_loops`` is false).
    """
    if (dtype in (torch.float32, torch.float64) and (edge_weight is None or not edge_weight.requires_grad)
            and kernels.usable_index(g.src) and (edge_weight is None or edge_weight.device.type == "cpu")):
        # one C++ pass per row for the degrees and one for the coefficients (graphdl/ops/kernels.py)
        csr = g.csr()
        fill = (2.0 if improved else 1.0) if add_self_loops else -1.0
        w = None if edge_weight is None else edge_weight.reshape(-1)
        values, diag = kernels.ops().gcn_norm(csr.rowptr, csr.col, w, fill, dtype)
        return values, (diag if add_self_loops else None)
    w, diag, dinv = gcn_node_factors(g, edge_weight, improved=improved, add_self_loops=add_self_loops, dtype=dtype)
    src, dst = g.src, g.dst
    values = dinv.index_select(0, src) * w * dinv.index_select(0, dst)
    if diag is not None:
        diag = dinv * dinv * diag
    return values, diag


def gcn_node_factors(g, edge_weight: Tensor | None = None, *, improved: bool = False, add_self_loops: bool = True,
                     dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor | None, Tensor]:
    """The per-node parts of :func:`gcn_norm`: ``(w, λ, dinv)``.

    ``w`` ``(E,)``: edge weights with loop edges zeroed when loops are added; ``λ`` ``(N,)``: the
    diagonal before scaling (the last existing loop's weight, else 1 or 2), ``None`` without
    added loops; ``dinv`` ``(N,)``: ``D̂^-1/2`` (0 at degree 0). ``Â = dinv_i w_ji dinv_j`` off the
    diagonal and ``dinv_i² λ_i`` on it (a DGL lowering scales nodes instead of edges with these).
    """
    src, dst, n, e = g.src, g.dst, g.num_nodes, g.num_edges
    w = torch.ones(e, dtype=dtype, device=g.device) if edge_weight is None else edge_weight.reshape(-1).to(dtype)
    diag = None
    if add_self_loops:
        is_loop = src == dst
        fill = 2.0 if improved else 1.0
        ids = torch.where(is_loop, torch.arange(e, device=g.device), -1)
        last = torch.full((n,), -1, dtype=torch.long, device=g.device).scatter_reduce_(0, dst, ids, "amax")
        has_loop = last >= 0
        loop_w = w.index_select(0, last.clamp(min=0)) if e else w.new_zeros(n)
        diag = torch.where(has_loop, loop_w, torch.full_like(loop_w, fill))
        w = w.masked_fill(is_loop, 0.0)
    deg = segment_sum(w, dst, n, g.csr().rowptr)  # the row CSR only: a cold batch builds no transpose here
    if diag is not None:
        deg = deg + diag
    dinv = deg.pow(-0.5)
    return w, diag, dinv.masked_fill(torch.isinf(dinv), 0.0)


@register_block("gcn")
class GCN(Block):
    """Graph convolution (Kipf & Welling 2017, https://arxiv.org/abs/1609.02907).

    ``h_i' = Θ Σ_{j ∈ N(i) ∪ {i}} w_ji / sqrt(d̂_j d̂_i) · h_j + b`` with ``d̂_i = λ + Σ_j w_ji``.

    Parameters follow PyG's ``GCNConv``: ``normalize`` (default true) applies the symmetric
    normalisation and, by default, adds self-loops (``add_self_loops``) with weight ``λ = 1``
    or ``2`` when ``improved``; existing loops are kept once with their own weight (see
    :func:`gcn_norm`). ``normalize: false`` sums ``w_ji h_j`` over the edges as given.
    ``edge_weight`` names an optional ``(E, 1)`` edge field of weights (default all 1).

    Departs from PyG in one place: with ``improved: true`` and no edge weights, PyG 2.8
    (edge-list input) silently gives missing loops weight 1; here they get 2, as documented
    by PyG and the paper's ``A + 2I``.

    Lowering: one CSR product over ``A + I`` whose entries are the coefficients, loops
    included, cached on the batch (without edge weights, they depend on the graph only);
    with edge weights, a product over ``A`` plus a diagonal term, recomputed each call.

    Shapes: ``node.h (N, in) -> (N, out_dim)``; ``edge_weight (E, 1)`` or ``(E,)``.
    """

    family = "conv"
    uses_edge_weight: ClassVar[bool] = True

    class Params(ConvParams):
        normalize: bool = True
        add_self_loops: bool | None = None
        improved: bool = False
        edge_weight: str | None = None
        lowering: DGLLowering = "auto"

        @field_validator("edge_weight")
        @classmethod
        def _v_ew(cls, v):
            return None if v is None else _check_key(v)

    @classmethod
    def infer(cls, p, fields, ctx):
        d = _node_dims(cls, p, fields)
        loops = p.normalize if p.add_self_loops is None else p.add_self_loops
        if loops and not p.normalize:
            raise InferenceError(
                "gcn cannot add self-loops without normalisation (`add_self_loops: true` with "
                "`normalize: false`); set `normalize: true` or drop `add_self_loops`"
            )
        reads = {p.input: fields[p.input]}
        if p.edge_weight is not None:
            k = _edge_dim(cls, p.edge_weight, fields, "edge_weight")
            if k != 1:
                raise InferenceError(
                    f"gcn: `edge_weight: {p.edge_weight}` must be one weight per edge (dim 1), found dim {k}; "
                    f"project it to 1 channel with a `linear` block or name another field"
                )
            reads[p.edge_weight] = fields[p.edge_weight]
        return Signature(reads, {p.out_key: Scalar(p.out_dim)}, {"in_dim": d, "self_loops": loops})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.lin = nn.Linear(sig.info["in_dim"], p.out_dim, bias=False)
        nn.init.xavier_uniform_(self.lin.weight)
        self.bias = nn.Parameter(torch.zeros(p.out_dim)) if p.bias else None
        self._loops = sig.info["self_loops"]

    def describe_extra(self) -> str:
        if not self._loops:
            return "spmm (CSR)"
        return "spmm (CSR) + diag self-loops" if self.p.edge_weight else "spmm over A+I (CSR)"

    def normalization(self, g, w: Tensor | None, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
        """Edge coefficients and loop diagonal (cached on ``g`` when there are no edge weights)."""
        p = self.p
        if w is not None:
            return gcn_norm(g, w, improved=p.improved, add_self_loops=self._loops, dtype=dtype)
        key = ("gcn_norm", p.improved, self._loops, dtype, g.device)
        hit = g._cache.get(key)
        if hit is None:
            with torch.no_grad():
                hit = gcn_norm(g, None, improved=p.improved, add_self_loops=self._loops, dtype=dtype)
            g._cache[key] = hit
        return hit  # type: ignore[return-value]

    def looped(self, g, dtype: torch.dtype) -> tuple[CSR, Tensor, CSR]:
        """``(csr, values, csr_t)`` of ``Â`` with its self-loops as entries (cached on ``g``)."""
        key = ("gcn_looped", self.p.improved, dtype, g.device)
        hit = g._cache.get(key)
        if hit is None:
            values, diag = self.normalization(g, None, dtype)
            csr, csr_t, take = _looped_pair(g)
            hit = g._cache[key] = (csr, torch.cat([values, diag]).index_select(0, take), csr_t)
        return hit  # type: ignore[return-value]

    def forward(self, g, f):
        if self.p.lowering == "dgl":
            return dgl_forward(self, g, f)
        p = self.p
        x = f[p.input]
        w = f[p.edge_weight].reshape(-1) if p.edge_weight is not None else None
        # The product is linear, so Θ can go before or after it: put it where fewer channels move.
        lin_first = p.out_dim <= x.size(-1)
        h = self.lin(x) if lin_first else x
        if p.normalize and w is None and self._loops and _use_looped(g):
            csr, values, csr_t = self.looped(g, h.dtype)
            out = spmm(csr, h, values, csr_t=csr_t)
        elif p.normalize:
            values, diag = self.normalization(g, w, h.dtype)
            out = _aggregate_copy(g, h, "sum", values)
            if diag is not None:
                out = torch.addcmul(out, diag.unsqueeze(-1), h)
        else:
            out = _aggregate_copy(g, h, "sum", None if w is None else w.to(h.dtype))
        if not lin_first:
            out = self.lin(out)
        if self.bias is not None:
            out = out + self.bias
        return {p.out_key: out}


# ------------------------------------------------------------------------------- SAGE
@register_block("sage")
class SAGE(Block):
    """GraphSAGE (Hamilton et al. 2017, https://arxiv.org/abs/1706.02216).

    ``h_i' = W_l · AGG_{j ∈ N(i)} φ(h_j) + W_r h_i + b``, then ``h_i' / ‖h_i'‖`` if ``normalize``.

    ``aggr``: ``mean`` (default), ``sum``, ``max``, or ``max_pool``, the paper's pooling
    aggregator ``max_j ReLU(W_p h_j + b_p)`` (the same as ``aggr: max`` with ``project:
    true``). ``project`` applies ``φ(h) = ReLU(W_p h + b_p)`` to the neighbours before any
    aggregator, as PyG's ``SAGEConv(project=True)``. ``root_weight: false`` drops ``W_r h_i``.
    Nodes without in-edges aggregate to 0.

    Lowering: mean/sum as a CSR product (``W_l`` applied first when it narrows the width);
    max gathers the ``(E, C)`` neighbour rows and takes a segment max.

    Shapes: ``node.h (N, in) -> (N, out_dim)``.
    """

    family = "conv"

    class Params(ConvParams):
        aggr: Literal["mean", "sum", "max", "max_pool"] = "mean"
        project: bool = False
        root_weight: bool = True
        normalize: bool = False
        lowering: DGLLowering = "auto"

    @classmethod
    def infer(cls, p, fields, ctx):
        d = _node_dims(cls, p, fields)
        return Signature({p.input: fields[p.input]}, {p.out_key: Scalar(p.out_dim)}, {"in_dim": d})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d = sig.info["in_dim"]
        self._project = p.project or p.aggr == "max_pool"
        self._reduce = "max" if p.aggr in ("max", "max_pool") else p.aggr
        self.lin = nn.Linear(d, d) if self._project else None
        self.lin_l = nn.Linear(d, p.out_dim, bias=p.bias)
        self.lin_r = nn.Linear(d, p.out_dim, bias=False) if p.root_weight else None

    def describe_extra(self) -> str:
        return "gather + segment max" if self._reduce == "max" else f"spmm {self._reduce} (CSR)"

    def forward(self, g, f):
        if self.p.lowering == "dgl":
            return dgl_forward(self, g, f)
        p = self.p
        x = f[p.input]
        xs = torch.relu(self.lin(x)) if self.lin is not None else x
        w_l = self.lin_l.weight
        narrow = False
        if self._reduce == "max" and xs.dim() == 2 and kernels.usable(xs):
            agg = max_aggregate(xs, *_csr_pair(g))  # C++ kernel: no (E, C) gathered rows
        elif self._reduce == "max":
            agg = _gather_reduce(g, _gather(g, xs, "src"), "max")
        else:
            # The mean is a product with per-edge values 1/deg(dst) (cached on the batch), so no
            # (N, C) division runs forward or backward. W_l (mean x_j) = mean (W_l x_j): when W_l
            # narrows the width it goes first and the product moves fewer channels.
            narrow = p.out_dim < xs.size(-1)
            values = _mean_values(g, xs.dtype) if self._reduce == "mean" else None
            agg = _aggregate_copy(g, F.linear(xs, w_l) if narrow else xs, "sum", values)
        return {p.out_key: self.combine(x, agg, narrow)}

    def combine(self, x: Tensor, agg: Tensor, narrow: bool) -> Tensor:
        """``W_l agg + W_r x + b`` (then L2-normalised with ``normalize``), the additions fused into
        the matrix products (addmm); ``narrow``: ``agg`` already holds ``W_l``'s product. Shared
        with the DGL lowering, which computes ``agg`` on DGL's kernels."""
        w_l, b_l = self.lin_l.weight, self.lin_l.bias
        base = b_l
        if self.lin_r is not None:
            base = self.lin_r(x) if b_l is None else torch.addmm(b_l, x, self.lin_r.weight.t())
        if narrow:
            out = agg if base is None else agg + base
        elif base is None:
            out = agg @ w_l.t()
        else:
            out = torch.addmm(base, agg, w_l.t())
        return F.normalize(out, p=2.0, dim=-1) if self.p.normalize else out


def _mean_values(g, dtype: torch.dtype) -> Tensor:
    """``1 / in-degree(dst)`` per edge: the values that make a CSR sum product a mean (cached)."""
    key = ("mean_values", dtype, g.device)
    v = g._cache.get(key)
    if v is None:
        inv = 1.0 / g.in_degree().clamp(min=1).to(dtype)
        v = g._cache[key] = inv.index_select(0, g.dst)
    return v  # type: ignore[return-value]


# -------------------------------------------------------------------------- GIN, GINE
class _GINParams(ConvParams):
    hidden: list[PositiveInt] | None = None
    act: ActName = "relu"
    norm: Literal["batch", "layer"] | None = "batch"
    last_act: bool = False
    eps: float = 0.0
    train_eps: bool = False
    lowering: DGLLowering = "auto"


class _GINBase(Block):
    family = "conv"

    def _build(self, in_dim: int) -> None:
        p = self.p
        hidden = [p.out_dim] if p.hidden is None else list(p.hidden)
        self.mlp = MLP([in_dim, *hidden, p.out_dim], p.act, p.norm, bias=p.bias, last_act=p.last_act)
        eps = torch.full((1,), float(p.eps))
        if p.train_eps:
            self.eps = nn.Parameter(eps)
        else:
            self.register_buffer("eps", eps)


@register_block("gin")
class GIN(_GINBase):
    """Graph isomorphism network (Xu et al. 2019, https://arxiv.org/abs/1810.00826).

    ``h_i' = MLP((1 + ε) h_i + Σ_{j ∈ N(i)} h_j)``.

    ``hidden`` widths of the MLP (default ``[out_dim]``: two linear layers, as in the paper),
    ``act``, ``norm`` after each hidden layer (``batch``, default as in the paper, ``layer`` or
    null; a one-row batch norms with the running statistics, see
    :class:`graphdl.nn.mlp.BatchNorm1d`), ``last_act`` (apply norm + act after the last layer too), ``eps`` and
    ``train_eps`` (learn ε). Sum aggregation with an injective MLP makes GIN as strong as 1-WL.

    Lowering: with a fixed ε, one CSR product over ``A + (1 + ε) I`` (cached on the batch);
    with ``train_eps``, a product over ``A`` plus ``(1 + ε) h_i``. No ``(E, C)`` messages.

    Shapes: ``node.h (N, in) -> (N, out_dim)``.
    """

    Params = _GINParams

    @classmethod
    def infer(cls, p, fields, ctx):
        d = _node_dims(cls, p, fields)
        return Signature({p.input: fields[p.input]}, {p.out_key: Scalar(p.out_dim)}, {"in_dim": d})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self._build(sig.info["in_dim"])

    def describe_extra(self) -> str:
        return "spmm sum (CSR)" if self.p.train_eps else "spmm over A+(1+eps)I (CSR)"

    def forward(self, g, f):
        if self.p.lowering == "dgl":
            return dgl_forward(self, g, f)
        p = self.p
        x = f[p.input]
        if p.train_eps:
            out = torch.addcmul(_aggregate_copy(g, x, "sum"), 1 + self.eps, x)
        elif not _use_looped(g):  # a batch's first uses: the plain product, no A + I to build
            out = torch.add(_aggregate_copy(g, x, "sum"), x, alpha=1.0 + p.eps)
        else:  # fixed ε: one product over A + (1 + ε) I (the buffer holds p.eps; reading p avoids a sync)
            key = ("gin_values", p.eps, x.dtype, g.device)
            values = g._cache.get(key)
            if values is None:
                csr, csr_t, take = _looped_pair(g)
                diag = x.new_full((g.num_nodes,), 1.0 + p.eps)
                values = g._cache[key] = torch.cat([x.new_ones(g.num_edges), diag]).index_select(0, take)
            csr, csr_t, _ = _looped_pair(g)
            out = spmm(csr, x, values, csr_t=csr_t)
        return {p.out_key: self.mlp(out)}


@register_block("gine")
class GINE(_GINBase):
    """GIN with edge features (Hu et al. 2020, https://arxiv.org/abs/1905.12265).

    ``h_i' = MLP((1 + ε) h_i + Σ_{j ∈ N(i)} ReLU(h_j + e_ji))``.

    ``edge_input`` (default ``edge.e``) must have the node input's width, or set
    ``project_edges: true`` to map it there with a linear layer first (PyG's ``edge_dim``).
    The MLP options are those of ``gin``.

    Lowering: gather ``h_j`` per edge, add ``e_ji``, ReLU, segment sum over the dst-sorted
    edges (the messages depend on the edge, so no CSR product applies).

    Shapes: ``node.h (N, in)``, ``edge.e (E, in or edge_dim) -> (N, out_dim)``.
    """

    uses_edge_features = True

    class Params(_GINParams):
        edge_input: str = "edge.e"
        project_edges: bool = False

        _v_e = field_validator("edge_input")(_check_key)

    @classmethod
    def infer(cls, p, fields, ctx):
        d = _node_dims(cls, p, fields)
        de = _edge_dim(cls, p.edge_input, fields, "edge_input")
        if de != d and not p.project_edges:
            raise InferenceError(
                f"gine adds edge features to node features, but `{p.edge_input}` has dim {de} and "
                f"`{p.input}` has dim {d}; set `project_edges: true` to map edges to {d} channels"
            )
        reads = {p.input: fields[p.input], p.edge_input: fields[p.edge_input]}
        return Signature(reads, {p.out_key: Scalar(p.out_dim)}, {"in_dim": d, "edge_dim": de})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d = sig.info["in_dim"]
        self.lin_edge = nn.Linear(sig.info["edge_dim"], d) if p.project_edges else None
        self._build(d)

    def describe_extra(self) -> str:
        return "gather + segment sum"

    def forward(self, g, f):
        if self.p.lowering == "dgl":
            return dgl_forward(self, g, f)
        p = self.p
        x = f[p.input]
        e = f[p.edge_input]
        if self.lin_edge is not None:
            e = self.lin_edge(e)
        if e.dtype == x.dtype and e.dim() == 2 and x.dim() == 2 and kernels.usable(x, e):
            agg = relu_edge_sum(x, e, *_csr_pair(g))  # fused C++ kernel: no (E, C) message
        elif (sels := _selectors(g, x)) is not None and e.dtype == x.dtype and e.dim() == 2:
            agg = _ReluEdgeSum.apply(x, e, g.src, g.dst, *sels)
        else:
            agg = _gather_reduce(g, torch.relu(_gather(g, x, "src") + e), "sum")
        out = torch.addcmul(agg, 1 + self.eps, x)
        return {p.out_key: self.mlp(out)}


# --------------------------------------------------------------------------- GatedGCN
@register_block("gated_gcn")
class GatedGCN(Block):
    """Residual gated graph convnet (Bresson & Laurent 2017, https://arxiv.org/abs/1711.07553)
    in the edge-updating form of Dwivedi et al.'s benchmark (https://arxiv.org/abs/2003.00982).

    ``ê_ji = A h_i + B h_j + C e_ji``,  ``η_ji = σ(ê_ji)``,
    ``h_i' = U h_i + Σ_j η_ji ⊙ V h_j / (Σ_j η_ji + ε)``,  ``e_ji' = ê_ji``;
    then (each optional, in this order, to both ``h'`` and ``e'``) batch norm, ``act``,
    the block's skip connection ``h + h'`` (``skip``), dropout. A batch of one node (a
    methane) or one edge is normalised with the running statistics and leaves them unchanged
    (:class:`graphdl.nn.mlp.BatchNorm1d`, PyG's ``allow_single_element``).

    Options: ``edge_gates`` (use ``C e_ji``; needs ``edge_input``), ``normalize_gates``
    (divide by ``Σ η + eps``), ``update_edges`` (write ``e'`` to ``edge_output``, default the
    edge input's key), ``root_weight`` (the ``U h_i`` term), ``batch_norm``, ``act``,
    ``skip``, ``dropout``. With ``edge_gates``, ``normalize_gates``, ``update_edges``,
    ``batch_norm`` and ``skip`` false and ``act: identity`` the block is exactly PyG's
    ``ResGatedGraphConv``: ``h_i' = W_1 h_i + Σ_j σ(W_3 h_i + W_4 h_j) ⊙ W_2 h_j``.

    Lowering: gather + segment sums over dst-sorted edges (the gates are per-edge).

    Shapes: ``node.h (N, in)``, ``edge.e (E, edge_in) -> node (N, out_dim)``, edge
    ``(E, out_dim)``.
    """

    family = "conv"
    uses_edge_features = True

    class Params(ConvParams):
        edge_input: str = "edge.e"
        edge_output: str | None = None
        edge_gates: bool = True
        normalize_gates: bool = True
        update_edges: bool = True
        root_weight: bool = True
        batch_norm: bool = True
        act: ActName = "relu"
        skip: bool = True
        dropout: float = Field(0.0, ge=0.0, lt=1.0)
        eps: float = Field(1e-6, ge=0.0)
        lowering: DGLLowering = "auto"

        _v_e = field_validator("edge_input")(_check_key)

        @field_validator("edge_output")
        @classmethod
        def _v_eo(cls, v):
            return None if v is None else _check_key(v)

        @property
        def edge_out_key(self) -> str:
            return self.edge_output or self.edge_input

    @classmethod
    def infer(cls, p, fields, ctx):
        d = _node_dims(cls, p, fields)
        reads = {p.input: fields[p.input]}
        writes = {p.out_key: Scalar(p.out_dim)}
        de = None
        if p.edge_gates:
            if p.edge_input not in fields:
                raise InferenceError(
                    f"gated_gcn gates messages with edge features but the stack has no `{p.edge_input}`; "
                    f"set `edge_input` to an edge field, embed one first, or set `edge_gates: false`"
                )
            de = _edge_dim(cls, p.edge_input, fields, "edge_input")
            reads[p.edge_input] = fields[p.edge_input]
        if p.skip and d != p.out_dim:
            raise InferenceError(
                f"gated_gcn `skip: true` adds `{p.input}` (dim {d}) to the output (dim {p.out_dim}); "
                f"set `out_dim: {d}` or `skip: false`"
            )
        if p.update_edges:
            if split_key(p.edge_out_key)[0] != "edge":
                raise InferenceError(f"gated_gcn writes updated edges to `{p.edge_out_key}`, which is not an edge field")
            if p.skip:
                if de is None:
                    raise InferenceError(
                        "gated_gcn `skip: true` with `update_edges: true` adds the input edge features, "
                        "but `edge_gates: false` reads none; set `skip: false` or `update_edges: false`"
                    )
                if de != p.out_dim:
                    raise InferenceError(
                        f"gated_gcn `skip: true` adds `{p.edge_input}` (dim {de}) to the updated edges "
                        f"(dim {p.out_dim}); embed edges to {p.out_dim} channels first or set `skip: false`"
                    )
            writes[p.edge_out_key] = Scalar(p.out_dim)
        return Signature(reads, writes, {"in_dim": d, "edge_dim": de})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d, de, m = sig.info["in_dim"], sig.info["edge_dim"], p.out_dim
        self.A = nn.Linear(d, m, bias=p.bias)  # gate term of the destination h_i
        self.B = nn.Linear(d, m, bias=p.bias)  # gate term of the source h_j
        self.V = nn.Linear(d, m, bias=p.bias)  # value of the source h_j
        self.C = nn.Linear(de, m, bias=p.bias) if p.edge_gates else None
        self.U = nn.Linear(d, m, bias=False) if p.root_weight else None
        self.bias = nn.Parameter(torch.zeros(m)) if p.bias else None
        # graphdl's BatchNorm1d: a batch of one node (a methane) or one edge uses the running statistics
        self.bn_h = BatchNorm1d(m) if p.batch_norm else None
        self.bn_e = BatchNorm1d(m) if p.batch_norm and p.update_edges else None
        self.act = activation(p.act)
        self.drop = nn.Dropout(p.dropout) if p.dropout > 0 else None

    def describe_extra(self) -> str:
        return "gather + segment sum"

    def forward(self, g, f):
        if self.p.lowering == "dgl":
            return dgl_forward(self, g, f)
        p = self.p
        x = f[p.input]
        m = p.out_dim
        # One matmul for the three node maps (split's backward is one concatenation of (N, m) rows).
        w = torch.cat([self.A.weight, self.B.weight, self.V.weight])
        b = None if self.A.bias is None else torch.cat([self.A.bias, self.B.bias, self.V.bias])
        ax, bx, vx = F.linear(x, w, b).split(m, dim=-1)
        ce = self.C(f[p.edge_input]) if self.C is not None else None
        eps = p.eps if p.normalize_gates else None
        if x.dim() == 2 and (ce is None or ce.dtype == x.dtype) and kernels.usable(x, ce):
            # fused C++ kernels; ResGatedGraphConv's form (no edge output) writes no (E, m) tensor at all
            if not p.update_edges and ce is None and eps is None:
                agg, e_hat = gated_sum(ax, bx, vx, *_csr_pair(g)), None
            else:
                agg, e_hat = gated_edge(ax, bx, vx, ce, *_csr_pair(g), eps, overwrite_ce=True)  # ce: ours alone
        elif (sels := _selectors(g, x)) is not None and (ce is None or ce.dtype == x.dtype):
            # without the kernels: the gate, gated message and reduction without autograd's (E, m)
            # intermediates, over the selectors
            agg, e_hat = _GatedAggregate.apply(ax, bx, vx, ce, g.src, g.dst, *sels, eps)
        else:
            # in place on fresh (E, m) buffers: each new one costs a page-faulting allocation on CPU
            e_hat = _gather(g, ax, "dst").add_(_gather(g, bx, "src"))
            if ce is not None:
                e_hat = e_hat.add_(ce)
            gate = torch.sigmoid(e_hat)
            agg = _gather_reduce(g, gate * _gather(g, vx, "src"), "sum")
            if p.normalize_gates:
                agg = agg / (_gather_reduce(g, gate, "sum") + p.eps)
        h = agg if self.U is None else self.U(x) + agg
        if self.bias is not None:
            h = h + self.bias
        out = {p.out_key: self._post(h, self.bn_h, x)}
        if p.update_edges:
            out[p.edge_out_key] = self._post(e_hat, self.bn_e, f[p.edge_input] if p.skip else None)
        return out

    def _post(self, y: Tensor, bn: nn.Module | None, skip: Tensor | None) -> Tensor:
        if bn is not None:
            y = bn(y)
            # batch norm's output is fresh and not saved by its backward: ReLU in place saves one
            # (E, m) allocation on the edge path (a page-faulting 128 MB at 500k edges x 64 on CPU)
            y = torch.relu_(y) if type(self.act) is nn.ReLU else self.act(y)
        else:
            y = self.act(y)
        if self.p.skip:
            y = skip + y
        if self.drop is not None:
            y = self.drop(y)
        return y


# ------------------------------------------------------------------------------ MoNet
def degree_pseudo(g, dtype: torch.dtype = torch.float32) -> Tensor:
    """Degree pseudo-coordinates of Dwivedi et al.'s MoNet: ``(1/√(d_j + 1), 1/√(d_i + 1))``
    for each edge ``j -> i``, ``d`` the in-degree (loops and parallel edges counted).

    Shapes: ``(E, 2)``, column 0 from the source, column 1 from the destination (the order
    of the benchmark's code).
    """
    inv = (g.in_degree().to(dtype) + 1.0).rsqrt()
    return torch.stack([inv.index_select(0, g.src), inv.index_select(0, g.dst)], -1)


@register_block("monet")
class MoNet(Block):
    """MoNet / Gaussian mixture convolution (Monti et al. 2017, https://arxiv.org/abs/1611.08402).

    ``h_i' = AGG_{j ∈ N(i)} Σ_k w_k(u_ji) ⊙ Θ_k h_j + W_r h_i + b``,
    ``w_k(u) = exp(−½ Σ_d (u_d − μ_kd)² / σ_kd²)`` (learned ``μ``, ``σ``).

    ``pseudo``: ``degree`` (default; :func:`degree_pseudo`, as in Dwivedi et al.'s benchmark)
    or an edge field holding the pseudo-coordinates ``u_ji``. ``pseudo_dim``: first map ``u``
    with ``tanh(Linear)`` to this many dims (the benchmark's projection; PyG has none).
    ``kernel_size`` ``K`` Gaussians; ``separate_gaussians`` learns one mixture per (input,
    output) channel pair; ``aggr`` ``mean`` (default, as PyG's ``GMMConv``), ``sum`` or ``max``;
    ``root_weight`` the ``W_r h_i`` term. Like PyG's code (not its docstring), the kernel sum
    is not divided by ``K``.

    Lowering: mean/sum as ``K`` CSR products with the Gaussian weights as values, so no
    ``(E, C)`` messages; max and ``separate_gaussians`` gather per-edge messages.

    Shapes: ``node.h (N, in)``, pseudo ``(E, D)`` -> ``(N, out_dim)``.
    """

    family = "conv"
    uses_edge_features = True

    class Params(ConvParams):
        kernel_size: PositiveInt = 3
        pseudo: str = "degree"
        pseudo_dim: PositiveInt | None = None
        separate_gaussians: bool = False
        aggr: Literal["mean", "sum", "max"] = "mean"
        root_weight: bool = True
        lowering: DGLLowering = "auto"

        @field_validator("pseudo")
        @classmethod
        def _v_pseudo(cls, v):
            return v if v == "degree" else _check_key(v)

    @classmethod
    def infer(cls, p, fields, ctx):
        d = _node_dims(cls, p, fields)
        reads = {p.input: fields[p.input]}
        if p.pseudo == "degree":
            dp = 2
        else:
            dp = _edge_dim(cls, p.pseudo, fields, "pseudo")
            reads[p.pseudo] = fields[p.pseudo]
        return Signature(reads, {p.out_key: Scalar(p.out_dim)}, {"in_dim": d, "pseudo_in": dp})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d, k, m = sig.info["in_dim"], p.kernel_size, p.out_dim
        dp = sig.info["pseudo_in"]
        self.pseudo_proj = nn.Linear(dp, p.pseudo_dim) if p.pseudo_dim else None
        dp = p.pseudo_dim or dp
        self.g = nn.Parameter(_glorot(torch.empty(d, m * k)))
        shape = (d, m, k, dp) if p.separate_gaussians else (k, dp)
        self.mu = nn.Parameter(_glorot(torch.empty(shape)))
        self.sigma = nn.Parameter(_glorot(torch.empty(shape)))
        self.root = nn.Linear(d, m, bias=False) if p.root_weight else None
        if self.root is not None:
            nn.init.xavier_uniform_(self.root.weight)
        self.bias = nn.Parameter(torch.zeros(m)) if p.bias else None

    def describe_extra(self) -> str:
        if self.p.separate_gaussians or self.p.aggr == "max":
            return f"gather + segment {self.p.aggr}"
        return f"spmm {self.p.aggr} (CSR) x {self.p.kernel_size} kernels"

    def pseudo_coords(self, g, f, dtype: torch.dtype) -> Tensor:
        if self.p.pseudo == "degree":
            key = ("degree_pseudo", dtype, g.device)
            u = g._cache.get(key)
            if u is None:
                u = g._cache[key] = degree_pseudo(g, dtype)
        else:
            u = f[self.p.pseudo]
        if self.pseudo_proj is not None:
            u = torch.tanh(self.pseudo_proj(u))
        return u

    def forward(self, g, f):
        if self.p.lowering == "dgl":
            return dgl_forward(self, g, f)
        p = self.p
        x = f[p.input]
        u = self.pseudo_coords(g, f, x.dtype)
        k, m, e = p.kernel_size, p.out_dim, g.num_edges
        if not p.separate_gaussians:
            z = (u.unsqueeze(1) - self.mu).pow(2) / (1e-15 + self.sigma.pow(2))
            w = torch.exp(-0.5 * z.sum(-1))  # (E, K)
            xg = (x @ self.g).view(-1, k, m)
            if p.aggr == "max":
                msg = (_gather(g, xg, "src") * w.unsqueeze(-1)).sum(1)
                out = _gather_reduce(g, msg, "max")
            else:
                if p.aggr == "mean":  # fold 1/deg(dst) into the (E, K) weights
                    w = w * _mean_values(g, w.dtype).unsqueeze(-1)
                out = _aggregate_copy(g, xg, "sum", w).sum(1)
        else:
            din = x.size(-1)
            z = (u.view(e, 1, 1, 1, u.size(-1)) - self.mu).pow(2) / (1e-15 + self.sigma.pow(2))
            w = (torch.exp(-0.5 * z.sum(-1)) * self.g.view(din, m, k)).sum(-1)  # (E, F, M)
            msg = (_gather(g, x, "src").unsqueeze(-1) * w).sum(1)
            if p.aggr == "max":
                out = _gather_reduce(g, msg, "max")
            else:
                out = _gather_reduce(g, msg, "sum")
                if p.aggr == "mean":
                    out = out / g.in_degree().clamp(min=1).to(out.dtype).unsqueeze(-1)
        if self.root is not None:
            out = out + self.root(x)
        if self.bias is not None:
            out = out + self.bias
        return {p.out_key: out}
