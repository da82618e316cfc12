"""Generic blocks: a message-passing layer assembled from named parts, and Battaglia's graph network.

``message_passing`` writes a new layer in YAML, without Python: pick a *message* (what
travels along an edge), an *aggregate* (how a node reduces its incoming messages) and an
*update* (how it combines the result with its own state)::

    - type: message_passing
      input: node.h
      edge_input: edge.e
      message: {op: mlp, inputs: [src, dst, edge], hidden: [64], out_dim: 64}
      aggregate: sum
      update: {op: gru}

``graph_network`` is the full graph-network block of Battaglia et al. (2018): edge, node
and global updates, each an MLP that may be switched off, with configurable aggregators.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, TypeAdapter, field_validator, model_validator
from torch import Tensor, nn

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, BlockParams, Signature, register_block
from graphdl.nn.basic import _check_key
from graphdl.nn.mlp import MLP, ActName, activation
from graphdl.ops import kernels
from graphdl.ops.fused import edge_gather_add
from graphdl.ops.segment import scatter, segment_softmax, segment_sum
from graphdl.ops.spmm import spmm
from graphdl.types import FieldTable, Scalar, split_key


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(v: list) -> list:
    if len(set(v)) != len(v):
        raise ValueError(f"`inputs` lists an entry twice: {v}")
    return v


EdgePart = Literal["src", "dst", "edge"]
"""What a message may read: the source node, the destination node, the edge."""


# ------------------------------------------------------------------------------ messages
class CopyMessage(_Op):
    """``m_ij = x_j`` (``from: src``) or ``m_ij = e_ij`` (``from: edge``)."""

    op: Literal["copy"]
    from_: Literal["src", "edge"] = Field("src", alias="from")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LinearMessage(_Op):
    """``m_ij = W [x_j | x_i | e_ij] + b`` over the listed ``inputs`` (in that order)."""

    op: Literal["linear"]
    inputs: list[EdgePart] = Field(default_factory=lambda: ["src"], min_length=1)
    out_dim: PositiveInt | None = None
    bias: bool = True
    act: ActName | None = None

    _u = field_validator("inputs")(_unique)


class MLPMessage(_Op):
    """``m_ij = MLP([x_j | x_i | e_ij])`` over the listed ``inputs`` (in that order)."""

    op: Literal["mlp"]
    inputs: list[EdgePart] = Field(default_factory=lambda: ["src", "dst", "edge"], min_length=1)
    hidden: list[PositiveInt] = Field(default_factory=list)
    out_dim: PositiveInt | None = None
    act: ActName = "relu"
    norm: Literal["batch", "layer"] | None = None
    last_act: bool = False

    _u = field_validator("inputs")(_unique)


class ProductMessage(_Op):
    """``m_ij = act(x_j ⊙ e_ij)`` (``product``) or ``act(x_j + e_ij)`` (``add``, as in GINE); equal dims."""

    op: Literal["product", "add"]
    act: ActName | None = None


class EdgeMatrixMessage(_Op):
    """``m_ij = x_j A(e_ij)``, ``A`` an MLP of the edge features reshaped to ``(d_in, out_dim)``
    (the edge network of Gilmer et al. 2017)."""

    op: Literal["edge_matrix"]
    hidden: list[PositiveInt] = Field(default_factory=list)
    out_dim: PositiveInt | None = None
    act: ActName = "relu"


Message = Annotated[
    CopyMessage | LinearMessage | MLPMessage | ProductMessage | EdgeMatrixMessage,
    Field(discriminator="op"),
]

# ----------------------------------------------------------------------------- aggregates
Reduction = Literal["sum", "mean", "max", "min"]


class ReduceAggregate(_Op):
    """``a_i = ⊕_{j ∈ N(i)} m_ij`` with ⊕ one of sum, mean, max, min (0 for no neighbours)."""

    op: Reduction


class AttentionAggregate(_Op):
    """``a_i = ‖_h Σ_j α^h_ij m^h_ij``, ``α^h_ij = softmax_j(act(w_h · [x_i | x_j | e_ij]))`` per head.

    The message is split into ``heads`` equal chunks; each head has its own logits.
    """

    op: Literal["softmax_attention"]
    heads: PositiveInt = 1
    inputs: list[EdgePart] = Field(default_factory=lambda: ["dst", "src"], min_length=1)
    act: ActName | None = "leaky_relu"

    _u = field_validator("inputs")(_unique)


Aggregate = Annotated[ReduceAggregate | AttentionAggregate, Field(discriminator="op")]

# -------------------------------------------------------------------------------- updates
UpdatePart = Literal["self", "agg"]


class ReplaceUpdate(_Op):
    """``x_i' = a_i``."""

    op: Literal["replace"]


