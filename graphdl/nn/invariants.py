"""Invariants of vector fields: the way from a ``1o`` field to scalars an MLP may read.

A non-equivariant block (MLP, linear, norm, bias) refuses a vector field, because reading its
components breaks rotation symmetry. What such a block may read instead are functions of the
vectors that rotations leave alone: lengths and dot products (for several vectors, their Gram
matrix determines them up to a rotation). These two blocks make them:

* ``vector_norm``: ``|v|`` per vector field (per ``1o`` copy of an irreps field);
* ``vector_dot``: ``a · b`` of two vector fields (e.g. velocity and force).

Both are rotation- and reflection-invariant (``0e`` outputs, written as scalars). Neither is
translation-invariant when its vectors are positions: use relative vectors (``edge_geometry``)
for those. The norm uses ``sqrt(|v|² + ε²)`` (:func:`graphdl.ops.geometry.safe_norm`), whose
value, gradient and second derivative stay finite at ``v = 0``.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, BlockParams, Signature, register_block
from graphdl.nn.basic import _check_key
from graphdl.ops.geometry import safe_norm
from graphdl.types import Irreps, Scalar, split_key


def _vector_copies(t, key: str, who: str) -> int:
    """How many ``1o`` copies field ``key`` of type ``t`` is made of (a ``1o`` field: 1)."""
    if isinstance(t, Irreps) and t.terms and all(l == 1 and par == -1 for _m, l, par in t.terms):
        return sum(m for m, _l, _p in t.terms)
    raise InferenceError(f"{who} reads vectors (`1o` or `Nx1o`), but `{key}` is {t}; for an irreps field with "
                         f"other parts pick its `1o` part first (irreps_select)")


@register_block("vector_norm")
class VectorNorm(Block):
    """Lengths of vectors: ``|v_i|`` for each node (or edge, graph) and each ``1o`` copy.

    Shapes: ``input (R, 3)`` or ``(R, m·3)`` for ``m x 1o`` → ``output (R, m)``, invariant.
    ``output`` defaults to ``<input>_norm``.
    """

    family = "geometric"
    equivariant = True

    class Params(BlockParams):
        input: str = "node.vel"
        output: str | None = None

        _k = field_validator("input", "output")(classmethod(lambda cls, v: None if v is None else _check_key(v)))

    @classmethod
    def infer(cls, p, fields, ctx):
        t = fields.need(p.input, cls.name)
        m = _vector_copies(t, p.input, cls.name)
        out = p.output or f"{p.input}_norm"
        if split_key(out)[0] != split_key(p.input)[0]:
            raise InferenceError(f"vector_norm writes one value per row of `{p.input}`: its output must be a "
                                 f"{split_key(p.input)[0]} field, found `{out}`")
        return Signature({p.input: t}, {out: Scalar(m)})

    def forward(self, g, f):
        v = f[self.p.input]
        out = safe_norm(v.reshape(v.shape[0], -1, 3), dim=-1)
        return {self.p.output or f"{self.p.input}_norm": out}


@register_block("vector_dot")
class VectorDot(Block):
    """Dot products of two vector fields of one space: ``a_i · b_i`` (``m x 1o`` each: m products).

    Shapes: ``a, b (R, m·3)`` → ``output (R, m)``, invariant (rotations and reflections).
    """

    family = "geometric"
    equivariant = True

    class Params(BlockParams):
        inputs: list[str] = Field(min_length=2, max_length=2)
        output: str

        _k = field_validator("output")(classmethod(lambda cls, v: _check_key(v)))

        @field_validator("inputs")
        @classmethod
        def _v_inputs(cls, v):
            return [_check_key(k) for k in v]

    @classmethod
    def infer(cls, p, fields, ctx):
        a, b = p.inputs
        ta, tb = fields.need(a, cls.name), fields.need(b, cls.name)
        ma, mb = _vector_copies(ta, a, cls.name), _vector_copies(tb, b, cls.name)
        if ma != mb or split_key(a)[0] != split_key(b)[0]:
            raise InferenceError(f"vector_dot multiplies vectors row by row: `{a}` ({ta}) and `{b}` ({tb}) must be "
                                 f"fields of one space with as many `1o` copies")
        if split_key(p.output)[0] != split_key(a)[0]:
            raise InferenceError(f"vector_dot's output must be a {split_key(a)[0]} field, found `{p.output}`")
        return Signature({a: ta, b: tb}, {p.output: Scalar(ma)})

    def forward(self, g, f):
        a, b = (f[k] for k in self.p.inputs)
        n = a.shape[0]
        return {self.p.output: (a.reshape(n, -1, 3) * b.reshape(n, -1, 3)).sum(-1)}


__all__ = ["VectorDot", "VectorNorm"]

