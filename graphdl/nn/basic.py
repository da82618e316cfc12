"""Field-wise blocks: activations, dropout, linear maps, MLPs, norms, concatenation.

They act on one field (node, edge or graph) row by row, so they are permutation
equivariant by construction. None of them is rotation-equivariant: they refuse
non-invariant fields (e.g. a ``1o`` position) at compile time.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt, field_validator
from torch import Tensor, nn

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, BlockParams, Signature, register_block
from graphdl.nn.mlp import ACTIVATIONS, MLP, ActName, activation
from graphdl.types import FieldTable, Scalar, split_key


def _check_key(v: str) -> str:
    try:
        split_key(v)
    except ValueError as e:
        raise ValueError(str(e)) from None
    return v


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

    @classmethod
    def infer(cls, p, fields, ctx):
        d = fields.need_scalar(p.input, cls.name)
        return Signature({p.input: fields[p.input]}, {p.out_key: Scalar(p.out_dim)}, {"in_dim": d})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.mlp = MLP([sig.info["in_dim"], *p.hidden, p.out_dim], p.act, p.norm, p.dropout, last_act=p.last_act)

    def forward(self, g, f):
        return {self.p.out_key: self.mlp(f[self.p.input])}


@register_block("batch_norm")
class BatchNorm(Block):
    """Batch normalisation over all rows of a field (nodes of every graph in the batch)."""

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
        self.norm = nn.BatchNorm1d(sig.info["dim"], eps=p.eps, momentum=p.momentum)

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
    """GraphNorm (Cai et al. 2021): ``γ (h − α μ_G) / σ_G + β`` with per-graph statistics.

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
        from graphdl.nn.mlp import segment_mean_std
        from graphdl.ops.segment import segment_sum

        x = f[self.p.input]
        mean, count = segment_mean_std(x, g.batch, g.num_graphs)
        out = x - self.alpha * mean[g.batch]
        var = segment_sum(out * out, g.batch, g.num_graphs) / count
        out = out / (var + self.p.eps).sqrt()[g.batch]
        return {self.p.out_key: self.weight * out + self.bias}


@register_block("concat")
class Concat(Block):
    """Concatenate invariant fields of one space along channels: ``output = [a | b | ...]``."""

    family = "basic"

    class Params(BlockParams):
        inputs: list[str] = Field(min_length=1)
        output: str

        _v = field_validator("output")(_check_key)

    @classmethod
    def infer(cls, p, fields, ctx):
        space = split_key(p.output)[0]
        total = 0
        for k in p.inputs:
            if split_key(k)[0] != space:
                raise InferenceError(f"concat writes the {space} field `{p.output}` but `{k}` is not a {space} field")
            total += fields.need_scalar(k, cls.name)
        return Signature({k: fields[k] for k in p.inputs}, {p.output: Scalar(total)})

    def forward(self, g, f):
        return {self.p.output: torch.cat([f[k] for k in self.p.inputs], -1)}