class SumUpdate(_Op):
    """``x_i' = MLP((1 + ε) x_i + a_i)`` (GIN; Xu et al. 2019). No ``mlp`` → no MLP."""

    op: Literal["sum"]
    eps: float = 0.0
    train_eps: bool = False
    mlp: SlotMLP | None = None


class LinearUpdate(_Op):
    """``x_i' = W [x_i | a_i] + b`` over the listed ``inputs``."""

    op: Literal["linear"]
    inputs: list[UpdatePart] = Field(default_factory=lambda: ["self", "agg"], min_length=1)
    out_dim: PositiveInt | None = None
    bias: bool = True

    _u = field_validator("inputs")(_unique)


class MLPUpdate(_Op):
    """``x_i' = MLP([x_i | a_i])`` over the listed ``inputs``."""

    op: Literal["mlp"]
    inputs: list[UpdatePart] = Field(default_factory=lambda: ["self", "agg"], min_length=1)
    hidden: list[PositiveInt] = Field(default_factory=list)
    out_dim: PositiveInt | None = None
    act: ActName = "relu"
    norm: Literal["batch", "layer"] | None = None
    last_act: bool = False

    _u = field_validator("inputs")(_unique)


class GRUUpdate(_Op):
    """``x_i' = GRU(a_i, x_i)`` (input ``a_i``, hidden state ``x_i``; Gilmer et al. 2017)."""

    op: Literal["gru"]


Update = Annotated[
    ReplaceUpdate | SumUpdate | LinearUpdate | MLPUpdate | GRUUpdate, Field(discriminator="op")
]


class SlotMLP(_Op):
    """An MLP: ``hidden`` widths, then ``out_dim``; ``act`` between layers, optional ``norm``
    between them, optional ``out_norm: layer`` (a LayerNorm over the output, as GNS's MLPs)."""

    hidden: list[PositiveInt] = Field(default_factory=list)
    out_dim: PositiveInt
    act: ActName = "relu"
    norm: Literal["batch", "layer"] | None = None
    last_act: bool = False
    out_norm: Literal["layer"] | None = None


SumUpdate.model_rebuild()


MessageName = Literal["copy", "linear", "mlp", "product", "add", "edge_matrix"]
AggregateName = Literal["sum", "mean", "max", "min", "softmax_attention"]
UpdateName = Literal["replace", "sum", "linear", "mlp", "gru"]
_ADAPTERS = {"message": TypeAdapter(Message), "aggregate": TypeAdapter(Aggregate), "update": TypeAdapter(Update)}
"""``aggregate: sum`` is short for ``aggregate: {op: sum}`` (same for message and update)."""


def _edge_parts(inputs, x: Tensor, e: Tensor | None, src: Tensor, dst: Tensor):
    """``(node-level tensor, gather index or None)`` for each of ``src``/``dst``/``edge``."""
    table = {"src": (x, src), "dst": (x, dst), "edge": (e, None)}
    return [table[k] for k in inputs]


