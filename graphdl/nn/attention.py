"""Attention blocks: GAT, GATv2 and a graph-transformer layer.

* ``gat`` — Veličković et al. 2018, "Graph Attention Networks" (https://arxiv.org/abs/1710.10903),
  with PyG ``GATConv`` semantics (self-loop handling, edge features, heads concat/mean).
* ``gatv2`` — Brody et al. 2022, "How Attentive are Graph Attention Networks?"
  (https://arxiv.org/abs/2105.14491), PyG ``GATv2Conv`` semantics. Same class as ``gat``
  with ``v2: true``.
* ``transformer_conv`` (also ``transformer``, its first name, kept for existing specs) — Shi et
  al. 2021, "Masked Label Prediction" (https://arxiv.org/abs/2009.03509): multi-head
  dot-product attention as message passing, PyG ``TransformerConv`` semantics. Not the
  transformer of Vaswani et al.: that is ``transformer_encoder_layer`` (:mod:`graphdl.nn.transformer`).
  On a ``complete`` or ``causal`` graph it lowers to dense batched attention
  (``torch.nn.functional.scaled_dot_product_attention`` over padded per-graph blocks).
  The shared lowerings (:func:`dense_attention`, :func:`sparse_attention`) also serve
  ``multihead_attention`` and ``transformer_encoder_layer`` (:mod:`graphdl.nn.transformer`).

How GAT runs fast (and never builds ``E x H x C`` messages without edge features):
the attention logit of edge ``j -> i`` is ``a_src·W x_j + a_dst·W x_i``, a sum of two
per-node scalars per head. They are computed once per node, only ``E x H`` scalars are
gathered, normalised with a segment softmax over the destination-sorted edges, and the
weighted sum ``Σ_j α_ij W x_j`` is one CSR sparse x dense product with per-head values
(:func:`graphdl.ops.spmm.spmm`). Edge features enter the logit through ``a_edge·W_e e_ij``,
folded into one ``(edge_dim, H)`` matrix, so they cost ``E x H`` too. GATv2's logit is
nonlinear in the edge's two endpoints, so it needs one ``E x H x C`` tensor: a fused autograd
function keeps it to that one. The transformer's logits ``q_i·k_j`` are a sampled dense-dense
product (:func:`graphdl.ops.spmm.sddmm`).

Self-loops (``add_self_loops: true``, the PyG default) follow PyG exactly: existing loops are
removed and one loop per node is added; a new loop's edge feature is ``fill_value``
(``mean`` of the node's incoming edge features by default). Removal is done without a host
sync: old loops stay in the edge list with their logit set to ``-inf`` (weight exactly 0),
and the new loop of node ``i`` is placed at the end of ``i``'s destination segment, so the
destination order needs no re-sort. The structure is cached on the batch and shared by every attention layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, field_validator, model_validator
from torch import Tensor, nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, DGLLowering, Signature, dgl_forward, register_block
from graphdl.nn.basic import FieldParams, _check_key
from graphdl.ops.csr import CSR
from graphdl.ops.segment import scatter, segment_softmax
from graphdl.ops.spmm import sddmm, spmm
from graphdl.types import FieldTable, Scalar

FillValue = float | Literal["mean", "add", "sum", "max", "min"]


# ------------------------------------------------------------------------ shared helpers
@dataclass(frozen=True, eq=False)
class LoopedEdges:
    """A batch's edges with every node's self-loop appended to its destination segment.

    Attributes:
        csr: adjacency (rows = destinations) of the ``E + N`` edges, entries in new order.
        csr_t: its transpose (for the backward of the sparse product).
        order: ``(E + N,)`` index into ``cat([original edges, loops])`` giving the new order.
        old_loop: ``(E + N,)`` True at self-loops of the original graph (masked to weight 0).
    """

    csr: CSR
    csr_t: CSR
    order: Tensor
    old_loop: Tensor

    @property
    def src(self) -> Tensor:
        return self.csr.col

    @property
    def dst(self) -> Tensor:
        return self.csr.row


def looped_edges(g) -> LoopedEdges:
    """The edges of ``g`` plus one self-loop per node (cached on ``g``; no sort, no host sync).

    Original edge ``k`` (destination ``d``) moves to ``k + d``: the ``d`` loops of nodes
    ``0..d-1`` now come before it. The loop of node ``i`` goes to ``rowptr[i+1] + i``.
    """
    key = "attention.looped_edges"
    if key in g._cache:
        return g._cache[key]
    n, e = g.num_nodes, g.num_edges
    dev = g.device
    src, dst = g.src, g.dst
    rowptr = g.csr().rowptr
    ar_n = torch.arange(n, device=dev)
    edge_pos = torch.arange(e, device=dev) + dst
    loop_pos = rowptr[1:] + ar_n
    order = torch.empty(e + n, dtype=torch.long, device=dev)
    order[edge_pos] = torch.arange(e, device=dev)
    order[loop_pos] = e + ar_n
    new_src = torch.cat([src, ar_n]).index_select(0, order)
    new_dst = torch.cat([dst, ar_n]).index_select(0, order)
    old_loop = torch.cat([src == dst, torch.zeros(n, dtype=torch.bool, device=dev)]).index_select(0, order)
    new_rowptr = rowptr + torch.arange(n + 1, device=dev)
    csr = CSR(new_rowptr, new_src, new_dst, None, n, n)
    out = LoopedEdges(csr, CSR.from_coo(new_src, new_dst, n, n), order, old_loop)
    g._cache[key] = out
    return out


def loop_fill(e: Tensor, g, fill: FillValue) -> Tensor:
    """Edge features of the added self-loops, as PyG's ``add_self_loops(fill_value=...)``.

    A string reduces the node's incoming edge features *without* its old self-loops
    (``mean``, ``add``/``sum``, ``max``, ``min``; 0 where nothing is left); a number fills.
    Shapes: ``e (E, D) -> (N, D)``.
    """
    n = g.num_nodes
    if not isinstance(fill, str):
        return e.new_full((n,) + tuple(e.shape[1:]), float(fill))
    keep = (g.src != g.dst).unsqueeze(-1)
    ptr = g.csr().rowptr
    if fill in ("add", "sum", "mean"):
        total = scatter(torch.where(keep, e, e.new_zeros(())), g.dst, n, "sum", ptr)
        if fill != "mean":
            return total
        count = scatter(keep.to(e.dtype), g.dst, n, "sum", ptr).clamp_min(1)
        return total / count
    # max/min: drop old loops by pushing them to the identity of the reduction
    ident = float("-inf") if fill == "max" else float("inf")
    out = scatter(torch.where(keep, e, e.new_full((), ident)), g.dst, n, fill, ptr)
    return torch.where(torch.isinf(out), out.new_zeros(()), out)


def _heads(h: int) -> str:
    return f"{h} head" + ("s" if h > 1 else "")


def _edge_attr(f: dict, key: str) -> Tensor:
    e = f[key]
    return e.unsqueeze(-1) if e.dim() == 1 else e


def _check_spaces(p, cls_name: str) -> None:
    if not p.input.startswith("node."):
        raise InferenceError(f"{cls_name} reads node features; `{p.input}` is not a node field (use e.g. `node.h`)")
    if not p.out_key.startswith("node."):
        raise InferenceError(f"{cls_name} writes node features; `{p.out_key}` is not a node field")
    if p.edge_input is not None and not p.edge_input.startswith("edge."):
        raise InferenceError(f"{cls_name} `edge_input` must be an edge field, found `{p.edge_input}` "
                             f"(use e.g. `edge.e`)")


class _GATv2Logits(Function):
    """GATv2 logits ``l_e = Σ_c a_hc · LeakyReLU(xs[src e] + xd[dst e] + ee_e)_hc`` with a fused backward.

    Autograd on the plain expression makes ~10 passes over ``E x H x C`` temporaries; here the
    forward keeps one (the activated sum, saved for backward), the head contraction is a matmul,
    and the backward sends ``∂z`` to destinations with a CSR segment sum (edges are dst-sorted)
    and to sources with one ``index_add_``. Once differentiable.
    """

    @staticmethod
    def forward(ctx, xs, xd, ee, att, src, dst, rowptr, slope: float):
        z = xs.index_select(0, src)
        z += xd.index_select(0, dst)
        if ee is not None:
            z += ee
        lz = F.leaky_relu_(z, slope)
        ctx.save_for_backward(lz, att, src, dst, rowptr)
        ctx.slope, ctx.n, ctx.has_ee = slope, xs.size(0), ee is not None
        return torch.einsum("ehc,hc->eh", lz, att[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        lz, att, src, dst, rowptr = ctx.saved_tensors
        grad_att = torch.einsum("eh,ehc->hc", grad, lz).unsqueeze(0)
        dz = torch.ops.aten.leaky_relu_backward(grad.unsqueeze(-1) * att, lz, ctx.slope, True)
        n = ctx.n
        grad_xd = scatter(dz, dst, n, "sum", rowptr) if ctx.needs_input_grad[1] else None
        grad_xs = dz.new_zeros((n,) + tuple(dz.shape[1:])).index_add_(0, src, dz) if ctx.needs_input_grad[0] else None
        grad_ee = dz if ctx.has_ee and ctx.needs_input_grad[2] else None
        return grad_xs, grad_xd, grad_ee, grad_att, None, None, None, None


def _gatv2_logits(xs, xd, ee, att, src, dst, rowptr, slope: float) -> Tensor:
    """GATv2 logits ``(E, H)``: the fused :class:`_GATv2Logits` in eager mode; under
    ``torch.compile`` the plain expression, which autograd differentiates and Inductor fuses
    (Dynamo cannot soundly trace a custom autograd function that keeps sizes on ``ctx``)."""
    if not torch.compiler.is_compiling():
        return _GATv2Logits.apply(xs, xd, ee, att, src, dst, rowptr, slope)
    z = xs.index_select(0, src) + xd.index_select(0, dst)
    if ee is not None:
        z = z + ee
    return torch.einsum("ehc,hc->eh", F.leaky_relu(z, slope), att[0])


class _AttnParams(FieldParams):
    out_dim: PositiveInt
    heads: PositiveInt = 1
    concat: bool = True
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    edge_input: str | None = None
    bias: bool = True

    @field_validator("edge_input")
    @classmethod
    def _v_edge(cls, v):
        return None if v is None else _check_key(v)


# ---------------------------------------------------------------------------------- GAT
@register_block("gat")
class GAT(Block):
    r"""Graph attention (GAT, Veličković et al. 2018; GATv2, Brody et al. 2022 with ``v2: true``).

    GAT:   ``α_ij = softmax_j LeakyReLU(a_s·W x_j + a_d·W x_i + a_e·W_e e_ij)``,
    GATv2: ``α_ij = softmax_j a·LeakyReLU(W_s x_j + W_d x_i + W_e e_ij)``;
    both:  ``h_i' = ‖_h Σ_{j∈N(i)} α_ij^h W_s^h x_j + b`` (heads concatenated, or averaged
    with ``concat: false``); softmax over the in-neighbours ``j`` of ``i``.

    Args (spec keys):
        input / output: node field read / written (default: overwrite ``input``).
        out_dim: channels per head ``C``; the output has ``heads * C`` channels with
            ``concat: true`` (default) and ``C`` otherwise.
        heads: number of attention heads ``H`` (1).
        negative_slope: LeakyReLU slope (0.2).
        dropout: dropout on the attention coefficients, training only (0).
        add_self_loops: remove existing self-loops and add one per node (true), as PyG.
        fill_value: edge feature of the added loops: ``mean`` (default), ``add``/``sum``,
            ``max``, ``min`` of the node's incoming edge features, or a number.
        edge_input: an edge field mixed into the attention logits (PyG ``edge_dim``).
        bias: add a learned bias to the output (true).
        v2: GATv2 attention (false for ``gat``, true for ``gatv2``).
        share_src_dst: GATv2 only: one matrix for source and target (PyG ``share_weights``).

    Parameters are laid out as PyG's (``lin``/``att_src``/``att_dst``/``lin_edge``/``att_edge``
    for GAT; ``lin_l``/``lin_r``/``att``/``lin_edge`` for GATv2) so weights copy one to one.

    Shapes: ``input (N, F) [, edge_input (E, D)] -> output (N, H*C)`` or ``(N, C)``.
    """

    family = "attention"
    uses_edge_features = True

    class Params(_AttnParams):
        negative_slope: float = 0.2
        add_self_loops: bool = True
        fill_value: FillValue = "mean"
        v2: bool = False
        share_src_dst: bool = False
        lowering: DGLLowering = "auto"

        @model_validator(mode="after")
        def _v_share(self):
            if self.share_src_dst and not self.v2:
                raise ValueError("`share_src_dst: true` is a GATv2 option; set `v2: true` (or use `type: gatv2`) "
                                 "or drop it")
            return self

    @classmethod
    def infer(cls, p, fields: FieldTable, ctx):
        _check_spaces(p, cls.name)
        d = fields.need_scalar(p.input, cls.name)
        reads = {p.input: fields[p.input]}
        info = {"in_dim": d, "edge_dim": None}
        if p.edge_input is not None:
            info["edge_dim"] = fields.need_scalar(p.edge_input, cls.name)
            reads[p.edge_input] = fields[p.edge_input]
        width = p.heads * p.out_dim if p.concat else p.out_dim
        return Signature(reads, {p.out_key: Scalar(width)}, info)

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d, de = sig.info["in_dim"], sig.info["edge_dim"]
        H, C = p.heads, p.out_dim
        self.lin_edge = nn.Linear(de, H * C, bias=False) if de is not None else None
        if p.v2:
            self.lin_l = nn.Linear(d, H * C, bias=p.bias)
            self.lin_r = None if p.share_src_dst else nn.Linear(d, H * C, bias=p.bias)
            self.att = nn.Parameter(torch.empty(1, H, C))
        else:
            self.lin = nn.Linear(d, H * C, bias=False)
            self.att_src = nn.Parameter(torch.empty(1, H, C))
            self.att_dst = nn.Parameter(torch.empty(1, H, C))
            self.att_edge = nn.Parameter(torch.empty(1, H, C)) if de is not None else None
        self.bias = nn.Parameter(torch.zeros(H * C if p.concat else C)) if p.bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in (getattr(self, "lin", None), getattr(self, "lin_l", None), getattr(self, "lin_r", None),
                  self.lin_edge):
            if m is not None:
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for name in ("att", "att_src", "att_dst", "att_edge"):
            a = getattr(self, name, None)
            if a is not None:
                bound = math.sqrt(6.0 / (a.size(-2) + a.size(-1)))
                nn.init.uniform_(a, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _structure(self, g):
        """(csr, csr_t, src, dst, order, old_loop) of the edges attention runs over."""
        if self.p.add_self_loops:
            le = looped_edges(g)
            return le.csr, le.csr_t, le.src, le.dst, le.order, le.old_loop
        return g.csr(), g.csr_t(), g.src, g.dst, None, None

    def _edge_feats(self, g, f, order):
        """Edge features in the attention edge order (loops filled), or None."""
        if self.p.edge_input is None:
            return None
        e = _edge_attr(f, self.p.edge_input)
        if order is None:
            return e
        return torch.cat([e, loop_fill(e, g, self.p.fill_value)]).index_select(0, order)

    def forward(self, g, f):
        if self.p.lowering == "dgl":
            return dgl_forward(self, g, f)
        p = self.p
        H, C = p.heads, p.out_dim
        x = f[p.input]
        n = x.size(0)
        csr, csr_t, src, dst, order, old_loop = self._structure(g)
        e = self._edge_feats(g, f, order)
        if p.v2:
            x_src = self.lin_l(x).view(n, H, C)
            x_dst = x_src if self.lin_r is None else self.lin_r(x).view(n, H, C)
            ee = self.lin_edge(e).view(-1, H, C) if e is not None else None
            logits = _gatv2_logits(x_src, x_dst, ee, self.att, src, dst, csr.rowptr, p.negative_slope)
        else:
            x_src = self.lin(x).view(n, H, C)
            a_src = (x_src * self.att_src).sum(-1)
            a_dst = (x_src * self.att_dst).sum(-1)
            logits = a_src.index_select(0, src) + a_dst.index_select(0, dst)
            if e is not None:
                # a_e·(W_e e) = e·(W_eᵀ a_e): fold the attention vector into the edge map (D x H)
                w = (self.lin_edge.weight.view(H, C, -1) * self.att_edge.view(H, C, 1)).sum(1)
                logits = logits + e @ w.t()
            logits = F.leaky_relu(logits, p.negative_slope)
        if old_loop is not None:
            logits = logits.masked_fill(old_loop.unsqueeze(-1), float("-inf"))
        alpha = segment_softmax(logits, dst, n, csr.rowptr)
        if p.dropout > 0:
            alpha = F.dropout(alpha, p.dropout, self.training)
        out = spmm(csr, x_src, alpha, csr_t=csr_t)  # (N, H, C)
        out = out.reshape(n, H * C) if p.concat else out.mean(1)
        if self.bias is not None:
            out = out + self.bias
        return {p.out_key: out}

    def describe_extra(self) -> str:
        kind = "GATv2" if self.p.v2 else "GAT"
        return f"{kind} {_heads(self.p.heads)} x {self.p.out_dim}" + (" concat" if self.p.concat else " mean")


@register_block("gatv2")
class GATv2(GAT):
    """GATv2 (Brody et al. 2022): ``gat`` with ``v2: true`` by default (see :class:`GAT`)."""

    class Params(GAT.Params):
        v2: bool = True


# -------------------------------------------------------------------------- transformer
@register_block("transformer")
class GraphTransformer(Block):
    r"""Graph transformer layer (Shi et al. 2021; PyG ``TransformerConv``), multi-head.

    ``α_ij = softmax_j (W_q x_i)·(W_k x_j + W_e e_ij) / √C``,
    ``h_i' = ‖_h Σ_{j∈N(i)} α_ij^h (W_v x_j + W_e e_ij) + W_r x_i``
    (heads concatenated or averaged; the root term ``W_r x_i`` with ``root_weight: true``;
    with ``beta: true`` it is gated: ``β h + (1-β) W_r x_i``, ``β = σ(w·[h, W_r x_i, h - W_r x_i])``).

    This is a *graph layer* (PyG's ``TransformerConv``): separate q/k/v maps with ``out_dim``
    channels per head, no output projection, no feed-forward, no layer norm. The transformer
    of Vaswani et al. (``torch.nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``,
    number for number) is ``multihead_attention`` and ``transformer_encoder_layer``
    (:mod:`graphdl.nn.transformer`). Spec ``type:`` ``transformer_conv`` (PyG's name) or
    ``transformer`` (the first name, kept so existing specs and checkpoints load unchanged):
    one layer, same parameters, same state dict.

    Lowering: on a ``complete`` or ``causal`` graph and without edge features the layer runs
    as dense attention (:func:`dense_attention`: ``scaled_dot_product_attention`` over
    per-graph blocks padded to the largest graph of the batch, masked from ``ptr``). Otherwise
    it runs on the edges: per-edge logits, segment softmax over destination-sorted edges, and
    a CSR product for the values. Both agree to float64 round-off on complete and causal
    graphs. ``lowering: sparse|dense`` forces one. The dense path needs the largest graph
    size, read once per batch (one host sync, cached) unless the dataset declares a fixed
    node count.

    Args (spec keys):
        input / output: node field read / written; out_dim: channels per head ``C``;
        heads (1); concat (true); dropout on attention (0); bias of the q/k/v/skip maps (true);
        root_weight (true); beta (false); edge_input: edge field (PyG ``edge_dim``);
        lowering: ``auto`` (default), ``sparse`` or ``dense``.

    Shapes: ``input (N, F) -> output (N, H*C)`` (concat) or ``(N, C)``.
    """

    family = "attention"
    uses_edge_features = True

    class Params(_AttnParams):
        root_weight: bool = True
        beta: bool = False
        lowering: Literal["auto", "sparse", "dense"] = "auto"

        @model_validator(mode="after")
        def _v_lowering(self):
            if self.lowering == "dense" and self.edge_input is not None:
                raise ValueError("`lowering: dense` cannot use edge features (`edge_input`); "
                                 "use `lowering: sparse` or `auto`")
            return self

    @classmethod
    def infer(cls, p, fields, ctx):
        _check_spaces(p, cls.name)
        d = fields.need_scalar(p.input, cls.name)
        reads = {p.input: fields[p.input]}
        info = {"in_dim": d, "edge_dim": None}
        if p.edge_input is not None:
            info["edge_dim"] = fields.need_scalar(p.edge_input, cls.name)
            reads[p.edge_input] = fields[p.edge_input]
        if p.lowering == "dense" and ctx.graph_kind not in DENSE_KINDS:
            raise InferenceError(f"{cls.name} `lowering: dense` attends over padded per-graph blocks, "
                                 f"which is the message-passing graph only when `graph.kind` is complete or causal "
                                 f"(found `{ctx.graph_kind}`); use `lowering: auto`")
        info["dense"] = p.lowering == "dense" or (
            p.lowering == "auto" and ctx.graph_kind in DENSE_KINDS and p.edge_input is None)
        width = p.heads * p.out_dim if p.concat else p.out_dim
        return Signature(reads, {p.out_key: Scalar(width)}, info)

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d, de = sig.info["in_dim"], sig.info["edge_dim"]
        H, C = p.heads, p.out_dim
        self.dense = bool(sig.info["dense"])
        # the padded layout's side is read from the batch (GraphModel reads it before a trace)
        self.needs_max_graph_nodes = self.dense and getattr(ctx, "num_nodes_hint", None) is None
        self.lin_key = nn.Linear(d, H * C, bias=p.bias)
        self.lin_query = nn.Linear(d, H * C, bias=p.bias)
        self.lin_value = nn.Linear(d, H * C, bias=p.bias)
        self.lin_edge = nn.Linear(de, H * C, bias=False) if de is not None else None
        width = H * C if p.concat else C
        self.lin_skip = nn.Linear(d, width, bias=p.bias) if p.root_weight else None
        self.lin_beta = nn.Linear(3 * width, 1, bias=False) if (p.root_weight and p.beta) else None

    def _sparse(self, g, q, k, v, e):
        H, C = self.p.heads, self.p.out_dim
        n = q.size(0)
        dst = g.dst
        csr = g.csr()
        csr_t = g.csr_t()
        # q_i·k_j for every edge as a sampled dense-dense product (no (E, H, C) gathers)
        logits = sddmm(csr, q, k, csr_t)
        ee = None
        if e is not None:
            ee = self.lin_edge(e).view(-1, H, C)
            logits = logits + torch.einsum("ehc,ehc->eh", q.index_select(0, dst), ee)
        logits = logits / math.sqrt(C)
        alpha = segment_softmax(logits, dst, n, csr.rowptr)
        if self.p.dropout > 0:
            alpha = F.dropout(alpha, self.p.dropout, self.training)
        out = spmm(csr, v, alpha, csr_t=csr_t)
        if ee is not None:
            out = out + scatter(alpha.unsqueeze(-1) * ee, dst, n, "sum", csr.rowptr)
        return out

    def _dense(self, g, q, k, v):
        return dense_attention(g, q, k, v, kind=self.ctx.graph_kind, self_loops=self.ctx.self_loops,
                               dropout_p=self.p.dropout if self.training else 0.0,
                               num_nodes_hint=self.ctx.num_nodes_hint)

    def forward(self, g, f):
        p = self.p
        H, C = p.heads, p.out_dim
        x = f[p.input]
        n = x.size(0)
        q = self.lin_query(x).view(n, H, C)
        k = self.lin_key(x).view(n, H, C)
        v = self.lin_value(x).view(n, H, C)
        if self.dense:
            out = self._dense(g, q, k, v)
        else:
            e = _edge_attr(f, p.edge_input) if p.edge_input is not None else None
            out = self._sparse(g, q, k, v, e)
        out = out.reshape(n, H * C) if p.concat else out.mean(1)
        if self.lin_skip is not None:
            r = self.lin_skip(x)
            if self.lin_beta is not None:
                beta = torch.sigmoid(self.lin_beta(torch.cat([out, r, out - r], -1)))
                out = beta * r + (1 - beta) * out
            else:
                out = out + r
        return {p.out_key: out}

    def describe_extra(self) -> str:
        if self.dense:
            how = dense_reason(self.ctx.graph_kind, self.ctx.self_loops, False)
        elif self.p.lowering == "sparse":
            how = "sparse (asked for: `lowering: sparse`)"
        elif self.p.edge_input is not None:
            how = "sparse (edge features enter the values, which the dense kernel cannot take)"
        else:
            how = f"sparse (graph kind `{self.ctx.graph_kind}` is not complete or causal)"
        return f"{_heads(self.p.heads)} x {self.p.out_dim}, {how}"


@register_block("transformer_conv")
class TransformerConv(GraphTransformer):
    """``transformer`` under PyG's name (``TransformerConv``): the same layer, parameters and
    state dict (see :class:`GraphTransformer`); prefer it in new specs, since a "transformer" in
    the usual sense is ``transformer_encoder_layer``."""

    class Params(GraphTransformer.Params):
        pass


DENSE_KINDS = ("complete", "causal")
"""Graph kinds whose edges are a fixed pattern of every graph's node pairs: attention on them
can run as dense blocks (:func:`dense_attention`)."""


def dense_reason(kind: str, self_loops: bool, has_bias: bool) -> str:
    """What :func:`dense_attention` does on this graph, in words (for ``graphdl describe``)."""
    if kind == "causal" and self_loops and not has_bias:
        return "dense SDPA is_causal (causal graph + self-loops; padding needs no mask)"
    what = {("complete", True): "complete graph + self-loops; key-padding mask when sizes differ",
            ("complete", False): "complete graph, diagonal masked; key-padding mask when sizes differ",
            ("causal", True): "causal mask j <= i",
            ("causal", False): "strict causal mask j < i; a first node gets 0"}
    bias = "; edge bias as additive mask" if has_bias else ""
    return f"dense SDPA over padded per-graph blocks ({what[(kind, self_loops)]}{bias})"


def _dense_pairs(g, idx: Tensor, m: int, num_nodes_hint: int | None) -> Tensor:
    """Flat ``(b·M + i)·M + j`` position of every edge ``j -> i`` of ``g`` in the ``(B, M, M)`` block stack.

    Cached under the hint that fixed ``M`` (as :func:`dense_index`), not under ``M`` itself: a
    key holding the size would make a ``torch.compile`` trace guard on its value (a recompile
    for every new largest graph)."""
    key = ("attention.dense_pairs", num_nodes_hint)
    if key not in g._cache:
        g._cache[key] = idx.index_select(0, g.dst) * m + (idx.index_select(0, g.src) % m)
    return g._cache[key]


def dense_attention(g, q: Tensor, k: Tensor, v: Tensor, *, kind: str, self_loops: bool,
                    bias: Tensor | None = None, dropout_p: float = 0.0,
                    num_nodes_hint: int | None = None) -> Tensor:
    r"""Multi-head attention of every node over its graph's nodes, as dense padded blocks.

    ``out_i = Σ_j softmax_j(q_i·k_j / √C + b_ij) v_j`` over the keys ``j`` that the graph kind
    allows: all nodes of ``i``'s graph (``complete``; ``j ≠ i`` without self-loops) or the
    earlier ones (``causal``: ``j ≤ i`` with self-loops, ``j < i`` without), node order being
    sequence order. Each graph is one block of a ``(B, H, M, M)`` batch padded to the largest
    graph ``M`` (a view, no copy, when all graphs have ``M`` nodes); one
    :func:`torch.nn.functional.scaled_dot_product_attention` call does the rest: no mask for
    complete graphs of one size, ``is_causal`` for causal graphs with self-loops (a causal
    query never reaches the padding after its graph), a boolean mask otherwise, and the bias
    as an additive float mask (``-inf`` off the pattern). A query with no key at all (a
    one-node complete graph, or the first node of a causal graph, without self-loops) gets
    zeros, not NaN.

    ``g`` must be the message-passing graph of that kind (what ``GraphModel.prepare`` makes):
    ``bias`` is read in its edge order and placed at each edge's block position.

    Args:
        g: the batch (``ptr``/``batch`` give the blocks; its edges are used only to place ``bias``).
        q, k, v: ``(N, H, C)`` per-node queries, keys and values.
        kind: ``complete`` or ``causal``; self_loops: whether ``j = i`` is a key.
        bias: ``(E, H)`` additive logit per edge and head, or None.
        dropout_p: dropout on the attention weights (pass 0 in evaluation).
        num_nodes_hint: fixed nodes per graph (skips the one host sync that finds ``M``).

    Shapes: ``(N, H, C) -> (N, H, C)``.
    """
    n, H, C = q.shape
    idx, counts, m = dense_index(g, num_nodes_hint)
    b = g.num_graphs
    full = n == b * m  # every graph has M nodes: padding is a view

    def pad(t):  # (N, H, C) -> (B, H, M, C)
        if not full:
            t = t.new_zeros(b * m, H, C).index_copy(0, idx, t)
        return t.view(b, m, H, C).transpose(1, 2)

    ar = torch.arange(m, device=q.device)
    causal = kind == "causal"
    is_causal = causal and self_loops and bias is None
    mask = None
    empty = None
    if not is_causal and not (kind == "complete" and self_loops and full and bias is None):
        if causal:
            allowed = ar.view(m, 1) >= ar.view(1, m) if self_loops else ar.view(m, 1) > ar.view(1, m)
            allowed = allowed.view(1, 1, m, m).expand(b, 1, m, m)
        else:
            allowed = (ar.view(1, m) < counts.view(b, 1)).view(b, 1, 1, m).expand(b, 1, m, m)
            if not self_loops:
                allowed = allowed & (ar.view(m, 1) != ar.view(1, m))
        if not self_loops:
            # a query with no key (one-node graph; first node of a causal graph): let it see
            # itself, then zero its output
            empty = ~allowed.any(-1, keepdim=True)
            allowed = allowed | (empty & (ar.view(m, 1) == ar.view(1, m)))
        mask = allowed
        if bias is not None:
            flat = bias.new_zeros(b * m * m, H).index_copy(0, _dense_pairs(g, idx, m, num_nodes_hint), bias)
            dense_bias = flat.view(b, m, m, H).permute(0, 3, 1, 2)
            mask = dense_bias.masked_fill(~allowed, float("-inf"))
    out = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=mask, dropout_p=dropout_p,
                                         is_causal=is_causal)
    if empty is not None:
        out = out.masked_fill(empty, 0.0)
    out = out.transpose(1, 2).reshape(b * m, H, C)
    return out if full else out.index_select(0, idx)


def sparse_attention(g, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None,
                     dropout_p: float = 0.0) -> Tensor:
    r"""Multi-head attention on the edges of ``g``: ``out_i = Σ_{j→i} softmax_j(q_i·k_j / √C + b_ij) v_j``.

    The logits are a sampled dense-dense product over the destination-sorted edges
    (:func:`~graphdl.ops.spmm.sddmm`), normalised per destination and head with an exact
    segment softmax (:func:`~graphdl.ops.segment.segment_softmax`), and the weighted sum of
    values is one CSR product (:func:`~graphdl.ops.spmm.spmm`). A node without incoming edges
    gets zeros. ``dropout_p`` drops attention weights (pass 0 in evaluation).

    Shapes: ``q, k, v (N, H, C)``, ``bias (E, H)`` -> ``(N, H, C)``.
    """
    n, _, C = q.shape
    csr, csr_t = g.csr(), g.csr_t()
    logits = sddmm(csr, q, k, csr_t) / math.sqrt(C)
    if bias is not None:
        logits = logits + bias
    alpha = segment_softmax(logits, g.dst, n, csr.rowptr)
    if dropout_p > 0:
        alpha = F.dropout(alpha, dropout_p, True)
    return spmm(csr, v, alpha, csr_t=csr_t)


def dense_index(g, num_nodes_hint: int | None = None) -> tuple[Tensor, Tensor, int]:
    """Where each node sits in a ``(B, M)`` padded layout: ``(flat index (N,), counts (B,), M)``.

    Node ``i`` of graph ``b`` goes to ``b * M + (i - ptr[b])``; ``M`` is the largest graph of
    the batch (or ``num_nodes_hint``). Cached on ``g``; reading ``M`` is the only host sync
    (:meth:`~graphdl.data.Graph.max_graph_nodes`, done before the trace by a compiled model).
    """
    key = ("attention.dense_index", num_nodes_hint)
    if key in g._cache:
        return g._cache[key]
    ptr = g.ptr
    counts = ptr[1:] - ptr[:-1]
    m = int(num_nodes_hint) if num_nodes_hint is not None else g.max_graph_nodes()
    m = max(m, 1)
    pos = torch.arange(g.num_nodes, device=g.device) - ptr.index_select(0, g.batch)
    idx = g.batch * m + pos
    g._cache[key] = (idx, counts, m)
    return idx, counts, m


__all__ = ["DENSE_KINDS", "GAT", "GATv2", "GraphTransformer", "LoopedEdges", "TransformerConv", "dense_attention",
           "dense_index", "dense_reason", "loop_fill", "looped_edges", "sparse_attention"]
