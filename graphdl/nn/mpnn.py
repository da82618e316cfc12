"""Edge-conditioned message passing: ``nnconv`` and the Gilmer ``mpnn`` step.

Gilmer et al. 2017, "Neural Message Passing for Quantum Chemistry"
(https://arxiv.org/abs/1704.01212), with the edge network of Simonovsky & Komodakis 2017
(ECC, https://arxiv.org/abs/1704.02901), as PyG's ``NNConv``:

    m_ij = A(e_ij) h_j            (A an MLP of the edge features reshaped to d_in x d_out)
    m_i  = ⊕_{j∈N(i)} m_ij + W_r h_i + b      (⊕ sum or mean; root term optional)
    h_i' = GRU(h_i, act(m_i))      (``mpnn`` only)

One ``mpnn`` block is one step. The paper shares weights over T steps, which a spec writes
with ``repeat: 3`` and ``share_weights: true`` on the layer.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt, field_validator
from torch import Tensor, nn

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, DGLLowering, Signature, register_block
from graphdl.nn.basic import FieldParams, _check_key
from graphdl.nn.mlp import MLP, ActName, activation
from graphdl.ops.segment import scatter
from graphdl.types import FieldTable, Scalar


class EdgeNetworkConv(nn.Module):
    """The NNConv operator on tensors: ``out_i = ⊕_j x_j A(e_ij) + W_r x_i + b``.

    Submodules are named as PyG's ``NNConv`` (``nn``, ``lin``, ``bias``) so weights copy
    one to one.

    Shapes: ``x (N, d_in)``, ``e (E, d_e)`` → ``(N, d_out)``; the edge network produces
    ``(E, d_in * d_out)``, the per-edge weight matrices.
    """

    def __init__(self, in_dim: int, out_dim: int, edge_dim: int, hidden: list[int], act: str = "relu",
                 aggr: str = "sum", root_weight: bool = True, bias: bool = True, lowering: str = "auto"):
        super().__init__()
        self.in_dim, self.out_dim, self.aggr, self.lowering = in_dim, out_dim, aggr, lowering
        self.nn = MLP([edge_dim, *hidden, in_dim * out_dim], act)
        self.lin = nn.Linear(in_dim, out_dim, bias=False) if root_weight else None
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None

    def forward(self, g, x: Tensor, e: Tensor) -> Tensor:
        if self.lowering == "dgl":
            from graphdl.interop.dgl_lowering import edge_network_conv

            return edge_network_conv(self, g, x, e)
        w = self.nn(e).view(-1, self.in_dim, self.out_dim)
        msg = torch.bmm(x.index_select(0, g.src).unsqueeze(1), w).squeeze(1)
        out = scatter(msg, g.dst, x.size(0), self.aggr, g.csr().rowptr)
        if self.lin is not None:
            out = out + self.lin(x)
        if self.bias is not None:
            out = out + self.bias
        return out


class _EdgeNetParams(FieldParams):
    edge_input: str = "edge.e"
    hidden: list[PositiveInt] = Field(default_factory=lambda: [128])
    edge_act: ActName = "relu"
    aggr: Literal["sum", "mean"] = "sum"
    root_weight: bool = True
    bias: bool = True
    lowering: DGLLowering = "auto"

    _v_edge = field_validator("edge_input")(_check_key)


def _infer_edge_net(cls, p, fields: FieldTable) -> tuple[dict, int, int]:
    if not p.input.startswith("node.") or not p.out_key.startswith("node."):
        raise InferenceError(f"{cls.name} reads and writes node fields; found `{p.input}` -> `{p.out_key}`")
    if not p.edge_input.startswith("edge."):
        raise InferenceError(f"{cls.name} `edge_input` must be an edge field, found `{p.edge_input}` (e.g. `edge.e`)")
    d = fields.need_scalar(p.input, cls.name)
    de = fields.need_scalar(p.edge_input, cls.name)
    return {p.input: fields[p.input], p.edge_input: fields[p.edge_input]}, d, de


def _edges(f, key: str) -> Tensor:
    e = f[key]
    return e.unsqueeze(-1) if e.dim() == 1 else e


@register_block("nnconv")
class NNConv(Block):
    r"""Edge-conditioned convolution (Gilmer et al. 2017; Simonovsky & Komodakis 2017; PyG ``NNConv``).

    ``h_i' = ⊕_{j∈N(i)} h_j A(e_ij) + W_r h_i + b`` with ``A`` an MLP mapping edge features
    to a ``d_in x d_out`` matrix.

    Args (spec keys):
        input / output: node field read / written; edge_input: edge field (``edge.e``);
        out_dim: output channels; hidden: widths of the edge network's hidden layers ([128]);
        edge_act: its activation (relu); aggr: ``sum`` (PyG ``add``, default) or ``mean``;
        root_weight: add ``W_r h_i`` (true); bias (true).

    Shapes: ``input (N, d_in)``, ``edge_input (E, d_e)`` → ``output (N, out_dim)``.
    """

    family = "mpnn"
    uses_edge_features = True

    class Params(_EdgeNetParams):
        out_dim: PositiveInt

    @classmethod
    def infer(cls, p, fields, ctx):
        reads, d, de = _infer_edge_net(cls, p, fields)
        return Signature(reads, {p.out_key: Scalar(p.out_dim)}, {"in_dim": d, "edge_dim": de})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.conv = EdgeNetworkConv(sig.info["in_dim"], p.out_dim, sig.info["edge_dim"], list(p.hidden),
                                    p.edge_act, p.aggr, p.root_weight, p.bias, p.lowering)

    def forward(self, g, f):
        return {self.p.out_key: self.conv(g, f[self.p.input], _edges(f, self.p.edge_input))}


@register_block("mpnn")
class MPNN(Block):
    r"""One step of the Gilmer MPNN: edge-network messages and a GRU update.

    ``m_i = act(Σ_{j∈N(i)} h_j A(e_ij) + W_r h_i + b)``, ``h_i' = GRU(m_i, h_i)``
    (the message is the GRU input, ``h_i`` its hidden state; widths stay ``d``).
    Write ``repeat: T`` with ``share_weights: true`` for the paper's T shared steps.
    ``act: relu`` follows PyG's QM9 example; ``identity`` is the paper's plain message.

    Args (spec keys):
        input / output: node field read / written (default: overwrite); edge_input (``edge.e``);
        hidden: edge-network hidden widths ([128]); edge_act (relu); aggr ``sum``|``mean`` (sum);
        root_weight (true); bias (true); act: applied to ``m_i`` before the GRU (relu).

    Shapes: ``input (N, d)``, ``edge_input (E, d_e)`` → ``output (N, d)``.
    """

    family = "mpnn"
    uses_edge_features = True

    class Params(_EdgeNetParams):
        act: ActName = "relu"

    @classmethod
    def infer(cls, p, fields, ctx):
        reads, d, de = _infer_edge_net(cls, p, fields)
        return Signature(reads, {p.out_key: Scalar(d)}, {"in_dim": d, "edge_dim": de})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d = sig.info["in_dim"]
        self.conv = EdgeNetworkConv(d, d, sig.info["edge_dim"], list(p.hidden), p.edge_act, p.aggr,
                                    p.root_weight, p.bias, p.lowering)
        self.act = activation(p.act)
        self.gru = nn.GRUCell(d, d)

    def forward(self, g, f):
        h = f[self.p.input]
        m = self.act(self.conv(g, h, _edges(f, self.p.edge_input)))
        return {self.p.out_key: self.gru(m, h)}


__all__ = ["MPNN", "EdgeNetworkConv", "NNConv"]
