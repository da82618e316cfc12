"""The transformer of Vaswani et al. as message passing: ``multihead_attention`` and
``transformer_encoder_layer``, number for number ``torch.nn.MultiheadAttention`` and
``torch.nn.TransformerEncoderLayer`` (Vaswani et al. 2017, "Attention Is All You Need",
https://arxiv.org/abs/1706.03762).

A sequence is a graph whose node order is the sequence order; which keys a query sees is the
graph (``graph.kind``):

* ``complete`` with ``self_loops: true``: every position of its own sequence, the encoder's
  attention. Sequences of different lengths in one batch are different graphs, so padding is
  never attended to: the batch structure *is* torch's ``src_key_padding_mask``.
* ``causal`` with ``self_loops: true``: positions ``j <= i`` (torch's ``is_causal`` mask), a
  decoder's / language model's attention.
* any other graph (``given`` bonds, ``knn``...): the node's in-neighbours, as a graph
  transformer on sparse structure.

Pair information enters as an additive logit per edge and head (``attn_bias``: edge fields of
``heads`` channels, summed), e.g. Graphormer's shortest-path-distance and bond biases on a
complete molecular graph (:mod:`graphdl.nn.graphormer`).

Lowering (picked at compile time, printed by ``graphdl describe``): on ``complete`` and
``causal`` graphs, dense ``scaled_dot_product_attention`` over per-graph blocks padded to the
largest graph (:func:`graphdl.nn.attention.dense_attention`); on any other graph, per-edge
logits, an exact segment softmax and a CSR product
(:func:`graphdl.nn.attention.sparse_attention`). The two agree to float64 round-off (tests).

How these differ from the ``transformer`` block (PyG ``TransformerConv``): one fused
in-projection of ``d`` channels split into ``heads`` heads of ``d / heads``, an output
projection, and (in the encoder layer) the feed-forward network, residuals and layer norms;
the parameters carry torch's names (``in_proj_weight``, ``out_proj``, ``linear1``, ``norm1``...)
so a torch state dict loads unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt, field_validator
from torch import Tensor, nn

from graphdl.errors import InferenceError
from graphdl.nn.attention import DENSE_KINDS, dense_attention, dense_reason, sparse_attention
from graphdl.nn.base import Block, BuildContext, Signature, register_block
from graphdl.nn.basic import FieldParams, _check_key
from graphdl.types import Scalar, split_key

Lowering = Literal["auto", "dense", "sparse"]


class _AttentionParams(FieldParams):
    """Options shared by ``multihead_attention`` and ``transformer_encoder_layer``."""

    heads: PositiveInt = 1
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bias: bool = True
    attn_bias: list[str] = Field(default_factory=list)
    lowering: Lowering = "auto"

    @field_validator("attn_bias", mode="before")
    @classmethod
    def _v_bias(cls, v):
        if v is None:
            return []
        v = [v] if isinstance(v, str) else v
        if isinstance(v, list):
            for k in v:
                if isinstance(k, str):
                    _check_key(k)
        return v


def _plan_attention(cls_name: str, p, fields, ctx: BuildContext) -> tuple[int, dict, str, str]:
    """Check the fields of an attention block; returns (width, reads, lowering, reason)."""
    if not p.input.startswith("node."):
        raise InferenceError(f"{cls_name} reads node features; `{p.input}` is not a node field (use e.g. `node.h`)")
    if not p.out_key.startswith("node."):
        raise InferenceError(f"{cls_name} writes node features; `{p.out_key}` is not a node field")
    d = fields.need_scalar(p.input, cls_name)
    if d % p.heads:
        raise InferenceError(f"{cls_name}: `{p.input}` has {d} channels, which {p.heads} heads cannot split evenly "
                             f"(each head gets d / heads channels, as torch's MultiheadAttention); pick heads "
                             f"dividing {d}")
    reads = {p.input: fields[p.input]}
    for k in p.attn_bias:
        if split_key(k)[0] != "edge":
            raise InferenceError(f"{cls_name} `attn_bias` adds one logit per edge and head; `{k}` is not an edge "
                                 f"field (use e.g. `edge.spd`)")
        w = fields.need_scalar(k, cls_name)
        if w not in (1, p.heads):
            raise InferenceError(f"{cls_name} `attn_bias` field `{k}` has {w} channels; it needs one per head "
                                 f"({p.heads}) or one shared by all heads")
        reads[k] = fields[k]
    kind = ctx.graph_kind
    if p.lowering == "dense" and kind not in DENSE_KINDS:
        raise InferenceError(f"{cls_name} `lowering: dense` attends over padded per-graph blocks, which is the "
                             f"message-passing graph only when `graph.kind` is complete or causal (found `{kind}`); "
                             f"use `lowering: auto` or `sparse`")
    if p.lowering == "sparse":
        return d, reads, "sparse", "sparse: edge logits + segment softmax + CSR product (`lowering: sparse`)"
    if kind in DENSE_KINDS:
        return d, reads, "dense", dense_reason(kind, ctx.self_loops, bool(p.attn_bias))
    return d, reads, "sparse", (f"sparse: edge logits + segment softmax + CSR product (graph kind `{kind}` is "
                                f"not complete or causal)")


@register_block("multihead_attention")
class MultiheadAttention(Block):
    r"""Multi-head scaled dot-product attention as message passing: ``torch.nn.MultiheadAttention``
    (self-attention, ``kdim = vdim = d``) over the message-passing graph.

    ``[q | k | v] = W_in x + b_in`` (one ``(3d, d)`` in-projection, each third split head-major
    into ``H`` heads of ``C = d / H`` channels), per head
    ``α_ij = softmax_{j→i}(q_i·k_j / √C + Σ_f b^f_ij)`` (exact, per receiver ``i``; no clamping),
    ``o_i = Σ_{j→i} α_ij v_j``, heads concatenated, ``out_i = W_out o_i + b_out``. Attention
    dropout on ``α`` in training. A node with no incoming edge gets ``b_out`` (its attention
    sum is 0, never NaN).

    Not the ``transformer`` block (PyG ``TransformerConv``: per-head widths ``out_dim``, a root
    weight, no output projection): this block is torch's attention, weight for weight
    (``in_proj_weight``, ``in_proj_bias``, ``out_proj``).

    Args (spec keys):
        input / output: node field read / written (default: overwrite ``input``), ``d`` channels.
        heads: number of heads ``H`` (must divide ``d``; 1).
        dropout: dropout on the attention weights, training only (0).
        bias: biases of the in- and out-projections (true).
        attn_bias: edge field(s) with ``H`` channels (or 1, shared by the heads) added to the
            logits, summed (Graphormer's spatial and edge encodings); none by default.
        lowering: ``auto`` (dense on complete/causal graphs, sparse elsewhere), ``dense`` or
            ``sparse`` (see the module docstring).

    Shapes: ``input (N, d)``, ``attn_bias (E, H)`` -> ``output (N, d)``.
    """

    family = "attention"

    class Params(_AttentionParams):
        pass

    @classmethod
    def infer(cls, p, fields, ctx):
        d, reads, lowering, reason = _plan_attention(cls.name, p, fields, ctx)
        return Signature(reads, {p.out_key: Scalar(d)}, {"dim": d, "lowering": lowering, "reason": reason})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d = sig.info["dim"]
        self.embed_dim = d
        self.lowering = sig.info["lowering"]
        self.reason = sig.info["reason"]
        # the padded layout's side is read from the batch (GraphModel reads it before a trace)
        self.needs_max_graph_nodes = self.lowering == "dense" and getattr(ctx, "num_nodes_hint", None) is None
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d)) if p.bias else None
        self.out_proj = nn.Linear(d, d, bias=p.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialisation: Xavier-uniform in-projection, zero biases."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)

    def _bias(self, f) -> Tensor | None:
        """The summed ``attn_bias`` fields, ``(E, H)``."""
        total = None
        for k in self.p.attn_bias:
            b = f[k]
            b = b.unsqueeze(-1) if b.dim() == 1 else b
            total = b if total is None else total + b
        if total is not None and total.size(-1) != self.p.heads:
            total = total.expand(-1, self.p.heads)
        return total

    def attend(self, g, x: Tensor, bias: Tensor | None) -> Tensor:
        """Self-attention of the node features ``x`` ``(N, d)`` over ``g``; returns ``(N, d)``."""
        n, d = x.shape
        H = self.p.heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(n, 3, H, d // H)
        q, k, v = qkv.unbind(1)
        drop = self.p.dropout if self.training else 0.0
        if self.lowering == "dense":
            o = dense_attention(g, q, k, v, kind=self.ctx.graph_kind, self_loops=self.ctx.self_loops, bias=bias,
                                dropout_p=drop, num_nodes_hint=self.ctx.num_nodes_hint)
        else:
            o = sparse_attention(g, q, k, v, bias=bias, dropout_p=drop)
        return self.out_proj(o.reshape(n, d))

    def forward(self, g, f):
        return {self.p.out_key: self.attend(g, f[self.p.input], self._bias(f))}

    def describe_extra(self) -> str:
        return f"{_heads(self.p.heads)} x {self.embed_dim // self.p.heads}; {self.reason}"


def _heads(h: int) -> str:
    return f"{h} head" + ("s" if h > 1 else "")


@register_block("transformer_encoder_layer")
class TransformerEncoderLayer(Block):
    r"""A transformer encoder layer: ``torch.nn.TransformerEncoderLayer`` on the message-passing graph.

    Post-norm (``norm_first: false``, torch's default)::

        x = norm1(x + dropout1(SA(x)))
        x = norm2(x + dropout2(FF(x)))

    pre-norm (``norm_first: true``)::

        x = x + dropout1(SA(norm1(x)))
        x = x + dropout2(FF(norm2(x)))

    with ``SA`` the ``multihead_attention`` block (attention dropout = ``dropout``) and
    ``FF(x) = linear2(dropout(act(linear1(x))))``, ``act`` = ReLU or the exact (erf) GELU.
    Sub-modules and parameters carry torch's names (``self_attn.in_proj_weight``,
    ``self_attn.out_proj``, ``linear1``, ``linear2``, ``norm1``, ``norm2``), so
    ``block.load_state_dict(torch_layer.state_dict())`` copies a torch layer. With the batch's
    graphs as sequences and ``graph: {kind: complete, self_loops: true}`` it equals torch's
    layer with ``src_key_padding_mask`` (valid positions); with ``kind: causal`` it equals
    ``is_causal=True`` (tests: ``tests/nn/test_transformer_parity.py``, float64, 1e-10). A stack
    is ``repeat: L`` (independent weights, as ``nn.TransformerEncoder``'s clones).

    Not the ``transformer`` block (PyG ``TransformerConv``, a graph layer without feed-forward,
    output projection or norms).

    Args (spec keys):
        input / output: node field (``d`` channels) read / written (default: overwrite ``input``).
        heads: attention heads (must divide ``d``). ff_dim: width of the feed-forward network
            (torch's ``dim_feedforward``). dropout: one rate for attention weights, both
            residual branches and the feed-forward hidden layer (torch's default 0.1).
        activation: ``relu`` (default) or ``gelu`` (exact erf form). norm_first: pre-norm (false).
        eps: layer-norm epsilon (torch's ``layer_norm_eps``, 1e-5). bias: biases of every linear
            map and layer norm (true). attn_bias, lowering: as ``multihead_attention``.

    Shapes: ``input (N, d)``, ``attn_bias (E, H)`` -> ``output (N, d)``.
    """

    family = "attention"

    class Params(_AttentionParams):
        ff_dim: PositiveInt
        dropout: float = Field(0.1, ge=0.0, lt=1.0)
        activation: Literal["relu", "gelu"] = "relu"
        norm_first: bool = False
        eps: PositiveFloat = 1e-5

    @classmethod
    def infer(cls, p, fields, ctx):
        d, reads, lowering, reason = _plan_attention(cls.name, p, fields, ctx)
        return Signature(reads, {p.out_key: Scalar(d)}, {"dim": d, "lowering": lowering, "reason": reason})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d = sig.info["dim"]
        attn_params = MultiheadAttention.Params(type="multihead_attention", input=p.input, output=p.out_key,
                                                heads=p.heads, dropout=p.dropout, bias=p.bias,
                                                attn_bias=list(p.attn_bias), lowering=p.lowering)
        attn_sig = Signature(dict(sig.reads), dict(sig.writes), dict(sig.info))
        self.self_attn = MultiheadAttention(attn_params, attn_sig, self.ctx)
        self.linear1 = nn.Linear(d, p.ff_dim, bias=p.bias)
        self.linear2 = nn.Linear(p.ff_dim, d, bias=p.bias)
        self.norm1 = nn.LayerNorm(d, eps=p.eps, bias=p.bias)
        self.norm2 = nn.LayerNorm(d, eps=p.eps, bias=p.bias)
        self.dropout = nn.Dropout(p.dropout)
        self.dropout1 = nn.Dropout(p.dropout)
        self.dropout2 = nn.Dropout(p.dropout)

    def _ff(self, x: Tensor) -> Tensor:
        h = self.linear1(x)
        h = F.relu(h) if self.p.activation == "relu" else F.gelu(h)
        return self.dropout2(self.linear2(self.dropout(h)))

    def forward(self, g, f):
        x = f[self.p.input]
        bias = self.self_attn._bias(f)
        if self.p.norm_first:
            x = x + self.dropout1(self.self_attn.attend(g, self.norm1(x), bias))
            x = x + self._ff(self.norm2(x))
        else:
            x = self.norm1(x + self.dropout1(self.self_attn.attend(g, x, bias)))
            x = self.norm2(x + self._ff(x))
        return {self.p.out_key: x}

    def describe_extra(self) -> str:
        p = self.p
        order = "pre-norm" if p.norm_first else "post-norm"
        return (f"{_heads(p.heads)} x {self.self_attn.embed_dim // p.heads}, ff {p.ff_dim} {p.activation}, {order}; "
                f"{self.self_attn.reason}")


__all__ = ["MultiheadAttention", "TransformerEncoderLayer"]
