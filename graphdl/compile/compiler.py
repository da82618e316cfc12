"""Spec -> Plan -> GraphModel.

``plan_spec`` resolves every layer's block, validates its parameters and threads the field
table through the stack with each block's ``infer`` (no tensors exist yet); any mismatch is
a :class:`SpecError` at the layer's ``file:line:col``. ``build`` instantiates the blocks.
``compile_spec`` does both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from graphdl.data.graph import Graph
from graphdl.errors import DataError, InferenceError, KernelUnavailableError, SpecError
from graphdl.nn.base import Block, BlockParams, BuildContext, Signature, block_type
from graphdl.spec.loader import format_path
from graphdl.spec.model import LayerEntry, Spec, parse_spec, validate_model
from graphdl.types import FieldTable, FieldType


@dataclass
class PlanStep:
    """One block application in the stack (``repeat: N`` gives N steps)."""

    entry: LayerEntry
    repeat_index: int
    cls: type[Block]
    params: BlockParams
    sig: Signature
    fields_after: FieldTable
    shares: int | None  # index of the step whose module this one reuses

    @property
    def where(self) -> str:
        p = format_path(self.entry.path)
        return p + (f"#{self.repeat_index}" if self.entry.repeat > 1 else "")

    @property
    def label(self) -> str:
        return self.entry.label or self.cls.name


@dataclass
class Plan:
    """The typed stack: inputs, one step per block application, outputs."""

    spec: Spec
    ctx: BuildContext
    inputs: FieldTable
    steps: list[PlanStep]
    outputs: dict[str, FieldType]


def plan_spec(spec: Spec | Any) -> Plan:
    """Type-check a spec: resolve blocks, validate parameters, infer every field."""
    if not isinstance(spec, Spec):
        spec = parse_spec(spec)
    doc = spec.doc
    ctx = BuildContext(graph_kind=spec.graph.kind, self_loops=spec.graph.self_loops)
    fields = spec.inputs.copy()
    steps: list[PlanStep] = []
    if not spec.layers:
        raise doc.error(("model", "layers"), "`model.layers` is empty; add at least one block")
    for entry in spec.layers:
        tpath = entry.path + ("type",)
        cls = block_type(entry.raw["type"], mark=doc.mark(tpath), path=format_path(tpath))
        params = validate_model(cls.Params, entry.raw, doc, entry.path, f"block `{cls.name}`")
        assert isinstance(params, BlockParams)
        first = len(steps)
        for r in range(entry.repeat):
            try:
                sig = cls.infer(params, fields, ctx)
            except (InferenceError, KernelUnavailableError) as e:
                where = entry.path
                msg = str(e)
                if not msg.startswith(cls.name):
                    msg = f"{cls.name}: {msg}"
                if entry.repeat > 1:
                    msg = f"(repeat {r}) {msg}"
                raise SpecError(msg,
                                mark=doc.mark(where), path=format_path(where)) from None
            if entry.share_weights and r > 0:
                prev = steps[first].sig
                if dict(prev.reads) != dict(sig.reads) or dict(prev.writes) != dict(sig.writes):
                    raise doc.error(entry.path + ("share_weights",),
                                    f"cannot share weights across repeats: repeat {r} sees "
                                    f"{_sig_str(sig)} but repeat 0 saw {_sig_str(prev)}; make the block "
                                    f"map its fields to the same types, or drop `share_weights`")
            after = fields.copy()
            for k, t in sig.writes.items():
                if entry.residual:
                    if k not in fields or fields[k] != t:
                        before = fields.get(k)
                        raise doc.error(entry.path + ("residual",),
                                        f"`residual: true` adds the input of `{k}` to the block's output, but "
                                        f"they differ ({before if before is not None else 'absent'} -> {t}); "
                                        f"keep the width, or drop `residual`")
                after[k] = t
            steps.append(PlanStep(entry, r, cls, params, sig, after,
                                  first if (entry.share_weights and r > 0) else None))
            fields = after
    if spec.outputs is not None:
        outputs = {}
        for j, k in enumerate(spec.outputs):
            if k not in fields:
                raise doc.error(("model", "outputs", j),
                                f"output `{k}` is never produced; fields at the end of the stack: "
                                + ", ".join(f"`{f}`" for f in fields))
            outputs[k] = fields[k]
    else:
        outputs = dict(steps[-1].sig.writes)
    return Plan(spec, ctx, spec.inputs.copy(), steps, outputs)


def _sig_str(sig: Signature) -> str:
    r = ", ".join(f"{k}:{v}" for k, v in sig.reads.items())
    w = ", ".join(f"{k}:{v}" for k, v in sig.writes.items())
    return f"{r} -> {w}"


class GraphModel(nn.Module):
    """A compiled spec: ``model(batch) -> {output field: tensor}``.

    The graph of the spec (``graph.kind``) is made by :meth:`prepare` on first use of a
    batch and cached on it; everything else is the stack of blocks applied in order.
    """

    def __init__(self, plan: Plan):
        super().__init__()
        self.plan = plan
        modules: list[Block] = []
        self._order: list[int] = []
        for s in plan.steps:
            if s.shares is not None:
                self._order.append(self._order[s.shares])
                continue
            modules.append(s.cls(s.params, s.sig, plan.ctx))
            self._order.append(len(modules) - 1)
        self.blocks = nn.ModuleList(modules)
        self._residual = [s.entry.residual for s in plan.steps]
        self._inputs = dict(plan.inputs)
        self._outputs = list(plan.outputs)

    @property
    def spec(self) -> Spec:
        return self.plan.spec

    @property
    def input_fields(self) -> dict[str, FieldType]:
        return dict(self._inputs)

    @property
    def output_fields(self) -> dict[str, FieldType]:
        return dict(self.plan.outputs)

    def check_inputs(self, g: Graph) -> None:
        """Shape checks of a batch against the declared inputs (no host sync)."""
        if g.num_nodes == 0:
            raise DataError("the batch has no nodes (an empty graph); drop empty graphs from the dataset")
        for k, t in self._inputs.items():
            if k not in g.fields:
                have = ", ".join(sorted(g.fields)) or "none"
                raise DataError(f"the batch lacks input field `{k}` declared in the spec (batch fields: {have})")
            shape = tuple(g.fields[k].shape[1:])
            want = t.shape()
            if shape != want and not (len(want) == 1 and shape == () and want == (1,)):
                raise DataError(f"input field `{k}` has trailing shape {shape}, the spec declares {t} "
                                f"(shape {want}); fix `inputs:` or the featurizer")

    def prepare(self, g: Graph) -> Graph:
        """Make the spec's message-passing graph for ``g``.

        The result is cached on ``g``: calling the model again on the same batch (an evaluation
        set reused every epoch) skips the neighbour search. The cache entry remembers the exact
        tensors it was built from (edge index, batch vector, every field) and their in-place
        version counters, so a batch whose positions moved, or a ``g.replace(...)`` copy (which
        shares ``g``'s cache) with other fields, is rebuilt rather than served a stale graph."""
        gs = self.plan.spec.graph
        key = ("prepared", gs.kind, gs.self_loops, gs.cutoff, gs.k, gs.max_neighbors, gs.positions)
        if g._cache.get("prepared_for") == key:
            return g
        if gs.kind == "given" and not gs.self_loops:
            return g
        stamp = [g.edge_index, g.batch, *g.fields.values()]
        names = tuple(g.fields)
        versions = tuple(t._version if isinstance(t, Tensor) else None for t in stamp)
        hit = g._cache.get("prepared_graph")
        if (hit is not None and hit[0] == key and hit[1] == names and hit[3] == versions
                and len(hit[2]) == len(stamp) and all(a is b for a, b in zip(hit[2], stamp))):
            return hit[4]
        if gs.kind == "given":
            out = g
        else:
            from graphdl.ops import neighbors

            out = neighbors.build_graph(g, gs)
        if gs.self_loops:
            out = out.add_self_loops()
        out._cache["prepared_for"] = key
        g._cache["prepared_graph"] = (key, names, stamp, versions, out)
        return out

    def forward(self, g: Graph) -> dict[str, Tensor]:
        self.check_inputs(g)
        g = self.prepare(g)
        f: dict[str, Tensor] = {k: g.fields[k] for k in self._inputs}
        for i, idx in enumerate(self._order):
            writes = self.blocks[idx](g, f)
            if self._residual[i]:
                writes = {k: v + f[k] for k, v in writes.items()}
            f.update(writes)
        return {k: f[k] for k in self._outputs}

    # ----------------------------------------------------------------- describe
    def describe(self) -> str:
        """A table of every step: fields read and written with types, and parameter counts."""
        plan = self.plan
        rows = []
        total = 0
        seen: set[int] = set()
        for i, (s, idx) in enumerate(zip(plan.steps, self._order)):
            block = self.blocks[idx]
            if idx in seen:
                n, note = 0, f"shared with #{plan.steps.index(plan.steps[s.shares])}" if s.shares is not None else "shared"
            else:
                seen.add(idx)
                n = sum(p.numel() for p in block.parameters())
                note = ""
            total += n
            reads = ", ".join(f"{k}:{v}" for k, v in s.sig.reads.items())
            writes = ", ".join(f"{k}:{v}" for k, v in s.sig.writes.items())
            extra = getattr(block, "describe_extra", lambda: "")()
            note = "; ".join(x for x in (note, "residual" if s.entry.residual else "", extra) if x)
            rows.append((str(i), s.where, s.label, f"{reads} -> {writes}", f"{n:,}", note))
        head = ("#", "layer", "block", "fields (reads -> writes)", "params", "notes")
        widths = [max(len(r[c]) for r in rows + [head]) for c in range(6)]
        def fmt(r):
            return "  ".join(x.ljust(w) if c != 4 else x.rjust(w) for c, (x, w) in enumerate(zip(r, widths))).rstrip()
        spec = plan.spec
        gs = spec.graph
        graph = gs.kind + (f"(cutoff={gs.cutoff}, max_neighbors={gs.max_neighbors})" if gs.kind == "radius" else "") \
            + (f"(k={gs.k})" if gs.kind == "knn" else "") + (" + self-loops" if gs.self_loops else "")
        lines = [f"model `{spec.name or '?'}` from {spec.file}    graph: {graph}",
                 "inputs:  " + ", ".join(f"{k}: {v}" for k, v in plan.inputs.items()),
                 fmt(head), fmt(tuple("-" * w for w in widths))]
        lines += [fmt(r) for r in rows]
        lines.append("outputs: " + ", ".join(f"{k}: {v}" for k, v in plan.outputs.items()))
        lines.append(f"total parameters: {total:,}")
        return "\n".join(lines)


def build(plan: Plan) -> GraphModel:
    return GraphModel(plan)


def compile_spec(source: Any, *, dtype: torch.dtype | None = None) -> GraphModel:
    """Spec file path, mapping, :class:`Spec` or :class:`Plan` -> :class:`GraphModel`."""
    plan = source if isinstance(source, Plan) else plan_spec(source)
    model = build(plan)
    if dtype is not None:
        model = model.to(dtype)
    return model
