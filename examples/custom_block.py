"""A user-defined block, registered from a module that a spec loads with ``import:``.

Run it::

    graphdl describe examples/custom_block.yaml

The spec names this file under ``import:`` (a path relative to the spec, or a module on the
Python path); importing it runs ``@register_block``, after which ``type: degree_scale`` works
like any built-in block. The contract (see ``graphdl.nn.base``):

* ``Params``: a pydantic model of the block's keys in the spec (unknown keys are refused);
* ``infer(p, fields, ctx)``: checks the fields the block reads, before any tensor exists, and
  returns a ``Signature`` of the fields it reads and writes (with types);
* ``__init__(p, sig, ctx)``: creates parameters for exactly those shapes;
* ``forward(g, f)``: returns a dict of the fields it writes.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, BlockParams, Signature, register_block
from graphdl.types import Scalar


@register_block("degree_scale")
class DegreeScale(Block):
    """Degree scaler (after PNA, Corso et al. 2020): ``h_i' = h_i ⊙ (1 + γ log(1 + deg_i) / δ)``.

    ``γ`` is a learned per-channel weight (initialised to ``gamma``), ``deg_i`` the in-degree of
    node ``i`` and ``δ`` a normalising constant (``delta``, e.g. the mean ``log(1 + deg)`` of the
    training graphs). It lets a mean-aggregating model recover how many neighbours a node has.

    Shapes: ``input`` ``(N, d)`` → ``output`` ``(N, d)``.
    """

    family = "user"

    class Params(BlockParams):
        input: str = "node.h"
        output: str | None = None
        gamma: float = 0.0
        delta: float = Field(1.0, gt=0)

    @classmethod
    def infer(cls, p, fields, ctx):
        if not p.input.startswith("node."):
            raise InferenceError(f"degree_scale scales node features; `{p.input}` is not a node field")
        d = fields.need_scalar(p.input, cls.name)
        return Signature({p.input: fields[p.input]}, {p.output or p.input: Scalar(d)}, {"dim": d})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.gamma = nn.Parameter(torch.full((sig.info["dim"],), float(p.gamma)))

    def forward(self, g, f):
        x = f[self.p.input]
        logdeg = torch.log1p(g.in_degree().to(x.dtype)).unsqueeze(-1) / self.p.delta
        return {self.p.output or self.p.input: x * (1 + self.gamma * logdeg)}
