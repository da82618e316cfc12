"""Field-wise blocks: activations, dropout, linear maps, MLPs, norms, concatenation.

They act on one field (node, edge or graph) row by row, so they are permutation
equivariant by construction. None of them is rotation-equivariant: they refuse
non-invariant fields (e.g. a ``1o`` position) at compile time.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt, field_validator
from torch import nn

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, BlockParams, Signature, register_block
from graphdl.nn.mlp import ACTIVATIONS, MLP, ActName, BatchNorm1d, activation, segment_mean_count
from graphdl.ops.segment import segment_sum
from graphdl.types import Scalar, split_key


def _check_key(v: str) -> str:
    try:
        split_key(v)
    except ValueError as e:
        raise ValueError(str(e)) from None
    return v


def _check_keys(v: list[str]) -> list[str]:
    """:func:`_check_key` for every item of a list of field keys (``inputs: [node.a, node.b]``)."""
    return [_check_key(k) for k in v]


class FieldParams(BlockParams):
    """``input``: the field read; ``output``: the field written (default: same as input)."""

    input: str = "node.h"
    output: str | None = None

    _v_in = field_validator("input")(_check_key)

    @field_validator("output")
    @classmethod
    def _v_out(cls, v):
        return None if v is None else _check_key(v)

    @property
    def out_key(self) -> str:
        return self.output or self.input


class _Activation(Block):
    family = "basic"
    Params = FieldParams

    @classmethod
    def infer(cls, p, fields, ctx):
        d = fields.need_scalar(p.input, cls.name)
        return Signature({p.input: fields[p.input]}, {p.out_key: Scalar(d)})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.fn = activation(self.name)

    def forward(self, g, f):
        return {self.p.out_key: self.fn(f[self.p.input])}


for _name in ACTIVATIONS:
    if _name != "identity":
        register_block(_name)(type(f"Act_{_name}", (_Activation,), {"__doc__": f"Element-wise `{_name}`."}))


@register_block("dropout")
class Dropout(Block):
    """Dropout on one field (active in training mode only)."""

    family = "basic"

    class Params(FieldParams):
        p: float = Field(0.5, ge=0.0, lt=1.0)

    @classmethod
    def infer(cls, p, fields, ctx):
        t = fields.need(p.input, cls.name)
        if not t.invariant:
            raise InferenceError(f"dropout on `{p.input}` ({t}) would drop vector components unevenly; "
                                 f"apply it to an invariant field")
        return Signature({p.input: t}, {p.out_key: t})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.drop = nn.Dropout(p.p)

    def forward(self, g, f):
        return {self.p.out_key: self.drop(f[self.p.input])}


@register_block("linear")
class Linear(Block):
    """``y = W x + b`` on one field. Shapes: ``(n, in) -> (n, out_dim)``."""

    family = "basic"

    class Params(FieldParams):
        out_dim: PositiveInt
        bias: bool = True

    @classmethod
    def infer(cls, p, fields, ctx):
        d = fields.need_scalar(p.input, cls.name)
        return Signature({p.input: fields[p.input]}, {p.out_key: Scalar(p.out_dim)}, {"in_dim": d})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.lin = nn.Linear(sig.info["in_dim"], p.out_dim, bias=p.bias)

    def forward(self, g, f):
        return {self.p.out_key: self.lin(f[self.p.input])}


@register_block("mlp")
class MLPBlock(Block):
    """A multi-layer perceptron on one field: ``hidden`` widths then ``out_dim``."""

    family = "basic"

    class Params(FieldParams):
        out_dim: PositiveInt
        hidden: list[PositiveInt] = Field(default_factory=list)
        act: ActName = "relu"
        norm: Literal["batch", "layer"] | None = None
        dropout: float = Field(0.0, ge=0.0, lt=1.0)
        last_act: bool = False
        out_norm: Literal["layer"] | None = None
        """``layer``: a LayerNorm over the output, ``LN(MLP(x))`` (GNS encoders and processor)."""

    @classmethod
    def infer(cls, p, fields, ctx):
        d = fields.need_scalar(p.input, cls.name)
        return Signature({p.input: fields[p.input]}, {p.out_key: Scalar(p.out_dim)}, {"in_dim": d})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.mlp = MLP([sig.info["in_dim"], *p.hidden, p.out_dim], p.act, p.norm, p.dropout, last_act=p.last_act,
                       out_norm=p.out_norm)

    def forward(self, g, f):
        return {self.p.out_key: self.mlp(f[self.p.input])}


@register_block("batch_norm")
class BatchNorm(Block):
    """Batch normalisation over all rows of a field (nodes of every graph in the batch; one
    row per graph for a ``graph.*`` field), per channel (Ioffe & Szegedy 2015,
    https://arxiv.org/abs/1502.03167; PyG ``BatchNorm``).

    Training: ``y = γ (x − μ_B) / √(σ²_B + eps) + β`` with the batch's mean and biased
    variance; the running statistics move by ``momentum`` (unbiased variance). A batch with
    one row (or none) has no variance: it is normalised with the running statistics and
    leaves them unchanged, as PyG's ``BatchNorm(allow_single_element=True)``
    (:class:`graphdl.nn.mlp.BatchNorm1d`). Evaluation: the running statistics.

    Shapes: ``(n, d) -> (n, d)``.
    """

    family = "norm"

    class Params(FieldParams):
        momentum: float = 0.1
        eps: float = 1e-5

    @classmethod
    def infer(cls, p, fields, ctx):
        d = fields.need_scalar(p.input, cls.name)
        return Signature({p.input: fields[p.input]}, {p.out_key: Scalar(d)}, {"dim": d})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.norm = BatchNorm1d(sig.info["dim"], eps=p.eps, momentum=p.momentum)

    def forward(self, g, f):
        return {self.p.out_key: self.norm(f[self.p.input])}


@register_block("layer_norm")
class LayerNorm(Block):
    """Layer normalisation over the channels of each row."""

    family = "norm"

    class Params(FieldParams):
        eps: float = 1e-5

    @classmethod
    def infer(cls, p, fields, ctx):
        d = fields.need_scalar(p.input, cls.name)
        return Signature({p.input: fields[p.input]}, {p.out_key: Scalar(d)}, {"dim": d})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.norm = nn.LayerNorm(sig.info["dim"], eps=p.eps)

    def forward(self, g, f):
        return {self.p.out_key: self.norm(f[self.p.input])}


@register_block("graph_norm")
class GraphNorm(Block):
    """GraphNorm (Cai et al. 2021, https://arxiv.org/abs/2009.03294; PyG ``GraphNorm``):
    ``γ (h − α μ_G) / √(σ²_G + eps) + β`` with per-graph statistics over the graph's nodes,
    ``μ_G`` the mean and ``σ²_G = mean_G (h − α μ_G)²`` (biased: divided by the node count
    ``N_G``, never ``N_G − 1``), in training and evaluation alike (no running statistics).

    Every legal graph is defined: a one-node graph gives ``σ²_G = ((1 − α) h)²``, so the output
    is finite (``β`` when ``α = 1``); a graph without nodes contributes no rows. Matches PyG's
    ``GraphNorm`` with copied weights (``tests/nn/test_degenerate_batches.py``).

    Shapes: node field ``(N, d) -> (N, d)``.
    """

    family = "norm"

    class Params(FieldParams):
        eps: float = 1e-5

    @classmethod
    def infer(cls, p, fields, ctx):
        if not p.input.startswith("node."):
            raise InferenceError(f"graph_norm normalises node fields per graph; `{p.input}` is not a node field")
        d = fields.need_scalar(p.input, cls.name)
        return Signature({p.input: fields[p.input]}, {p.out_key: Scalar(d)}, {"dim": d})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d = sig.info["dim"]
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))
        self.alpha = nn.Parameter(torch.ones(d))

    def forward(self, g, f):
        x = f[self.p.input]
        mean, count = segment_mean_count(x, g.batch, g.num_graphs)
        out = x - self.alpha * mean[g.batch]
        var = segment_sum(out * out, g.batch, g.num_graphs) / count
        out = out / (var + self.p.eps).sqrt()[g.batch]
        return {self.p.out_key: self.weight * out + self.bias}


@register_block("concat")
class Concat(Block):
    """Concatenate invariant fields along channels: ``output = [a | b | ...]``.

    The inputs live in the output's space, except that a ``graph.*`` field may join a
    ``node.*`` output: it is repeated on every node of its graph (Battaglia et al.'s
    broadcast of globals to nodes; GNS appends its ``step_context`` to each particle so).
    Shapes: ``(n, d_1), (n, d_2), ... -> (n, Σ d_k)``; a broadcast graph field ``(B, d)``
    counts as ``(N, d)``."""

    family = "basic"

    class Params(BlockParams):
        inputs: list[str] = Field(min_length=1)
        output: str

        _v = field_validator("output")(_check_key)
        _v_in = field_validator("inputs")(_check_keys)

        @field_validator("inputs")
        @classmethod
        def _v_inputs(cls, v):
            return [_check_key(k) for k in v]

    @classmethod
    def infer(cls, p, fields, ctx):
        space = split_key(p.output)[0]
        total = 0
        broadcast = []
        for k in p.inputs:
            ks = split_key(k)[0]
            if ks != space:
                if not (space == "node" and ks == "graph"):
                    raise InferenceError(f"concat writes the {space} field `{p.output}` but `{k}` is not a {space} "
                                         f"field" + (" (a graph field joins node fields only)" if ks == "graph" else ""))
                broadcast.append(k)
            total += fields.need_scalar(k, cls.name)
        return Signature({k: fields[k] for k in p.inputs}, {p.output: Scalar(total)}, {"broadcast": broadcast})

    def forward(self, g, f):
        bc = self.sig.info.get("broadcast", ())
        return {self.p.output: torch.cat([f[k].index_select(0, g.batch) if k in bc else f[k]
                                          for k in self.p.inputs], -1)}
