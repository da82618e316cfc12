"""Readouts: a node (or edge) field reduced to one row per graph.

``readout`` reads a node field, ``edge_readout`` an edge field; both write a graph field.

* ``sum`` / ``mean`` / ``max``: ``r_G = ⊕_{v∈G} h_v`` (empty graphs give 0), as PyG's
  ``global_add_pool`` / ``global_mean_pool`` / ``global_max_pool``.
* ``attention`` — global soft-attention pooling (Li et al. 2016, "Gated Graph Sequence
  Neural Networks", https://arxiv.org/abs/1511.05493; PyG ``AttentionalAggregation``):
  ``r_G = Σ_{v∈G} softmax_v(gate(h_v)) · φ(h_v)`` with ``gate`` an MLP to one score and
  ``φ`` an optional MLP (identity by default).
* ``set2set`` — Vinyals et al. 2016, "Order Matters" (https://arxiv.org/abs/1511.06391; PyG
  ``Set2Set``): ``T`` steps of ``q_t = LSTM(q*_{t-1})``, ``a_v = softmax_v(h_v·q_t)``,
  ``r_t = Σ_v a_v h_v``, ``q*_t = [q_t ‖ r_t]``; the output is ``q*_T`` (twice the width).

All are invariant to the order of nodes inside a graph and equivariant to the order of the
graphs in a batch. Nodes are assumed grouped by graph (as ``collate`` makes them), so the
reductions use the batch's ``ptr`` offsets.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt, field_validator
from torch import Tensor, nn

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, BlockParams, DGLLowering, Signature, dgl_forward, register_block
from graphdl.nn.basic import _check_key
from graphdl.nn.mlp import MLP, ActName
from graphdl.ops.segment import scatter, segment_softmax, segment_sum
from graphdl.types import FieldTable, Scalar, split_key

Reduce = Literal["sum", "mean", "max", "attention", "set2set"]


class _ReadoutParams(BlockParams):
    input: str = "node.h"
    output: str | None = None
    reduce: Reduce = "sum"
    steps: PositiveInt = 3
    gate_hidden: list[PositiveInt] = Field(default_factory=list)
    gate_act: ActName = "relu"
    value_dim: PositiveInt | None = None
    value_hidden: list[PositiveInt] = Field(default_factory=list)
    lowering: DGLLowering = "auto"

    _v_in = field_validator("input")(_check_key)

    @field_validator("output")
    @classmethod
    def _v_out(cls, v):
        return None if v is None else _check_key(v)

    @property
    def out_key(self) -> str:
        return self.output or "graph." + split_key(self.input)[1]


class LSTMStep(nn.Module):
    """One step of a one-layer ``nn.LSTM(input_size, hidden_size)``: ``(x (B, in), (h, c) (B, hidden)) -> (h', c')``.

    Same parameters (names, shapes, initialisation) as ``nn.LSTM``, so state dicts are
    interchangeable, computed by ``torch.lstm_cell``: Dynamo does not trace ``nn.LSTM`` modules
    (a graph break inside the model's layer loop, which made ``torch.compile`` run the whole
    stack eagerly), and Set2Set only ever runs sequences of length one.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size  # nn.LSTM's attributes, for exporters
        ref = nn.LSTM(input_size, hidden_size)
        self.weight_ih_l0, self.weight_hh_l0 = ref.weight_ih_l0, ref.weight_hh_l0
        self.bias_ih_l0, self.bias_hh_l0 = ref.bias_ih_l0, ref.bias_hh_l0

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return torch.lstm_cell(x, state, self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0)


