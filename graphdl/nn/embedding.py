"""``embedding``: a learned vector per class of a categorical field (particle types, atom types).

A :class:`~graphdl.types.Categorical` field holds one integer class per row; this block is
the way from it to real-valued channels (every other block refuses class indices).
"""

from __future__ import annotations

from pydantic import PositiveInt
from torch import nn

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, Signature, register_block
from graphdl.nn.basic import FieldParams
from graphdl.types import Categorical, Scalar


@register_block("embedding")
class Embedding(Block):
    """``y_i = W[c_i]``: row ``c_i`` of a learned table ``W`` of shape ``(num_classes, out_dim)``.

    ``num_classes`` comes from the input's type ``categorical(K)``; the table is initialised
    ``N(0, 1)`` as ``torch.nn.Embedding`` (the GNS particle-type embedding, 16 wide for 9
    types, Sanchez-Gonzalez et al. 2020). Class indices outside ``0..K-1`` are refused by the
    model's input check (:meth:`~graphdl.compile.GraphModel.check_inputs`).

    Shapes: ``input`` ``(n,)`` integer → ``output`` ``(n, out_dim)``.
    """

    family = "basic"

    class Params(FieldParams):
        input: str  # required here (FieldParams defaults to node.h); validators from FieldParams
        out_dim: PositiveInt

    @classmethod
    def infer(cls, p, fields, ctx):
        t = fields.need(p.input, cls.name)
        if not isinstance(t, Categorical):
            raise InferenceError(f"embedding looks up class indices, but `{p.input}` is {t}; declare the input as "
                                 f"`{p.input}: categorical(K)` (K classes), or use `linear` for real-valued channels")
        out = p.output or p.input
        return Signature({p.input: t}, {out: Scalar(p.out_dim)}, {"num_classes": t.num_classes})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.table = nn.Embedding(sig.info["num_classes"], p.out_dim)

    def forward(self, g, f):
        return {self.p.output or self.p.input: self.table(f[self.p.input].reshape(-1))}