def split_linear(parts: list[tuple[Tensor, Tensor | None]], lin: nn.Linear, dims: list[int], g=None) -> Tensor:
    """``lin([a | b | ...])`` where some parts live on nodes and are gathered to edges afterwards.

    Equals ``lin`` applied to the concatenated per-edge features, but multiplies node
    features on the ``N`` nodes before gathering them to the ``E`` edges (``E ≫ N`` usually).
    With the graph ``g`` given, parts gathered by ``g.src`` / ``g.dst`` (at most one each, beside
    at most one edge part) are added on graphdl's C++ kernel (:func:`graphdl.ops.fused.edge_gather_add`:
    one pass, into the edge part's product, no gathered copies) where it applies.

    Shapes: each part is ``(N_k, d_k)`` with a gather index ``(E,)``, or ``(E, d_k)`` with
    ``None``; ``dims = [d_k...]`` → ``(E, lin.out_features)``.
    """
    ws = lin.weight.split(dims, dim=1)
    if g is not None:
        fused = _split_linear_fused(parts, lin, ws, g)
        if fused is not None:
            return fused
    out = None
    for (t, idx), w in zip(parts, ws):
        y = F.linear(t, w)
        if idx is not None:
            y = y.index_select(0, idx)
        out = y if out is None else out + y
    if lin.bias is not None:
        out = out + lin.bias
    return out


def _split_linear_fused(parts, lin: nn.Linear, ws, g) -> Tensor | None:
    """:func:`split_linear` on the edge kernel, or None where it does not apply."""
    if torch.compiler.is_compiling() or kernels.disabled():  # data_ptr comparisons break a traced graph
        return None
    def same(idx: Tensor, ref: Tensor) -> bool:  # g.src / g.dst are fresh views of edge_index on each access
        return idx.data_ptr() == ref.data_ptr() and idx.shape == ref.shape and idx.stride() == ref.stride()

    slots: dict[str, tuple[Tensor, Tensor]] = {}
    for (t, idx), w in zip(parts, ws):
        key = "base" if idx is None else "dst" if same(idx, g.dst) else "src" if same(idx, g.src) else None
        if key is None or key in slots or t.dim() != 2:
            return None
        slots[key] = (t, w)
    tensors = [t for t, _ in slots.values()] + [lin.weight]
    if not kernels.usable(*tensors) or len({t.dtype for t in tensors}) != 1:
        return None
    from graphdl.nn.conv import _csr_pair

    y = {k: F.linear(t, w) for k, (t, w) in slots.items()}
    return edge_gather_add(y.get("base"), y.get("dst"), y.get("src"), lin.bias, *_csr_pair(g), overwrite_base=True)


def _edge_mlp(parts, mlp: MLP, dims: list[int], g=None) -> Tensor:
    """An MLP over concatenated edge parts, its first layer applied before the gather."""
    h = split_linear(parts, mlp[0], dims, g)
    for i in range(1, len(mlp)):
        h = mlp[i](h)
    return h


