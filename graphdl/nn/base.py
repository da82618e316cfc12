"""The block contract and the block registry.

A block is an ``nn.Module`` registered under the name a spec's ``type:`` uses. It has

* ``Params``: a pydantic model (``extra="forbid"``) of its spec parameters;
* ``infer(params, fields, ctx) -> Signature``: a classmethod that reads the field table
  *before any tensor exists* and returns the fields it reads and writes, with types, or
  raises :class:`~graphdl.errors.InferenceError` saying what does not fit;
* ``__init__(params, sig, ctx)``: builds parameters for exactly those shapes;
* ``forward(g, f) -> dict``: ``g`` is the graph structure (a :class:`~graphdl.data.Graph`),
  ``f`` the current fields ``{"node.h": tensor, ...}``; it returns the fields it writes.

Capabilities are class-level declarations (``equivariant``, ``frame_equivariant``,
``needs_positions``, ``uses_edge_features``), never discovered by reading argument names.

Data statistics: a block that standardises with statistics of the training data (the
velocity mean and std of a learned simulator) names them in :meth:`Block.statistics_needed`
and keeps them as buffers (so they travel with the weights in a checkpoint); whoever trains
the model fills them through :meth:`graphdl.compile.GraphModel.set_statistics` (the task
that owns the data, e.g. ``simulate``). They start as mean 0, std 1.

Example::

    @register_block("scale")
    class Scale(Block):
        class Params(BlockParams):
            input: str = "node.h"
            factor: float = 2.0

        @classmethod
        def infer(cls, p, fields, ctx):
            t = fields.need(p.input, cls.name)
            return Signature(reads={p.input: t}, writes={p.input: t})

        def forward(self, g, f):
            return {self.p.input: f[self.p.input] * self.p.factor}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from graphdl.errors import SpecError, did_you_mean
from graphdl.types import FieldTable, FieldType


class BlockParams(BaseModel):
    """Base of every block's parameter model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str


@dataclass(frozen=True)
class Signature:
    """What a block reads and writes, with types. ``info`` holds derived sizes for ``__init__``."""

    reads: Mapping[str, FieldType]
    writes: Mapping[str, FieldType]
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildContext:
    """What a block may know about the model it sits in, beyond its fields.

    Attributes:
        graph_kind: ``given``, ``complete``, ``radius`` or ``knn``.
        self_loops: whether the graph builder adds self-loops.
        num_nodes_hint: fixed node count per graph when the dataset declares one (N-body: 5).
    """

    graph_kind: str = "given"
    self_loops: bool = False
    num_nodes_hint: int | None = None


class Block(nn.Module):
    """Base class of all blocks (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BlockParams]] = BlockParams
    equivariant: ClassVar[bool] = False
    frame_equivariant: ClassVar[bool] = False
    """May read or write ``frame`` fields (rotating and translating them with the structure);
    the compiler refuses a ``frame`` field on any other block, as a plain MLP on a ``1o`` vector."""
    needs_positions: ClassVar[bool] = False
    uses_edge_features: ClassVar[bool] = False
    family: ClassVar[str] = "misc"

    def __init__(self, p: BlockParams, sig: Signature, ctx: BuildContext | None = None):
        super().__init__()
        self.p = p
        self.sig = sig
        self.ctx = ctx or BuildContext()

    @classmethod
    def infer(cls, p: BlockParams, fields: FieldTable, ctx: BuildContext) -> Signature:  # pragma: no cover
        raise NotImplementedError

    def forward(self, g, f: dict[str, Tensor]) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def statistics_needed(self) -> dict[str, int]:
        """Data statistics this block standardises with: name -> channels (default: none)."""
        return {}

    def set_statistics(self, name: str, mean: Tensor, std: Tensor) -> None:  # pragma: no cover
        """Store the statistic ``name`` (``mean``, ``std`` of shape ``(channels,)``)."""
        raise NotImplementedError

    @classmethod
    def build(cls, params: Mapping[str, Any] | BlockParams, fields: Mapping[str, Any],
              ctx: BuildContext | None = None) -> "Block":
        """Validate ``params``, infer against ``fields`` (key -> type or spec type) and build.

        A convenience for Python users and tests: ``GCN.build({"out_dim": 16}, {"node.h": 8})``.
        """
        from graphdl.types import parse_type

        if not isinstance(params, BlockParams):
            params = cls.Params.model_validate({"type": cls.name, **dict(params)})
        ctx = ctx or BuildContext()
        table = FieldTable({k: parse_type(v) for k, v in fields.items()})
        sig = cls.infer(params, table, ctx)
        return cls(params, sig, ctx)

    def extra_repr(self) -> str:
        reads = ", ".join(f"{k}:{v}" for k, v in self.sig.reads.items())
        writes = ", ".join(f"{k}:{v}" for k, v in self.sig.writes.items())
        return f"{reads} -> {writes}"


BLOCKS: dict[str, type[Block]] = {}


def register_block(name: str) -> Callable[[type[Block]], type[Block]]:
    """Class decorator registering a block under ``name`` (the spec's ``type:``)."""

    def deco(cls: type[Block]) -> type[Block]:
        if name == "sequence":
            raise ValueError("block type `sequence` is reserved for groups of layers (`type: sequence` with "
                             "`layers:`); register the block under another name")
        if name in BLOCKS and BLOCKS[name].__qualname__ != cls.__qualname__:
            raise ValueError(f"block type `{name}` is already registered by {BLOCKS[name].__module__}")
        from graphdl.spec.model import STEP_KEYS

        params = getattr(cls, "Params", None)
        clash = sorted(set(getattr(params, "model_fields", {})) & set(STEP_KEYS))
        if clash:
            # a layer's `repeat` / `share_weights` / `residual` / `label` belong to the compiler:
            # a block parameter of that name could never be set from a spec, and a resolved
            # spec.yaml would reload it as the layer option (e.g. a second residual)
            raise ValueError(f"block `{name}`: parameter(s) {', '.join(f'`{c}`' for c in clash)} shadow the layer "
                             f"option(s) of the same name; rename them (e.g. `skip` for a block's own skip "
                             f"connection)")
        cls.name = name
        BLOCKS[name] = cls
        return cls

    return deco


def block_type(name: Any, *, mark=None, path: str | None = None) -> type[Block]:
    """Look up a registered block, with a did-you-mean error for typos."""
    load_builtin_blocks()
    if not isinstance(name, str):
        raise SpecError(f"`type` must be a block name, found `{name}`", mark=mark, path=path)
    if name not in BLOCKS:
        raise SpecError(f"unknown block type `{name}`{did_you_mean(name, BLOCKS)}", mark=mark, path=path)
    return BLOCKS[name]


_LOADED = False


def load_builtin_blocks() -> None:
    """Import the modules of built-in blocks (once) so they register themselves."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib
    import pkgutil

    import graphdl.nn as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name != "base":
            importlib.import_module(f"graphdl.nn.{mod.name}")
