"""Spec -> Plan -> GraphModel.

``plan_spec`` resolves every layer's block, validates its parameters and threads the field
table through the stack with each block's ``infer`` (no tensors exist yet); any mismatch is
a :class:`SpecError` at the layer's ``file:line:col``. ``build`` instantiates the blocks.
``compile_spec`` does both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from graphdl.data.graph import Graph
from graphdl.errors import DataError, InferenceError, KernelUnavailableError, NonFiniteError, SpecError
from graphdl.nn.base import (
    Block,
    BlockParams,
    BuildContext,
    Signature,
    block_lowerings,
    block_type,
    describe_lowering,
    dgl_blocks,
    no_dgl_lowering,
    require_dgl,
)
from graphdl.ops.neighbors import SOURCE_GRAPH, build_graph
from graphdl.spec.loader import format_path
from graphdl.spec.model import ForcesSpec, LayerEntry, Spec, parse_spec, validate_model
from graphdl.types import (
    VECTOR,
    Categorical,
    FieldTable,
    FieldType,
    Frame,
    Irreps,
    Scalar,
    Stacked,
    split_key,
)


@dataclass
class PlanStep:
    """One block application in the stack (``repeat: N`` gives N steps; a ``sequence`` its layers' steps).

    ``groups`` holds ``(entry, repeat index)`` of each enclosing ``sequence``, outermost
    first; ``after`` lists ``(field, trace field, last)`` to record once this step ran: the
    value of ``field`` is appended to the trace, which is stacked along dim 1 after the
    ``last`` repeat.
    """

    entry: LayerEntry
    repeat_index: int
    cls: type[Block]
    params: BlockParams
    sig: Signature
    fields_after: FieldTable
    shares: int | None  # index of the step whose module this one reuses
    groups: tuple = ()
    after: list = field(default_factory=list)

    @property
    def where(self) -> str:
        p = format_path(self.entry.path)
        for ge, r in self.groups:  # `model.layers[1]#3.layers[2]`: repeat 3 of the sequence at layers[1]
            if ge.repeat > 1:
                gp = format_path(ge.path)
                p = gp + f"#{r}" + p[len(gp):]
        return p + (f"#{self.repeat_index}" if self.entry.repeat > 1 else "")

    @property
    def label(self) -> str:
        return self.entry.label or self.cls.name


@dataclass(frozen=True)
class ForcesPlan:
    """``model.forces: autograd`` resolved: ``output = −∂ energy / ∂ positions``."""

    energy: str
    positions: str
    output: str

    def as_spec(self) -> dict:
        """The long form, for resolved specs."""
        return {"type": "autograd", "energy": self.energy, "positions": self.positions, "output": self.output}


@dataclass
class Plan:
    """The typed stack: inputs, one step per block application, outputs.

    ``outputs`` are the model's outputs, the forces (when ``forces`` is set) included;
    ``stack_outputs`` are those the stack itself writes (``model.outputs`` of a spec)."""

    spec: Spec
    ctx: BuildContext
    inputs: FieldTable
    steps: list[PlanStep]
    outputs: dict[str, FieldType]
    forces: ForcesPlan | None = None

    @property
    def stack_outputs(self) -> list[str]:
        return [k for k in self.outputs if self.forces is None or k != self.forces.output]


LOWERINGS = (None, "auto", "dgl")
"""Values of ``plan_spec(..., lowering=)`` / ``compile_spec(..., lowering=)``."""


def plan_spec(spec: Spec | Any, *, lowering: str | None = None) -> Plan:
    """Type-check a spec: resolve blocks, validate parameters, infer every field.

    ``lowering="dgl"`` runs every block that has a DGL lowering on DGL (as if each of its layers
    said ``lowering: dgl``), except where a layer names its own ``lowering``; the other blocks
    keep theirs (``describe`` shows each block's). A spec none of whose blocks has a DGL
    lowering is an error naming the blocks that have one, as is ``lowering: dgl`` on such a block.
    """
    if lowering not in LOWERINGS:
        raise SpecError(f"lowering must be `dgl` or `auto` (or left out), found `{lowering}`")
    if not isinstance(spec, Spec):
        spec = parse_spec(spec)
    doc = spec.doc
    ctx = BuildContext(graph_kind=spec.graph.kind, self_loops=spec.graph.self_loops)
    fields = spec.inputs.copy()
    steps: list[PlanStep] = []
    if not spec.layers:
        raise doc.error(("model", "layers"), "`model.layers` is empty; add at least one block")
    lowered: list[str] = []  # blocks with a DGL lowering (for lowering="dgl")
    for entry in spec.layers:
        fields = _plan_entry(entry, fields, steps, ctx, doc, (), lowering, lowered)
    if lowering == "dgl" and not lowered:
        raise doc.error(("model", "layers"), "lowering `dgl` was asked for the whole model, but none of its "
                                             "blocks has a DGL lowering; the blocks with one are "
                                             + ", ".join(f"`{n}`" for n in dgl_blocks()))
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
    forces = None
    if spec.forces is not None:
        forces = _plan_forces(spec, spec.forces, outputs, fields)
        outputs[forces.output] = VECTOR
    return Plan(spec, ctx, spec.inputs.copy(), steps, outputs, forces)


def _frame_typed(t: FieldType) -> bool:
    return isinstance(t, Frame) or (isinstance(t, Stacked) and isinstance(t.inner, Frame))


def _plan_entry(entry: LayerEntry, fields: FieldTable, steps: list[PlanStep], ctx: BuildContext, doc,
                groups: tuple, lowering: str | None = None, lowered: list | None = None) -> FieldTable:
    """Append the steps of one layer entry (all its repeats; a sequence's layers in order) to ``steps``.

    ``lowering``: the whole model's (see :func:`plan_spec`); ``lowered`` collects the names of the
    blocks that have a DGL lowering."""
    first = len(steps)
    per_repeat = 0
    traced: dict[str, FieldType] = {}
    cls = params = None
    if not entry.is_sequence:
        tpath = entry.path + ("type",)
        cls = block_type(entry.raw["type"], mark=doc.mark(tpath), path=format_path(tpath))
        params = _validate_with_lowering(entry, cls, doc, lowering, lowered)
    for r in range(entry.repeat):
        start = len(steps)
        if entry.is_sequence:
            for child in entry.children:
                fields = _plan_entry(child, fields, steps, ctx, doc, groups + ((entry, r),), lowering, lowered)
            if r == 0:
                per_repeat = len(steps) - start
            if entry.share_weights and r > 0:
                for j in range(per_repeat):
                    prev, cur = steps[first + j], steps[start + j]
                    if dict(prev.sig.reads) != dict(cur.sig.reads) or dict(prev.sig.writes) != dict(cur.sig.writes):
                        raise doc.error(entry.path + ("share_weights",),
                                        f"cannot share weights across repeats: in repeat {r}, {cur.where} "
                                        f"({cur.cls.name}) sees {_sig_str(cur.sig)} but in repeat 0 it saw "
                                        f"{_sig_str(prev.sig)}; make the layers map their fields to the same "
                                        f"types, or drop `share_weights`")
                    cur.shares = first + j if prev.shares is None else prev.shares
        else:
            fields = _plan_block(entry, r, cls, params, fields, steps, ctx, doc, groups, first)
        for k, name in entry.trace.items():
            if k not in fields:
                raise doc.error(entry.path + ("trace", k), f"`trace` records `{k}` after every repeat, but it is not a "
                                                           f"field here; fields after this layer: "
                                                           + ", ".join(f"`{f}`" for f in fields))
            t = fields[k]
            if k in traced and traced[k] != t:
                raise doc.error(entry.path + ("trace", k), f"`trace` stacks `{k}`, but its type changes across "
                                                           f"repeats ({traced[k]} then {t})")
            traced[k] = t
            steps[-1].after.append((k, name, r == entry.repeat - 1))
    for k, name in entry.trace.items():
        if name in fields:
            raise doc.error(entry.path + ("trace", k), f"the trace of `{k}` is written to `{name}`, which is already a "
                                                       f"field; name a new one (e.g. `{k}s`)")
        fields = fields.copy()
        fields[name] = Stacked(traced[k], entry.repeat)
        steps[-1].fields_after = fields
    return fields


def _validate_with_lowering(entry: LayerEntry, cls, doc, lowering: str | None, lowered: list | None) -> BlockParams:
    """A layer's block parameters, with the model's ``lowering`` applied where the block has a DGL
    lowering and the layer names none; ``lowering: dgl`` on a block without one, or without DGL
    importable, is a one-line error at the layer."""
    raw = entry.raw
    has_dgl = "dgl" in block_lowerings(cls)
    if raw.get("lowering") == "dgl" and not has_dgl:
        raise doc.error(entry.path + ("lowering",), no_dgl_lowering(cls.name))
    if lowering is not None and has_dgl and "lowering" not in raw:
        raw = {**raw, "lowering": lowering}
    if has_dgl and lowered is not None:
        lowered.append(cls.name)
    params = validate_model(cls.Params, raw, doc, entry.path, f"block `{cls.name}`")
    assert isinstance(params, BlockParams)
    if getattr(params, "lowering", None) == "dgl":
        try:
            require_dgl(cls.name)
        except KernelUnavailableError as e:
            at = entry.path + (("lowering",) if "lowering" in entry.raw else ())
            raise doc.error(at, str(e)) from None
    return params


def _plan_block(entry: LayerEntry, r: int, cls, params, fields: FieldTable, steps: list[PlanStep], ctx, doc,
                groups: tuple, first: int) -> FieldTable:
    """Infer one application (repeat ``r``) of a block and append its step."""
    reps = [(ge, gr) for ge, gr in groups if ge.repeat > 1] + ([(entry, r)] if entry.repeat > 1 else [])
    try:
        sig = cls.infer(params, fields, ctx)
        frames = [k for k, t in list(sig.reads.items()) + list(sig.writes.items()) if _frame_typed(t)]
        if frames and not getattr(cls, "frame_equivariant", False):
            k = frames[0]
            verb = "read" if k in sig.reads else "write"
            raise InferenceError(f"{cls.name} is not frame-equivariant and cannot {verb} field `{k}` of type "
                                 f"{(sig.reads.get(k) or sig.writes[k])} (a rigid frame rotates and translates with "
                                 f"the structure); only frame-equivariant blocks (ipa, backbone_update, "
                                 f"frame_stop_gradient, frames_from_backbone) take frames")
    except (InferenceError, KernelUnavailableError) as e:
        msg = str(e)
        if not msg.startswith(cls.name):
            msg = f"{cls.name}: {msg}"
        if reps:
            msg = "(" + ", ".join(f"repeat {x}" for _, x in reps) + f") {msg}"
        raise SpecError(msg, mark=doc.mark(entry.path), path=format_path(entry.path)) from None
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
                          first if (entry.share_weights and r > 0) else None, groups))
    return after


def resolved_layers(plan: "Plan") -> list[dict]:
    """``model.layers`` with every block's parameters spelled out (defaults included), groups kept."""
    params = {}
    for s in plan.steps:
        params.setdefault(id(s.entry), s.params)

    def one(e: LayerEntry) -> dict:
        if e.is_sequence:
            out: dict = {"type": "sequence", "layers": [one(c) for c in e.children]}
        else:
            out = params[id(e)].model_dump(mode="json")
        if e.repeat != 1:
            out["repeat"] = e.repeat
        if e.share_weights:
            out["share_weights"] = True
        if e.residual:
            out["residual"] = True
        if e.label:
            out["label"] = e.label
        if e.trace:
            out["trace"] = dict(e.trace)
        return out

    return [one(e) for e in plan.spec.layers]


def _is_energy(key: str, t: FieldType) -> bool:
    return split_key(key)[0] == "graph" and isinstance(t, (Scalar, Irreps)) and t.invariant and t.dim == 1


def _plan_forces(spec: Spec, fs: ForcesSpec, outputs: dict[str, FieldType], fields: FieldTable) -> ForcesPlan:
    """Resolve ``model.forces``; every mistake is one line at its place in the spec."""
    doc = spec.doc
    long = isinstance(spec.doc.data.get("model", {}).get("forces"), dict)
    where = ("model", "forces")

    def at(key: str) -> tuple:
        return where + (key,) if long and key in spec.doc.data["model"]["forces"] else where

    listed = ", ".join(f"`{k}: {t}`" for k, t in outputs.items()) or "none"
    energy = fs.energy
    if energy is None:
        cands = [k for k, t in outputs.items() if _is_energy(k, t)]
        if not cands:
            raise doc.error(where, f"`forces: autograd` needs an energy output (a graph-level scalar of width 1), but "
                                   f"the model outputs {listed}; add a readout writing e.g. `graph.energy` (out_dim 1) "
                                   f"and list it under `model.outputs`")
        if len(cands) > 1:
            raise doc.error(where, "`forces: autograd` found several graph-level scalar outputs of width 1 ("
                                   + ", ".join(f"`{k}`" for k in cands) + "); name the energy with "
                                   f"`forces: {{type: autograd, energy: {cands[0]}}}`")
        energy = cands[0]
    elif energy not in outputs:
        raise doc.error(at("energy"), f"the energy `{energy}` of `forces: autograd` is not an output of the model "
                                      f"(outputs: {listed}); list it under `model.outputs`")
    t = outputs[energy]
    if not _is_energy(energy, t):
        level = split_key(energy)[0]
        what = (f"a {level}-level field" if level != "graph" else
                f"{t.dim} channels" if t.invariant else f"type {t}")
        raise doc.error(at("energy"), f"the energy `{energy}` of `forces: autograd` must be a graph-level scalar of "
                                      f"width 1, found {what} (`{energy}: {t}`); sum node energies with a `readout` into a "
                                      f"graph field of out_dim 1")
    pos = fs.positions
    vectors = [k for k, v in spec.inputs.items() if split_key(k)[0] == "node" and v == VECTOR]
    if pos is None:
        if spec.graph.positions in vectors:
            pos = spec.graph.positions
        elif len(vectors) == 1:
            pos = vectors[0]
        elif not vectors:
            raise doc.error(where, "`forces: autograd` differentiates the energy with respect to positions, but the "
                                   "spec declares no `1o` node input; declare one, e.g. `node.pos: 1o` under `inputs:`")
        else:
            raise doc.error(where, "`forces: autograd` cannot tell which `1o` input holds the positions ("
                                   + ", ".join(f"`{k}`" for k in vectors) + f"); name it with "
                                   f"`forces: {{type: autograd, positions: {vectors[0]}}}`")
    elif pos not in spec.inputs:
        raise doc.error(at("positions"), f"the positions `{pos}` of `forces: autograd` are not an input of the spec "
                                         f"(inputs: {', '.join(f'`{k}`' for k in spec.inputs) or 'none'}); "
                                         f"declare `{pos}: 1o` under `inputs:`")
    elif pos not in vectors:
        raise doc.error(at("positions"), f"the positions `{pos}` of `forces: autograd` must be a `1o` node input, "
                                         f"found {split_key(pos)[0]} field of type {spec.inputs[pos]}; declare "
                                         f"`node.<name>: 1o` positions")
    out = fs.output
    if split_key(out)[0] != "node":
        raise doc.error(at("output"), f"the forces output `{out}` must be a node field (one force per atom), "
                                      f"e.g. `output: node.forces`")
    if out in fields or out in outputs:
        raise doc.error(at("output"), f"the forces output `{out}` is already a field of the model; give the "
                                      f"forces another name with `forces: {{type: autograd, output: node.<name>}}`")
    return ForcesPlan(energy, pos, out)


@torch.compiler.disable
def _prepare_eagerly(model: GraphModel, g: Graph) -> Graph:
    """``model.check_inputs(g)`` and ``model.prepare(g)`` outside any ``torch.compile`` trace (a
    graph break before the stack), with the host-side sizes its blocks read (the largest graph's
    node count) filled in, so that the trace sees them as sizes instead of breaking on ``int()``.

    Raises:
        KernelUnavailableError: forces that will be differentiated again (training, or
            positions that require grad) while Dynamo would break the graph at
            ``torch.autograd.grad``: the compiled stack's backward would then be run with
            ``create_graph``, which AOTAutograd does not support (double backward).
    """
    import torch._dynamo  # loaded already: this runs inside a torch.compile call

    model.check_inputs(g)
    fp = model.plan.forces
    if fp is not None and torch.is_grad_enabled() and not torch._dynamo.config.trace_autograd_ops:
        pos = g.fields.get(fp.positions)
        if model.training or (pos is not None and pos.requires_grad):
            raise KernelUnavailableError(
                f"torch.compile of a `forces: autograd` model in training differentiates the forces "
                f"`{fp.output}` again (double backward), which torch.compile's AOTAutograd does not support "
                f"(torch {torch.__version__}); set `torch._dynamo.config.trace_autograd_ops = True` before the "
                f"first compiled call (the force computation is then traced into the graph and differentiated "
                f"once), or train this model eagerly")
    g = model.prepare(g)
    for b in model._eager_structure:  # structural tensors with host reads (Graphormer's distances)
        b.eager_structure(g)
    if model._needs_max_graph_nodes:
        g.max_graph_nodes()
    if model._needs_edges:
        g.edge_index  # noqa: B018 - builds a complete/causal graph's edges here, not in the trace (a host sync)
    return g


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
        self._after = [list(s.after) for s in plan.steps]
        self._inputs = dict(plan.inputs)
        self._outputs = list(plan.outputs)
        self._needs_max_graph_nodes = any(getattr(m, "needs_max_graph_nodes", False)  # (nested blocks too)
                                          for b in modules for m in b.modules())
        # blocks whose structural, non-differentiable inputs need host reads (data-dependent sizes):
        # under torch.compile they are computed eagerly and kept across the trace's uncached view
        self._eager_structure = [b for b in modules if hasattr(b, "eager_structure")]
        self._eager_keys = tuple(k for b in self._eager_structure for k in b.eager_structure_keys())
        # a stack that reads or writes edge fields needs the edge list of a complete/causal graph,
        # whose edges are otherwise built on first use (dense attention never needs them)
        self._needs_edges = any(k.startswith("edge.") for k in plan.inputs) or any(
            k.startswith("edge.") for s in plan.steps for k in (*s.sig.reads, *s.sig.writes))
        self.trace: list | None = None
        """When a list, every step appends ``(step index, fields it wrote)`` (``graphdl verify`` uses
        it to name the first block that breaks a symmetry); ``None`` (default) records nothing."""
        self.check_finite = False
        """Debug mode (one host sync per block): raise :class:`NonFiniteError` naming the first
        block whose output is NaN or inf. The runner turns it on only to search a failed step."""

    @property
    def spec(self) -> Spec:
        return self.plan.spec

    @property
    def input_fields(self) -> dict[str, FieldType]:
        return dict(self._inputs)

    @property
    def output_fields(self) -> dict[str, FieldType]:
        return dict(self.plan.outputs)

    def _float_dtype(self) -> torch.dtype | None:
        """The floating dtype of the parameters (``None`` for a model without parameters)."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return None

    def check_inputs(self, g: Graph) -> None:
        """Shape and dtype checks of a batch against the declared inputs (no host sync).

        Conversion (documented, the one graphdl makes): a 1-D field ``(N,)`` for an input
        declared with one channel (``node.x: 1``; what ``from_networkx`` gives for a scalar
        attribute) is read as ``(N, 1)`` by :meth:`forward`. Everything else must match.

        Raises:
            DataError: one line naming the field, what was found and what the spec expects:
                a missing field, another trailing shape, integers or complex numbers where
                features are real, or a floating dtype other than the model's (e.g. a float64
                array into a float32 model).
        """
        if g.num_nodes == 0:
            raise DataError("the batch has no nodes (an empty graph); drop empty graphs from the dataset")
        dtype = self._float_dtype()
        for k, t in self._inputs.items():
            if k not in g.fields:
                have = ", ".join(sorted(g.fields)) or "none"
                raise DataError(f"the batch lacks input field `{k}` declared in the spec (batch fields: {have})")
            v = g.fields[k]
            shape = tuple(v.shape[1:])
            want = t.shape()
            if shape != want and not (len(want) == 1 and shape == () and want == (1,)):
                raise DataError(f"input field `{k}` has trailing shape {shape}, the spec declares {t} "
                                f"(shape {want}); fix `inputs:` or the featurizer")
            if isinstance(t, Categorical):
                _check_categorical(k, t, v)
                continue
            if not v.is_floating_point():
                raise DataError(f"input field `{k}` holds {str(v.dtype).removeprefix('torch.')} values, but `{k}: {t}` "
                                f"is a real-valued feature; convert it with `.float()` (or declare it as the model's "
                                f"dtype)")
            if dtype is not None and v.dtype != dtype:
                have, need = str(v.dtype).removeprefix("torch."), str(dtype).removeprefix("torch.")
                raise DataError(f"input field `{k}` is {have} but the model's parameters are {need}; convert the "
                                f"batch with `batch.to(torch.{need})`, or the model with `model.to(torch.{have})`")

    def statistics_needed(self) -> dict[str, int]:
        """Data statistics the blocks standardise with (name -> channels; see :mod:`graphdl.nn.base`)."""
        out: dict[str, int] = {}
        for b in self.blocks:
            for k, n in b.statistics_needed().items():
                if out.setdefault(k, n) != n:
                    raise InferenceError(f"blocks disagree on the width of data statistic `{k}` ({out[k]} vs {n})")
        return out

    def set_statistics(self, stats: dict) -> None:
        """Give every block the data statistics it needs: ``{name: (mean, std)}`` with tensors
        (or sequences) of shape ``(channels,)``; they are copied into the blocks' buffers.

        Raises:
            DataError: a statistic a block needs is missing, has another width, or a std is
                not positive and finite.
        """
        need = self.statistics_needed()
        for name, width in need.items():
            if name not in stats:
                raise DataError(f"the model standardises with data statistic `{name}` ({width} channels) but none "
                                f"was given (given: {', '.join(sorted(stats)) or 'none'})")
            mean, std = (torch.as_tensor(x, dtype=torch.float64).reshape(-1) for x in stats[name])
            if mean.numel() != width or std.numel() != width:
                raise DataError(f"data statistic `{name}` needs {width} channels, found mean {mean.numel()} and "
                                f"std {std.numel()}")
            if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
                raise DataError(f"data statistic `{name}` must have a finite mean and a positive finite std, found "
                                f"mean {mean.tolist()}, std {std.tolist()}")
            for b in self.blocks:
                if name in b.statistics_needed():
                    b.set_statistics(name, mean, std)

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
            out = g.add_self_loops() if gs.self_loops else g
        elif gs.kind in ("complete", "causal"):
            out = build_graph(g, gs, self_loops=gs.self_loops)  # loops placed in order: no re-sort
        else:
            out = build_graph(g, gs)
            if gs.self_loops:
                out = out.add_self_loops()
        out._cache[SOURCE_GRAPH] = g  # blocks that read the dataset's own bonds (Graphormer's distances)
        out._cache["prepared_for"] = key
        g._cache["prepared_graph"] = (key, names, stamp, versions, out)
        return out

    def forward(self, g: Graph) -> dict[str, Tensor]:
        if torch.compiler.is_compiling():
            # Input checks and the neighbour search (which syncs with the host: data-dependent
            # edge counts) run eagerly, cached on the batch as in eager mode; the stack is traced
            # on a view with an empty structure cache, so one graph serves cold and warm batches.
            g = _prepare_eagerly(self, g).uncached(keep=self._eager_keys)
        else:
            self.check_inputs(g)
            g = self.prepare(g)
        f: dict[str, Tensor] = {k: _as_declared(g.fields[k], t) for k, t in self._inputs.items()}
        if self.plan.forces is not None:
            return self._forward_forces(g, f)
        return self._stack(g, f)

    def _stack(self, g: Graph, f: dict[str, Tensor]) -> dict[str, Tensor]:
        stacks: dict[str, list[Tensor]] = {}  # `trace:` fields being gathered, one value per repeat
        if self.check_finite:
            self._raise_nonfinite("the input", f)
        for i, idx in enumerate(self._order):
            writes = self.blocks[idx](g, f)
            if self._residual[i]:
                writes = {k: v + f[k] for k, v in writes.items()}
            if self.check_finite:
                s = self.plan.steps[i]
                self._raise_nonfinite(f"{s.where} ({s.label})", writes)
            if self.trace is not None:
                self.trace.append((i, dict(writes)))
            f.update(writes)
            for k, name, last in self._after[i]:
                stacks.setdefault(name, []).append(f[k])
                if last:
                    f[name] = torch.stack(stacks.pop(name), 1)
        return {k: f[k] for k in self._outputs if k in f}

    @staticmethod
    def _raise_nonfinite(where: str, fields: dict[str, Tensor]) -> None:
        for k, v in fields.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                what = "nan" if bool(torch.isnan(v).any()) else "inf"
                if where == "the input":
                    raise NonFiniteError(f"the batch's input field `{k}` holds {what}")
                raise NonFiniteError(f"{where} wrote {what} into `{k}`")

    def _forward_forces(self, g: Graph, f: dict[str, Tensor]) -> dict[str, Tensor]:
        """Outputs plus ``F = −∂(Σ_graphs E)/∂x`` (graphs are independent, so row i of F is the
        force on node i from its own graph's energy).

        Autograd is switched on here even under ``torch.no_grad()`` (evaluation, ``verify``),
        and everything is detached again for such callers. The forces keep their own graph
        (``create_graph``) when the model is training or when the caller's positions require
        grad (to differentiate through the forces: force losses, Hessians, gradcheck)."""
        fp = self.plan.forces
        grad_on = torch.is_grad_enabled()
        with torch.enable_grad():
            pos = f[fp.positions]
            outer = pos.requires_grad and grad_on
            if not outer:
                pos = pos.detach().requires_grad_(True)
                f[fp.positions] = pos
            out = self._stack(g, f)
            energy = out[fp.energy]
            create = grad_on and (self.training or outer)
            grad = None
            if energy.requires_grad:
                grad = torch.autograd.grad(energy, pos, grad_outputs=torch.ones_like(energy), create_graph=create,
                                           retain_graph=grad_on, allow_unused=True)[0]
            forces = -grad if grad is not None else torch.zeros_like(pos)
            if self.check_finite:
                self._raise_nonfinite("the autograd forces (−∂E/∂positions)", {fp.output: forces})
        out[fp.output] = forces
        if not grad_on:
            out = {k: v.detach() for k, v in out.items()}
        return {k: out[k] for k in self._outputs}

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
            extra = describe_lowering(block)
            note = "; ".join(x for x in (note, "residual" if s.entry.residual else "", extra) if x)
            block_name = s.cls.name + (f" ({s.entry.label})" if s.entry.label else "")
            rows.append((str(i), s.where, block_name, f"{reads} -> {writes}", f"{n:,}", note))
        head = ("#", "layer", "block", "fields (reads -> writes)", "params", "notes")
        widths = [max(len(r[c]) for r in rows + [head]) for c in range(6)]
        def fmt(r):
            return "  ".join(x.ljust(w) if c != 4 else x.rjust(w) for c, (x, w) in enumerate(zip(r, widths))).rstrip()
        spec = plan.spec
        gs = spec.graph
        cap = (f"at most {gs.max_neighbors} nearest neighbours per node" if gs.max_neighbors is not None
               else "no neighbour cap")
        graph = gs.kind + (f"(cutoff={gs.cutoff}, {cap})" if gs.kind == "radius" else "") \
            + (f"(k={gs.k})" if gs.kind == "knn" else "") + (" + self-loops" if gs.self_loops else "")
        lines = [f"model `{spec.name or '?'}` from {spec.file}    graph: {graph}",
                 "inputs:  " + ", ".join(f"{k}: {v}" for k, v in plan.inputs.items()),
                 fmt(head), fmt(tuple("-" * w for w in widths))]
        lines += [fmt(r) for r in rows]
        lines.append("outputs: " + ", ".join(f"{k}: {v}" for k, v in plan.outputs.items()))
        if plan.forces is not None:
            fp = plan.forces
            lines.append(f"forces:  {fp.output} = −∂{fp.energy}/∂{fp.positions}, computed by autograd "
                         f"(conservative; create_graph while training, so force losses train the energy)")
        lines.append(f"total parameters: {total:,}")
        return "\n".join(lines)


def build(plan: Plan) -> GraphModel:
    return GraphModel(plan)


def _check_categorical(key: str, t: Categorical, v: Tensor) -> None:
    """Integer class indices in ``0..num_classes-1`` (the range only on CPU, where it costs no sync)."""
    if v.is_floating_point() or v.is_complex() or v.dtype == torch.bool:
        raise DataError(f"input field `{key}` holds {str(v.dtype).removeprefix('torch.')} values, but `{key}: {t}` "
                        f"is a class index per row; give integer labels (e.g. `.long()` of whole numbers)")
    if v.device.type == "cpu" and v.numel():
        lo, hi = int(v.min()), int(v.max())
        if lo < 0 or hi >= t.num_classes:
            bad = lo if lo < 0 else hi
            raise DataError(f"input field `{key}` holds class {bad}, outside 0..{t.num_classes - 1} of `{key}: {t}`; "
                            f"declare `categorical({max(hi + 1, t.num_classes)})` or fix the labels")


def _as_declared(v: Tensor, t: FieldType) -> Tensor:
    """``(N,)`` -> ``(N, 1)`` for a one-channel input (see :meth:`GraphModel.check_inputs`)."""
    return v.unsqueeze(-1) if v.dim() == 1 and t.shape() == (1,) else v


def compile_spec(source: Any, *, dtype: torch.dtype | None = None, trust: bool | None = None,
                 lowering: str | None = None) -> GraphModel:
    """Spec file path, mapping, :class:`Spec` or :class:`Plan` -> :class:`GraphModel`.

    ``trust=True`` lets the spec's ``import:`` run the modules it names (untrusted by default:
    such a spec raises :class:`SpecError`; see :mod:`graphdl.spec.loader`). ``lowering="dgl"``
    runs the blocks that have a DGL lowering on DGL (see :func:`plan_spec`); the parameters, and
    so state dicts and checkpoints, are the same under every lowering.
    """
    if trust is not None and not isinstance(source, (Plan, Spec)):
        from graphdl.spec.loader import trusted_imports

        with trusted_imports(trust):
            return compile_spec(source, dtype=dtype, lowering=lowering)
    if isinstance(source, Plan) and lowering is not None:
        raise SpecError("compile_spec(plan, lowering=...): a Plan's lowering is fixed; pass the spec, or "
                        "plan it with plan_spec(spec, lowering=...)")
    plan = source if isinstance(source, Plan) else plan_spec(source, lowering=lowering)
    if dtype is None or not dtype.is_floating_point:
        model = build(plan)
        return model if dtype is None else model.to(dtype)
    # build under the target default dtype: constants computed at construction (e3nn's
    # Clebsch-Gordan and normalisation factors) are then exact in it, not float32 values cast up
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype if dtype in (torch.float32, torch.float64) else previous)
    try:
        model = build(plan)
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype)