@register_block("message_passing")
class MessagePassing(Block):
    """A message-passing layer assembled from a message, an aggregate and an update (MPNN framework,
    Gilmer et al. 2017): ``x_i' = U(x_i, ⊕_{j ∈ N(i)} M(x_j, x_i, e_ij))``.

    Edges run from ``src`` (j) to ``dst`` (i). Parts (``op:``):

    * message: ``copy`` (``from: src|edge``), ``linear`` / ``mlp`` of ``inputs`` ⊂ {src, dst,
      edge}, ``product`` (x_j ⊙ e_ij) / ``add`` (x_j + e_ij), ``edge_matrix`` (x_j A(e_ij));
    * aggregate: ``sum``, ``mean``, ``max``, ``min`` or ``{op: softmax_attention, heads: H}``;
    * update: ``replace`` (a_i), ``sum`` ((1+ε) x_i + a_i, then an optional ``mlp``),
      ``linear`` / ``mlp`` of ``inputs`` ⊂ {self, agg}, ``gru`` (GRU(a_i, x_i)).

    A bare name is short for ``{op: name}``. ``out_dim`` of the block is the default of the
    ``out_dim`` of the message and update, and is checked against the block's output width.

    Lowering (``lowering: auto``): a ``copy`` from ``src`` aggregated by ``sum``/``mean`` runs
    as one CSR sparse × dense product (``graphdl.ops.spmm``); everything else gathers the
    messages to edges and reduces them with ``graphdl.ops.segment`` over dst-sorted edges.
    ``lowering: gather`` forces the general path; ``csr`` demands the sparse one.

    Shapes: ``input`` ``(N, d)``, ``edge_input`` ``(E, d_e)`` → ``output`` ``(N, out_dim)``.
    """

    family = "generic"

    class Params(BlockParams):
        input: str = "node.h"
        output: str | None = None
        edge_input: str | None = None
        message: MessageName | Message = Field("copy", validate_default=True)
        aggregate: AggregateName | Aggregate = Field("sum", validate_default=True)
        update: UpdateName | Update = Field("replace", validate_default=True)
        out_dim: PositiveInt | None = None
        act: ActName | None = None
        lowering: Literal["auto", "csr", "gather"] = "auto"

        _v_in = field_validator("input")(_check_key)

        @field_validator("output", "edge_input")
        @classmethod
        def _v_keys(cls, v):
            return None if v is None else _check_key(v)

        @field_validator("message", "aggregate", "update", mode="after")
        @classmethod
        def _expand(cls, v, info):
            if not isinstance(v, str):
                return v
            return _ADAPTERS[info.field_name].validate_python({"op": v})

        @model_validator(mode="after")
        def _spaces(self):
            if split_key(self.input)[0] != "node":
                raise ValueError(f"message_passing reads a node field; `input: {self.input}` is not one")
            if self.output is not None and split_key(self.output)[0] != "node":
                raise ValueError(f"message_passing writes a node field; `output: {self.output}` is not one")
            if self.edge_input is not None and split_key(self.edge_input)[0] != "edge":
                raise ValueError(f"`edge_input: {self.edge_input}` must be an edge field (e.g. `edge.e`)")
            return self

        @property
        def out_key(self) -> str:
            return self.output or self.input

    # ----------------------------------------------------------------------------- infer
    @classmethod
    def infer(cls, p, fields: FieldTable, ctx) -> Signature:
        d = fields.need_scalar(p.input, cls.name)
        reads = {p.input: fields[p.input]}
        msg, agg, upd = p.message, p.aggregate, p.update
        readers = []
        if ((isinstance(msg, CopyMessage) and msg.from_ == "edge")
                or (isinstance(msg, (LinearMessage, MLPMessage)) and "edge" in msg.inputs)
                or isinstance(msg, (ProductMessage, EdgeMatrixMessage))):
            readers.append(f"message `{msg.op}`")
        if isinstance(agg, AttentionAggregate) and "edge" in agg.inputs:
            readers.append(f"aggregate `{agg.op}`")
        de = 0
        if readers:
            if p.edge_input is None:
                raise InferenceError(f"message_passing: the {' and the '.join(readers)} read{'s' if len(readers) == 1 else ''} "
                                     f"edge features, but the block has no `edge_input:`; add e.g. `edge_input: edge.e`")
            de = fields.need_scalar(p.edge_input, cls.name)
            reads[p.edge_input] = fields[p.edge_input]
        elif p.edge_input is not None:
            raise InferenceError(f"message_passing: `edge_input: {p.edge_input}` is given but nothing reads "
                                 f"`edge`; add `edge` to the message's `inputs`, or drop `edge_input`")

        part_dim = {"src": d, "dst": d, "edge": de}
        # message width
        if isinstance(msg, CopyMessage):
            m = d if msg.from_ == "src" else de
        elif isinstance(msg, ProductMessage):
            if de != d:
                raise InferenceError(f"message_passing: message `{msg.op}` combines `{p.input}` ({d}) and "
                                     f"`{p.edge_input}` ({de}) channel by channel, so they need the same dim; "
                                     f"map the edge field to {d} with a `linear` block first")
            m = d
        else:
            m = msg.out_dim or p.out_dim
            if m is None:
                raise InferenceError(f"message_passing: message `{msg.op}` needs `out_dim` (set it in "
                                     f"`message:` or the block's `out_dim`)")
        if isinstance(agg, AttentionAggregate) and m % agg.heads:
            raise InferenceError(f"message_passing: softmax_attention splits the message ({m} channels) into "
                                 f"{agg.heads} heads; choose a message width divisible by {agg.heads}")
        # update width
        if isinstance(upd, ReplaceUpdate):
            out = m
        elif isinstance(upd, SumUpdate):
            if m != d:
                raise InferenceError(f"message_passing: update `sum` adds the input ({d}) to the aggregated "
                                     f"message ({m}); they need the same dim (set the message's out_dim to {d})")
            out = upd.mlp.out_dim if upd.mlp is not None else d
        elif isinstance(upd, GRUUpdate):
            out = d
        else:
            out = upd.out_dim or p.out_dim
            if out is None:
                raise InferenceError(f"message_passing: update `{upd.op}` needs `out_dim` (set it in "
                                     f"`update:` or the block's `out_dim`)")
        if p.out_dim is not None and out != p.out_dim:
            raise InferenceError(f"message_passing: `out_dim: {p.out_dim}` but the update `{upd.op}` gives "
                                 f"{out} channels; fix `out_dim` or the update")
        csr_ok = isinstance(msg, CopyMessage) and msg.from_ == "src" and isinstance(agg, ReduceAggregate) \
            and agg.op in ("sum", "mean")
        if p.lowering == "csr" and not csr_ok:
            raise InferenceError("message_passing: `lowering: csr` needs a `copy` message from `src` with a "
                                 "`sum` or `mean` aggregate; use `lowering: auto`")
        lowering = "csr" if (csr_ok and p.lowering != "gather") else "gather"
        info = {"in_dim": d, "edge_dim": de, "msg_dim": m, "out_dim": out, "part_dim": part_dim,
                "lowering": lowering}
        return Signature(reads, {p.out_key: Scalar(out)}, info)

    # ----------------------------------------------------------------------------- build
    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        i = sig.info
        d, de, m, out, pd = i["in_dim"], i["edge_dim"], i["msg_dim"], i["out_dim"], i["part_dim"]
        self.lowering = i["lowering"]
        msg, agg, upd = p.message, p.aggregate, p.update
        if isinstance(msg, LinearMessage):
            self.msg_lin = nn.Linear(sum(pd[k] for k in msg.inputs), m, bias=msg.bias)
        elif isinstance(msg, MLPMessage):
            self.msg_mlp = MLP([sum(pd[k] for k in msg.inputs), *msg.hidden, m], msg.act, msg.norm,
                               last_act=msg.last_act)
        elif isinstance(msg, EdgeMatrixMessage):
            self.edge_net = MLP([de, *msg.hidden, d * m], msg.act)
        self.msg_act = activation(msg.act) if getattr(msg, "act", None) and not isinstance(
            msg, (MLPMessage, EdgeMatrixMessage)) else None
        self._msg_dims = [pd[k] for k in getattr(msg, "inputs", [])]
        if isinstance(agg, AttentionAggregate):
            self.att = nn.Linear(sum(pd[k] for k in agg.inputs), agg.heads)
            self._att_dims = [pd[k] for k in agg.inputs]
            self.att_act = activation(agg.act) if agg.act else None
        if isinstance(upd, SumUpdate):
            eps = torch.tensor([float(upd.eps)])
            if upd.train_eps:
                self.eps = nn.Parameter(eps)
            else:
                self.register_buffer("eps", eps)
            if upd.mlp is not None:
                s = upd.mlp
                self.upd_mlp = MLP([d, *s.hidden, s.out_dim], s.act, s.norm, last_act=s.last_act,
                                   out_norm=s.out_norm)
        elif isinstance(upd, LinearUpdate):
            self.upd_lin = nn.Linear(sum({"self": d, "agg": m}[k] for k in upd.inputs), out, bias=upd.bias)
        elif isinstance(upd, MLPUpdate):
            self.upd_mlp = MLP([sum({"self": d, "agg": m}[k] for k in upd.inputs), *upd.hidden, out],
                               upd.act, upd.norm, last_act=upd.last_act)
        elif isinstance(upd, GRUUpdate):
            self.gru = nn.GRUCell(m, d)
        self.out_act = activation(p.act) if p.act else None

    def describe_extra(self) -> str:
        agg = self.p.aggregate
        if self.lowering == "csr":
            return f"csr spmm ({agg.op})"
        if isinstance(agg, AttentionAggregate):
            return f"gather + segment_softmax ({agg.heads} head{'s' if agg.heads > 1 else ''})"
        return f"gather + segment_{agg.op}"

    # --------------------------------------------------------------------------- forward
    def messages(self, g, x: Tensor, e: Tensor | None) -> Tensor:
        """The per-edge messages ``(E, msg_dim)``."""
        msg = self.p.message
        src, dst = g.src, g.dst
        if isinstance(msg, CopyMessage):
            return x.index_select(0, src) if msg.from_ == "src" else e
        if isinstance(msg, ProductMessage):
            xs = x.index_select(0, src)
            out = xs * e if msg.op == "product" else xs + e
        elif isinstance(msg, LinearMessage):
            out = split_linear(_edge_parts(msg.inputs, x, e, src, dst), self.msg_lin, self._msg_dims, g)
        elif isinstance(msg, MLPMessage):
            return _edge_mlp(_edge_parts(msg.inputs, x, e, src, dst), self.msg_mlp, self._msg_dims, g)
        else:  # edge_matrix
            # explicit sizes (no -1): E or N may be 0
            a = self.edge_net(e).view(e.size(0), x.size(1), self.sig.info["msg_dim"])
            return torch.bmm(x.index_select(0, src).unsqueeze(1), a).squeeze(1)
        return self.msg_act(out) if self.msg_act is not None else out

    def aggregate(self, g, x: Tensor, e: Tensor | None) -> Tensor:
        """The aggregated messages ``(N, msg_dim)``."""
        agg = self.p.aggregate
        n = g.num_nodes
        if self.lowering == "csr":
            return spmm(g.csr(), x, reduce=agg.op, csr_t=g.csr_t())
        m = self.messages(g, x, e)
        ptr = g.csr().rowptr
        if isinstance(agg, ReduceAggregate):
            return scatter(m, g.dst, n, agg.op, ptr)
        logits = split_linear(_edge_parts(agg.inputs, x, e, g.src, g.dst), self.att, self._att_dims)
        if self.att_act is not None:
            logits = self.att_act(logits)
        alpha = segment_softmax(logits, g.dst, n, ptr)  # (E, H)
        h = agg.heads
        c = m.size(1)
        weighted = m.view(m.size(0), h, c // h) * alpha.unsqueeze(-1)
        return segment_sum(weighted, g.dst, n, ptr).reshape(n, c)

    def forward(self, g, f):
        p = self.p
        x = f[p.input]
        e = f[p.edge_input] if p.edge_input is not None and p.edge_input in self.sig.reads else None
        a = self.aggregate(g, x, e)
        upd = p.update
        if isinstance(upd, ReplaceUpdate):
            out = a
        elif isinstance(upd, SumUpdate):
            out = (1 + self.eps) * x + a
            if upd.mlp is not None:
                out = self.upd_mlp(out)
        elif isinstance(upd, GRUUpdate):
            out = self.gru(a, x)
        else:
            parts = torch.cat([{"self": x, "agg": a}[k] for k in upd.inputs], -1)
            out = self.upd_lin(parts) if isinstance(upd, LinearUpdate) else self.upd_mlp(parts)
        if self.out_act is not None:
            out = self.out_act(out)
        return {p.out_key: out}


# ------------------------------------------------------------------------- graph network
Off = Literal[False]
"""``off`` / ``false`` / ``null`` switch a slot of the graph network off."""


class EdgeFn(SlotMLP):
    """φ_e: an MLP of the listed ``inputs`` ⊂ {edge, src, dst, global} (default: all present)."""

    inputs: list[Literal["edge", "src", "dst", "global"]] | None = None

    _u = field_validator("inputs")(lambda v: v if v is None else _unique(v))


class NodeFn(SlotMLP):
    """φ_v: an MLP of the listed ``inputs`` ⊂ {agg, node, global} (default: all present)."""

    inputs: list[Literal["agg", "node", "global"]] | None = None

    _u = field_validator("inputs")(lambda v: v if v is None else _unique(v))


class GlobalFn(SlotMLP):
    """φ_u: an MLP of the listed ``inputs`` ⊂ {edges, nodes, global} (default: all present)."""

    inputs: list[Literal["edges", "nodes", "global"]] | None = None

    _u = field_validator("inputs")(lambda v: v if v is None else _unique(v))


def _off(v):
    return None if v is False else v


@register_block("graph_network")
class GraphNetwork(Block):
    """Graph-network block (Battaglia et al. 2018, "Relational inductive biases...", arXiv:1806.01261).

    ``e'_k = φ_e(e_k, v_src, v_dst, u)``;  ``v'_i = φ_v(ρ_{e→v}(E'_i), v_i, u)``;
    ``u' = φ_u(ρ_{e→u}(E'), ρ_{v→u}(V'), u)``, ``E'_i`` the updated edges *into* node ``i``.

    Each φ is an MLP (``hidden`` widths, ``out_dim``); ``inputs`` picks what it reads
    (default: everything present). A slot set to ``off``/``null`` (or left out) keeps its
    field unchanged and writes nothing; later slots then read the old value. Aggregators
    ρ are ``sum``, ``mean``, ``max`` or ``min`` (0 for empty sets). ``u`` is per graph of a
    batch, so ρ_{e→u} and ρ_{v→u} reduce over each graph's own edges and nodes.

    Shapes: ``node_input`` ``(N, d_v)``, ``edge_input`` ``(E, d_e)``, ``global_input``
    ``(B, d_u)`` → ``edge_output`` ``(E, φ_e.out_dim)``, ``node_output`` ``(N, φ_v.out_dim)``,
    ``global_output`` ``(B, φ_u.out_dim)``.
    """

    family = "generic"
    uses_edge_features = True

    class Params(BlockParams):
        node_input: str = "node.h"
        edge_input: str | None = None
        global_input: str | None = None
        node_output: str | None = None
        edge_output: str | None = None
        global_output: str | None = None
        edge_model: EdgeFn | None | Off = None
        node_model: NodeFn | None | Off = None
        global_model: GlobalFn | None | Off = None
        edge_to_node: Reduction = "sum"
        edge_to_global: Reduction = "sum"
        node_to_global: Reduction = "sum"

        _off = field_validator("edge_model", "node_model", "global_model")(_off)

        @model_validator(mode="after")
        def _check(self):
            for name, space in (("node_input", "node"), ("edge_input", "edge"), ("global_input", "graph"),
                                ("node_output", "node"), ("edge_output", "edge"), ("global_output", "graph")):
                v = getattr(self, name)
                if v is None:
                    continue
                _check_key(v)
                if split_key(v)[0] != space:
                    raise ValueError(f"`{name}: {v}` must be a {space} field (e.g. `{space}.{v.split('.')[-1]}`)")
            if self.edge_model is None and self.node_model is None and self.global_model is None:
                raise ValueError("graph_network has every slot off; set at least one of `edge_model`, "
                                 "`node_model`, `global_model`")
            return self

    @classmethod
    def infer(cls, p, fields: FieldTable, ctx) -> Signature:
        name = cls.name
        dv = fields.need_scalar(p.node_input, name)
        reads = {p.node_input: fields[p.node_input]}
        de = du = None
        if p.edge_input is not None:
            de = fields.need_scalar(p.edge_input, name)
            reads[p.edge_input] = fields[p.edge_input]
        if p.global_input is not None:
            du = fields.need_scalar(p.global_input, name)
            reads[p.global_input] = fields[p.global_input]
        writes: dict = {}
        dims: dict = {}

        def pick(slot: str, given, available: dict) -> list[str]:
            if given is None:
                return [k for k, v in available.items() if v is not None]
            for k in given:
                if available.get(k) is None:
                    hint = {"edge": "`edge_input:`", "global": "`global_input:`",
                            "agg": "edges: an `edge_model` or `edge_input:`",
                            "edges": "edges: an `edge_model` or `edge_input:`"}.get(k, "it")
                    raise InferenceError(f"graph_network: `{slot}.inputs` lists `{k}`, which this block does "
                                         f"not have; give it {hint}")
            return list(given)

        # edges
        e_out = de
        if p.edge_model is not None:
            avail = {"edge": de, "src": dv, "dst": dv, "global": du}
            ins = pick("edge_model", p.edge_model.inputs, avail)
            dims["edge"] = [avail[k] for k in ins]
            dims["edge_inputs"] = ins
            e_out = p.edge_model.out_dim
            key = p.edge_output or p.edge_input
            if key is None:
                raise InferenceError("graph_network: the edge model writes edges but there is no "
                                     "`edge_output:` (or `edge_input:`) to name them; add `edge_output: edge.e`")
            writes[key] = Scalar(e_out)
        # nodes
        v_out = dv
        if p.node_model is not None:
            avail = {"agg": e_out, "node": dv, "global": du}
            ins = pick("node_model", p.node_model.inputs, avail)
            dims["node"] = [avail[k] for k in ins]
            dims["node_inputs"] = ins
            v_out = p.node_model.out_dim
            writes[p.node_output or p.node_input] = Scalar(v_out)
        # global
        if p.global_model is not None:
            avail = {"edges": e_out, "nodes": v_out, "global": du}
            ins = pick("global_model", p.global_model.inputs, avail)
            dims["global"] = [avail[k] for k in ins]
            dims["global_inputs"] = ins
            key = p.global_output or p.global_input
            if key is None:
                raise InferenceError("graph_network: the global model writes a graph field but there is no "
                                     "`global_output:` (or `global_input:`); add `global_output: graph.u`")
            writes[key] = Scalar(p.global_model.out_dim)
        return Signature(reads, writes, dims)

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        i = sig.info

        def mlp(slot, dims):
            return MLP([sum(dims), *slot.hidden, slot.out_dim], slot.act, slot.norm, last_act=slot.last_act,
                       out_norm=slot.out_norm)

        self.edge_mlp = mlp(p.edge_model, i["edge"]) if p.edge_model is not None else None
        self.node_mlp = mlp(p.node_model, i["node"]) if p.node_model is not None else None
        self.global_mlp = mlp(p.global_model, i["global"]) if p.global_model is not None else None

    def forward(self, g, f):
        p, i = self.p, self.sig.info
        v = f[p.node_input]
        e = f[p.edge_input] if p.edge_input is not None else None
        u = f[p.global_input] if p.global_input is not None else None
        src, dst = g.src, g.dst
        out: dict[str, Tensor] = {}
        if self.edge_mlp is not None:
            # u is per graph: gather it to edges by the graph of each edge
            table = {"edge": (e, None), "src": (v, src), "dst": (v, dst), "global": (u, g.edge_batch)}
            e = _edge_mlp([table[k] for k in i["edge_inputs"]], self.edge_mlp, i["edge"], g)
            out[p.edge_output or p.edge_input] = e
        if self.node_mlp is not None:
            parts = []
            for k in i["node_inputs"]:
                if k == "agg":
                    parts.append(scatter(e, dst, g.num_nodes, p.edge_to_node, g.csr().rowptr))
                elif k == "node":
                    parts.append(v)
                else:
                    parts.append(u.index_select(0, g.batch))
            v = self.node_mlp(torch.cat(parts, -1))
            out[p.node_output or p.node_input] = v
        if self.global_mlp is not None:
            parts = []
            for k in i["global_inputs"]:
                if k == "edges":
                    # edges are sorted by dst and nodes grouped by graph, so each graph's edges are
                    # one run: their offsets are where the node offsets fall among the dst ids
                    eptr = torch.searchsorted(dst, g.ptr)
                    parts.append(scatter(e, g.edge_batch, g.num_graphs, p.edge_to_global, eptr))
                elif k == "nodes":
                    parts.append(scatter(v, g.batch, g.num_graphs, p.node_to_global, g.ptr))
                else:
                    parts.append(u)
            out[p.global_output or p.global_input] = self.global_mlp(torch.cat(parts, -1))
        return out
