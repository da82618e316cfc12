"""Sequence inputs as node fields: token embeddings and positional encodings.

A sequence is a graph whose node order is the sequence order (``graph.kind: causal`` or
``complete`` attends over it, :mod:`graphdl.nn.transformer`). Its tokens arrive as a
``categorical(V)`` node field (integer ids), which ``embedding`` (:mod:`graphdl.nn.embedding`)
turns into channels; the position of a node is its index within its own graph, ``i − ptr[b]``,
which the positional encodings read. A graph transformer on molecules uses structural encodings instead (Laplacian
eigenvectors, :mod:`graphdl.nn.structural`; degrees and shortest-path distances,
:mod:`graphdl.nn.graphormer`).

* ``sinusoidal_pe`` — Vaswani et al. 2017 (https://arxiv.org/abs/1706.03762, §3.5):
  ``PE(p, 2i) = sin(p / base^(2i/d))``, ``PE(p, 2i+1) = cos(p / base^(2i/d))``.
* ``learned_pe`` — a learned vector per position ``0 .. max_len − 1`` (BERT, GPT).

Both encodings write their own field, or add to ``input`` when ``add_to`` names it
(``x + PE``, the usual transformer input).
"""

from __future__ import annotations

import math

import torch
from pydantic import PositiveFloat, PositiveInt, field_validator
from torch import Tensor, nn

from graphdl.errors import DataError, InferenceError
from graphdl.nn.attention import dense_index
from graphdl.nn.base import Block, BlockParams, Signature, register_block
from graphdl.nn.basic import _check_key
from graphdl.types import Scalar, split_key


def node_positions(g) -> Tensor:
    """Position of every node within its own graph, ``i − ptr[batch[i]]`` ``(N,)`` int64 (cached on ``g``)."""
    key = "sequence.positions"
    if key not in g._cache:
        g._cache[key] = torch.arange(g.num_nodes, device=g.device) - g.ptr.index_select(0, g.batch)
    return g._cache[key]


def sinusoidal_encoding(pos: Tensor, dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32) -> Tensor:
    """``PE(p, 2i) = sin(p ω_i)``, ``PE(p, 2i+1) = cos(p ω_i)``, ``ω_i = base^(−2i/dim)``.

    Computed in float64 and cast (positions up to 1e5 keep full float32 accuracy).
    Shapes: ``pos (N,)`` -> ``(N, dim)``; an odd ``dim`` ends with a sine column.
    """
    half = (dim + 1) // 2
    omega = torch.exp(torch.arange(half, device=pos.device, dtype=torch.float64) * (-2.0 * math.log(base) / dim))
    angle = pos.to(torch.float64).unsqueeze(-1) * omega
    out = torch.stack([angle.sin(), angle.cos()], -1).reshape(pos.size(0), 2 * half)[:, :dim]
    return out.to(dtype)


class _PEParams(BlockParams):
    output: str = "node.pe"
    add_to: str | None = None
    dim: PositiveInt | None = None

    _v_out = field_validator("output")(_check_key)

    @field_validator("add_to")
    @classmethod
    def _v_add(cls, v):
        return None if v is None else _check_key(v)


def _pe_signature(cls_name: str, p, fields) -> Signature:
    """``add_to`` set: read it and write it (``x + PE``); otherwise write ``output`` (``dim`` channels)."""
    if p.add_to is not None:
        if split_key(p.add_to)[0] != "node":
            raise InferenceError(f"{cls_name} encodes node positions; `add_to: {p.add_to}` is not a node field")
        d = fields.need_scalar(p.add_to, cls_name)
        if p.dim is not None and p.dim != d:
            raise InferenceError(f"{cls_name} adds a {p.dim}-channel encoding to `{p.add_to}`, which has {d} channels; "
                                 f"drop `dim` (it is taken from `{p.add_to}`) or make them equal")
        return Signature({p.add_to: fields[p.add_to]}, {p.add_to: Scalar(d)}, {"dim": d})
    if split_key(p.output)[0] != "node":
        raise InferenceError(f"{cls_name} writes a node field, found output `{p.output}`; use `output: node.pe`")
    if p.dim is None:
        raise InferenceError(f"{cls_name} needs `dim` (channels of `{p.output}`), or `add_to: node.h` to add the "
                             f"encoding to an existing field")
    return Signature({}, {p.output: Scalar(p.dim)}, {"dim": p.dim})


@register_block("sinusoidal_pe")
class SinusoidalPE(Block):
    r"""Sinusoidal positional encoding (Vaswani et al. 2017, §3.5) of each node's position in its graph.

    ``PE(p, 2i) = sin(p / base^{2i/d})``, ``PE(p, 2i+1) = cos(p / base^{2i/d})`` with ``p`` the
    node's index within its graph. No parameters. Written to ``output`` (``dim`` channels) or,
    with ``add_to: node.h``, added to that field (``dim`` = its width).

    Shapes: writes ``(N, dim)``.
    """

    family = "positional"
    reads_node_order = True

    class Params(_PEParams):
        base: PositiveFloat = 10000.0

    @classmethod
    def infer(cls, p, fields, ctx):
        return _pe_signature(cls.name, p, fields)

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.dim = sig.info["dim"]
        self.register_buffer("_dtype_probe", torch.zeros(0), persistent=False)

    def forward(self, g, f):
        dtype = f[self.p.add_to].dtype if self.p.add_to is not None else self._dtype_probe.dtype
        key = ("sinusoidal_pe", self.dim, self.p.base, dtype)
        pe = g._cache.get(key)
        if pe is None:
            pe = g._cache[key] = sinusoidal_encoding(node_positions(g), self.dim, self.p.base, dtype)
        if self.p.add_to is not None:
            return {self.p.add_to: f[self.p.add_to] + pe}
        return {self.p.output: pe}


@register_block("learned_pe")
class LearnedPE(Block):
    r"""Learned positional embedding: a vector per position ``0 .. max_len − 1`` (``nn.Embedding``).

    The position of a node is its index within its graph. A batch holding a graph longer than
    ``max_len`` raises :class:`~graphdl.errors.DataError` (one host sync per batch to find the
    longest graph, shared with the dense attention lowering). Written to ``output`` or added to
    ``add_to``, as ``sinusoidal_pe``. Initialised ``N(0, 1)`` as ``nn.Embedding``.

    Shapes: writes ``(N, dim)``.
    """

    family = "positional"
    reads_node_order = True

    class Params(_PEParams):
        max_len: PositiveInt

    @classmethod
    def infer(cls, p, fields, ctx):
        return _pe_signature(cls.name, p, fields)

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.weight = nn.Parameter(torch.randn(p.max_len, sig.info["dim"]))

    def forward(self, g, f):
        _, _, longest = dense_index(g, self.ctx.num_nodes_hint)
        if longest > self.p.max_len and g.num_nodes:
            raise DataError(f"learned_pe has positions 0..{self.p.max_len - 1} (`max_len: {self.p.max_len}`), but the "
                            f"batch holds a graph of {longest} nodes; raise `max_len` or cut the sequences")
        pe = self.weight.index_select(0, node_positions(g))
        if self.p.add_to is not None:
            return {self.p.add_to: f[self.p.add_to] + pe}
        return {self.p.output: pe}


__all__ = ["LearnedPE", "SinusoidalPE", "node_positions", "sinusoidal_encoding"]