@register_block("readout")
class Readout(Block):
    r"""Pool a node field into a graph field: ``r_G = ⊕_{v∈G} h_v`` (see the module docstring).

    Args (spec keys):
        input: node field read (``node.h``); output: graph field written (default
            ``graph.<name of input>``).
        reduce: ``sum`` (default), ``mean``, ``max``, ``attention`` or ``set2set``.
        steps: set2set processing steps ``T`` (3).
        gate_hidden, gate_act: hidden widths and activation of the attention gate MLP
            (``[]``: a linear gate).
        value_dim, value_hidden: attention only: ``φ`` as an MLP to ``value_dim``
            (default none: ``φ`` is the identity).

    Shapes: ``input (N, d)`` → ``output (B, d)``; ``(B, 2d)`` for set2set, ``(B, value_dim)``
    for attention with ``value_dim``.
    """

    family = "readout"
    space = "node"

    Params = _ReadoutParams

    @classmethod
    def infer(cls, p, fields: FieldTable, ctx):
        if split_key(p.input)[0] != cls.space:
            raise InferenceError(f"{cls.name} pools a {cls.space} field; `{p.input}` is not one "
                                 f"(use `type: {'edge_readout' if cls.space == 'node' else 'readout'}` "
                                 f"for {split_key(p.input)[0]} fields)")
        if split_key(p.out_key)[0] != "graph":
            raise InferenceError(f"{cls.name} writes a graph field; `{p.out_key}` is not one (use e.g. `graph.h`)")
        if p.reduce != "attention" and (p.value_dim is not None or p.value_hidden or p.gate_hidden):
            raise InferenceError(f"{cls.name} `gate_hidden`/`value_dim`/`value_hidden` only apply to "
                                 f"`reduce: attention`, found `reduce: {p.reduce}`")
        if p.value_hidden and p.value_dim is None:
            raise InferenceError(f"{cls.name} `value_hidden` needs `value_dim` (the width of φ's output)")
        d = fields.need_scalar(p.input, cls.name)
        width = {"set2set": 2 * d, "attention": p.value_dim or d}.get(p.reduce, d)
        return Signature({p.input: fields[p.input]}, {p.out_key: Scalar(width)}, {"dim": d})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d = sig.info["dim"]
        if p.reduce == "attention":
            self.gate_nn = MLP([d, *p.gate_hidden, 1], p.gate_act)
            self.nn = MLP([d, *p.value_hidden, p.value_dim], p.gate_act) if p.value_dim else None
        elif p.reduce == "set2set":
            self.lstm = LSTMStep(2 * d, d)

    def _segments(self, g) -> tuple[Tensor, Tensor]:
        """(index, ptr) of the rows of the pooled field into graphs."""
        if self.space == "node":
            return g.batch, g.ptr
        # edges are sorted by destination and nodes grouped by graph: edge offsets of graph b
        # are the CSR row offsets at its first node
        return g.edge_batch, g.csr().rowptr.index_select(0, g.ptr)

    def forward(self, g, f):
        if self.p.lowering == "dgl":
            return dgl_forward(self, g, f)
        p = self.p
        x = f[p.input]
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        index, ptr = self._segments(g)
        b = g.num_graphs
        if p.reduce in ("sum", "mean", "max"):
            out = scatter(x, index, b, p.reduce, ptr)
        elif p.reduce == "attention":
            gate = segment_softmax(self.gate_nn(x), index, b, ptr)
            val = self.nn(x) if self.nn is not None else x
            out = segment_sum(gate * val, index, b, ptr)
        else:
            out = self._set2set(x, index, ptr, b)
        return {p.out_key: out}

    def _set2set(self, x: Tensor, index: Tensor, ptr: Tensor, b: int) -> Tensor:
        d = x.size(-1)
        state = (x.new_zeros(b, d), x.new_zeros(b, d))
        q_star = x.new_zeros(b, 2 * d)
        for _ in range(self.p.steps):  # over processing steps, not graphs
            state = self.lstm(q_star, state)
            q = state[0]
            a = segment_softmax((x * q.index_select(0, index)).sum(-1, keepdim=True), index, b, ptr)
            r = segment_sum(a * x, index, b, ptr)
            q_star = torch.cat([q, r], -1)
        return q_star

    def describe_extra(self) -> str:
        return self.p.reduce + (f" ({self.p.steps} steps)" if self.p.reduce == "set2set" else "")


@register_block("edge_readout")
class EdgeReadout(Readout):
    """Pool an edge field into a graph field (each edge belongs to its destination's graph).

    Same keys and reductions as :class:`Readout`; ``input`` defaults to ``edge.e``.

    Shapes: ``input (E, d)`` → ``output (B, d)`` (``2d`` for set2set).
    """

    space = "edge"

    class Params(_ReadoutParams):
        input: str = "edge.e"


__all__ = ["EdgeReadout", "Readout"]
