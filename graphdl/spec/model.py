"""Validated spec: the top-level sections, typed.

Top-level keys of a model spec::

    graphdl: 1                 # spec format version (required)
    name: gcn-cora             # optional
    description: ...           # optional
    import: [my_blocks.py]     # user modules that register blocks (optional)
    extends: base.yaml         # merged by the loader (optional)
    inputs:                    # the fields a batch brings, with types
      node.h: 16
      edge.e: 4
    graph:                     # how the message-passing graph is made (default: given)
      kind: given              # given | complete | radius | knn
    model:
      layers: [...]            # blocks, each `type: <registered block>` + its parameters,
                               # or `type: sequence` + `layers: [...]`: a group repeated as one
      outputs: [graph.y]       # fields the model returns (default: what the last layer writes)
      forces: autograd         # optional: also return node.forces = −∂E/∂pos (see ForcesSpec)

Other sections (``task``, ``dataset``, ``train``, ...) are registered by the packages that
use them (:func:`register_section`), each with its own pydantic model.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt, ValidationError

from graphdl.errors import did_you_mean
from graphdl.spec.loader import Path, SpecDoc, format_path, load_spec, load_spec_text
from graphdl.types import FieldTable, parse_type, split_key

SPEC_VERSION = 1
STEP_KEYS = ("repeat", "share_weights", "residual", "label", "trace")
"""Keys every layer entry accepts besides its block's parameters."""
SEQUENCE = "sequence"
"""The layer type of a group of layers (``type: sequence`` with ``layers: [...]``), repeated as one."""


class GraphSpec(BaseModel):
    """How edges are made for message passing.

    ``given``: the dataset's edges. ``complete``: every ordered pair of distinct nodes of a
    graph. ``radius``: pairs closer than ``cutoff`` (at most ``max_neighbors`` nearest per
    node). ``knn``: each node's ``k`` nearest neighbours. ``positions`` names the field the
    geometric builders read. ``self_loops`` adds one loop per node.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["given", "complete", "radius", "knn"] = "given"
    positions: str = "node.pos"
    cutoff: PositiveFloat | None = None
    max_neighbors: PositiveInt | None = None
    k: PositiveInt | None = None
    self_loops: bool = False


class ForcesSpec(BaseModel):
    """``model.forces``: forces as the negative gradient of an energy output, by autograd.

    ``F_i = −∂E/∂x_i`` with ``E`` a graph-level scalar output (one channel) and ``x`` a ``1o``
    position input; the model returns ``F`` (``1o``, one row per node) beside its outputs.
    Conservative by construction (SchNet, NequIP and MACE compute forces this way).
    Short form ``forces: autograd``: ``energy`` is the only graph-level scalar output of width
    1, ``positions`` is ``graph.positions`` (else the only ``1o`` node input), ``output`` is
    ``node.forces``. Long form: ``forces: {type: autograd, energy: graph.energy,
    positions: node.pos, output: node.forces}`` (each key optional).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["autograd"] = "autograd"
    energy: str | None = None
    positions: str | None = None
    output: str = "node.forces"


class ModelSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layers: list[Any]
    outputs: list[str] | None = None
    forces: Literal["autograd"] | ForcesSpec | None = None


SECTIONS: dict[str, type[BaseModel]] = {}
_SECTION_MODULES = ("graphdl.train.sections", "graphdl.wl.sections", "graphdl.geometric.sections")


def register_section(name: str, model: type[BaseModel]) -> None:
    """Register a top-level spec section validated by ``model``."""
    SECTIONS[name] = model


def _load_sections() -> None:
    for mod in _SECTION_MODULES:
        if importlib.util.find_spec(mod.rsplit(".", 1)[0]) is not None:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name != mod:
                    raise


CORE_KEYS = ("graphdl", "name", "description", "import", "inputs", "graph", "model")


@dataclass
class LayerEntry:
    """One layer of the stack as written: its block params (unvalidated) and step options.

    A ``type: sequence`` entry is a group: ``children`` holds its layers (``raw`` is then just
    ``{"type": "sequence"}``), and ``repeat`` / ``share_weights`` / ``trace`` apply to the
    whole group (AF2's structure module: IPA → dropout → layer norm → transition → backbone
    update, eight times with one set of weights). ``trace`` maps a field to a new field that
    stacks its value after every repeat along dim 1 (type ``Stacked``, e.g. ``frame[8]``).
    """

    index: int
    raw: dict
    path: Path
    repeat: int = 1
    share_weights: bool = False
    residual: bool = False
    label: str | None = None
    trace: dict[str, str] = field(default_factory=dict)
    children: list["LayerEntry"] | None = None

    @property
    def is_sequence(self) -> bool:
        return self.children is not None


@dataclass
class Spec:
    """A spec after loading and top-level validation (blocks are checked by the compiler)."""

    doc: SpecDoc
    name: str | None
    inputs: FieldTable
    graph: GraphSpec
    layers: list[LayerEntry]
    outputs: list[str] | None
    sections: dict[str, BaseModel] = field(default_factory=dict)
    description: str | None = None
    forces: ForcesSpec | None = None
    """``model.forces`` (the short form ``autograd`` as ``ForcesSpec()``), or None."""

    @property
    def file(self) -> str:
        return self.doc.file


# ---------------------------------------------------------------------- validation
def _models_in(ann: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Union, Optional, Annotated, list)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    out: list = []
    for a in get_args(ann):
        out += [m for m in _models_in(a) if m not in out]
    return out


def _models_at(model: type[BaseModel], loc: tuple) -> list[type[BaseModel]]:
    """The candidate models at ``loc`` (pydantic's error location, union tags included)."""
    cands: list = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        owners = [m for m in cands if _field(m, part) is not None]
        if owners:
            nxt: list = []
            for m in owners:
                nxt += [x for x in _models_in(_field(m, part).annotation) if x not in nxt]
            cands = nxt
            continue
        # a union tag (``linear``): keep the members whose discriminator admits it
        tagged = [m for m in cands if any(part in get_args(f.annotation) for f in m.model_fields.values())]
        if tagged:
            cands = tagged
        # anything else (``tagged-union[...]``, ``literal[...]``) names no data level
    return cands


def _field(model: type[BaseModel], key: Any):
    for name, f in model.model_fields.items():
        if key == (f.alias or name):
            return f
    return None


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    cands = _models_at(model, loc)
    return cands[0] if len(cands) == 1 else None


_MISMATCH = {"literal_error", "model_attributes_type", "model_type", "dict_type", "string_type", "bool_type",
             "int_type", "float_type", "list_type", "none_required", "is_instance_of", "bool_parsing",
             "int_parsing", "float_parsing"}


def _pick_error(errs: list[dict], data: Any) -> tuple[dict, tuple]:
    """The error to report: within the first offending key, the one that reaches deepest into
    the data (a union reports one error per member; the member that matched furthest is the
    one the user meant), preferring an unknown key (a typo) and a failed tag over a mismatch."""
    def real_loc(err) -> tuple:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        real: list = []
        cur = data
        for p in loc:
            if isinstance(cur, dict) and p in cur:
                real.append(p)
                cur = cur[p]
            elif isinstance(cur, list) and isinstance(p, int) and p < len(cur):
                real.append(p)
                cur = cur[p]
            elif err["type"] in ("extra_forbidden", "missing") and p == loc[-1]:
                real.append(p)
        return tuple(real)

    # an unknown key is usually a typo of the key another error says is missing: report it first
    lead = next((e for e in errs if e["type"] == "extra_forbidden"), errs[0])
    first = real_loc(lead)[:1]
    group = [(e, real_loc(e)) for e in errs if real_loc(e)[:1] == first]

    def score(item):
        e, real = item
        kind = e["type"]
        rank = 3 if kind == "extra_forbidden" else 2 if kind.startswith("union_tag") else 0 if kind in _MISMATCH else 1
        return (len(real), rank)

    best = max(group, key=score)  # max keeps the first of equals
    return best


def _describe_input(v: Any) -> str:
    if isinstance(v, str):
        return f"`{v if len(v) <= 80 else v[:77] + '...'}` (text)"
    if isinstance(v, bool):
        return f"`{str(v).lower()}` (boolean)"
    if isinstance(v, (int, float)):
        return f"`{v}`"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "nothing (null)"
    return f"`{v}`"


def validate_model(model: type[BaseModel], data: Any, doc: SpecDoc, path: Path, what: str = "") -> BaseModel:
    """``model.model_validate(data)``, turning the first error into a one-line SpecError."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errs = e.errors()
        err, real = _pick_error(errs, data)
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        full = tuple(path) + tuple(real)
        kind = err["type"]
        others = {_pick_error([x], data)[1][:1] for x in errs} - {real[:1]}
        more = f" (and {len(others)} more problem{'s' if len(others) > 1 else ''})" if others else ""
        if kind == "extra_forbidden":
            key = real[-1] if real else loc[-1]
            subs = _models_at(model, loc[:-1])
            allowed = sorted({f.alias or n for m in subs for n, f in m.model_fields.items()} - {"type"})
            hint = did_you_mean(str(key), allowed) if allowed else ""
            meant = re.findall(r"did you mean `([^`]*)`", hint)
            if meant:  # the missing key it is a typo of is the same problem
                others -= {_pick_error([x], data)[1][:1] for x in errs
                           if x["type"] == "missing" and x["loc"][-1] == meant[0]}
                more = f" (and {len(others)} more problem{'s' if len(others) > 1 else ''})" if others else ""
            raise doc.error(full, f"unknown key `{key}`{' in ' + what if what else ''}{hint}{more}", key=True) from None
        if kind == "missing":
            raise doc.error(full[:-1], f"missing required key `{loc[-1]}`{' for ' + what if what else ''}{more}") from None
        ctx = err.get("ctx") or {}
        if kind == "union_tag_invalid":
            tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
            disc = str(ctx.get("discriminator", "")).strip("'")
            raise doc.error(full + ((disc,) if disc else ()),
                            f"unknown {disc or 'kind'} `{ctx.get('tag')}`{did_you_mean(str(ctx.get('tag')), tags)}"
                            f"{more}") from None
        if kind == "union_tag_not_found":
            disc = str(ctx.get("discriminator", "")).strip("'")
            tags = [t for x in errs if x["type"] == "literal_error" and _pick_error([x], data)[1] == real
                    for t in re.findall(r"'([^']*)'", str((x.get("ctx") or {}).get("expected", "")))]
            choices = f" (one of {', '.join(f'`{t}`' for t in tags)})" if tags else ""
            raise doc.error(full, f"missing key `{disc}`{choices} saying which kind this is{more}") from None
        msg = err["msg"]
        if msg.startswith("Input should be "):
            msg = "expected " + msg[len("Input should be "):]
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
            raise doc.error(full, msg + more) from None
        hint = ""
        if kind == "literal_error" and isinstance(err.get("input"), str):
            hint = did_you_mean(err["input"], re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
            hint = hint if hint.startswith("; did you mean") else ""
        raise doc.error(full, f"{msg}, found {_describe_input(err.get('input'))}{hint}{more}") from None


def _require_mapping(doc: SpecDoc, path: Path, value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise doc.error(path, f"`{format_path(path)}` must be a mapping ({what}), found {_describe_input(value)}")
    return value


def _parse_layer(doc: SpecDoc, entry: Any, path: Path, index: int) -> LayerEntry:
    """One entry of ``model.layers`` (recursively for ``type: sequence`` groups)."""
    if not isinstance(entry, dict):
        raise doc.error(path, f"each layer must be a mapping with a `type:`, found {_describe_input(entry)}")
    if "type" not in entry:
        raise doc.error(path, "layer has no `type:`; name a block, e.g. `type: gcn`")
    raw = {k: v for k, v in entry.items() if k not in STEP_KEYS}
    le = LayerEntry(index, raw, path)
    if "repeat" in entry:
        r = entry["repeat"]
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise doc.error(path + ("repeat",), f"`repeat` must be a positive integer, found {_describe_input(r)}")
        le.repeat = r
    for flag in ("share_weights", "residual"):
        if flag in entry:
            if not isinstance(entry[flag], bool):
                raise doc.error(path + (flag,), f"`{flag}` must be true or false, found {_describe_input(entry[flag])}")
            setattr(le, flag, entry[flag])
    if "label" in entry:
        if not isinstance(entry["label"], str):
            raise doc.error(path + ("label",), f"`label` must be text, found {_describe_input(entry['label'])}")
        le.label = entry["label"]
    if "trace" in entry:
        tr = entry["trace"]
        if not isinstance(tr, dict) or not tr:
            raise doc.error(path + ("trace",), f"`trace` must map a field to the field stacking its value after every "
                                               f"repeat, e.g. `trace: {{node.frame: node.frames}}`, found "
                                               f"{_describe_input(tr)}")
        for k, v in tr.items():
            for key in (k, v):
                try:
                    split_key(key)
                except ValueError as e:
                    raise doc.error(path + ("trace", k), str(e), key=key == k) from None
            if split_key(k)[0] != split_key(v)[0]:
                raise doc.error(path + ("trace", k), f"`trace` stacks `{k}` into a field of the same space; "
                                                     f"`{v}` is not a {split_key(k)[0]} field")
        le.trace = {str(k): str(v) for k, v in tr.items()}
    if le.share_weights and le.repeat == 1:
        raise doc.error(path + ("share_weights",), "`share_weights: true` only means something with `repeat: N` (N > 1)")
    if raw["type"] == SEQUENCE:
        extra = sorted(set(raw) - {"type", "layers"})
        if extra:
            raise doc.error(path + (extra[0],), f"unknown key `{extra[0]}` in a `sequence` (it takes `layers:` and the "
                                                f"step keys {', '.join(f'`{k}`' for k in STEP_KEYS)})", key=True)
        if le.residual:
            raise doc.error(path + ("residual",), "`residual` is not defined for a `sequence`; put `residual: true` on "
                                                  "the layers inside it")
        subs = raw.get("layers")
        if not isinstance(subs, list) or not subs:
            raise doc.error(path + (("layers",) if "layers" in raw else ()),
                            "a `sequence` needs `layers:`, a non-empty list of layers repeated as one group")
        le.children = [_parse_layer(doc, e, path + ("layers", j), j) for j, e in enumerate(subs)]
        le.raw = {"type": SEQUENCE}
    return le


def parse_spec(source: Any, *, trust: bool | None = None) -> Spec:
    """Load (file path, mapping or :class:`SpecDoc`) and validate the top level of a spec.

    ``trust`` as :func:`graphdl.spec.loader.load_spec` (whether ``import:`` may run code).
    """
    doc = source if isinstance(source, SpecDoc) else load_spec(source, trust=trust)
    data = _require_mapping(doc, (), doc.data, "key: value lines")
    _load_sections()
    if "graphdl" not in data:
        raise doc.error((), "missing `graphdl: 1` at the top of the spec (the spec format version)")
    if data["graphdl"] != SPEC_VERSION or isinstance(data["graphdl"], bool):
        raise doc.error(("graphdl",), f"unsupported spec version `{data['graphdl']}`; this graphdl reads "
                                      f"`graphdl: {SPEC_VERSION}`")
    for key in data:
        if key not in CORE_KEYS and key not in SECTIONS:
            raise doc.error((key,), f"unknown top-level key `{key}`"
                                    f"{did_you_mean(str(key), list(CORE_KEYS) + list(SECTIONS))}", key=True)
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise doc.error((key,), f"`{key}` must be text, found {_describe_input(data[key])}")

    inputs = FieldTable()
    raw_inputs = _require_mapping(doc, ("inputs",), data.get("inputs", {}),
                                  "field: type, e.g. `node.h: 16`")
    for k, v in raw_inputs.items():
        try:
            split_key(k)
        except ValueError as e:
            raise doc.error(("inputs", k), str(e), key=True) from None
        try:
            inputs[k] = parse_type(v)
        except ValueError as e:
            raise doc.error(("inputs", k), str(e)) from None

    graph = validate_model(GraphSpec, data.get("graph", {}) or {}, doc, ("graph",), "graph")
    assert isinstance(graph, GraphSpec)
    if graph.kind == "radius" and graph.cutoff is None:
        raise doc.error(("graph",), "graph kind `radius` needs `cutoff:` (a distance, e.g. 5.0)")
    if graph.kind == "knn" and graph.k is None:
        raise doc.error(("graph",), "graph kind `knn` needs `k:` (neighbours per node, e.g. 16)")
    if graph.kind in ("radius", "knn") and graph.positions not in inputs:
        raise doc.error(("graph", "positions"), f"graph kind `{graph.kind}` reads positions from "
                                                f"`{graph.positions}`, which is not declared under `inputs:`")

    if "model" not in data:
        raise doc.error((), "missing `model:` section (with `layers:`)")
    model = validate_model(ModelSection, data["model"], doc, ("model",), "model")
    layers = [_parse_layer(doc, entry, ("model", "layers", i), i) for i, entry in enumerate(model.layers)]
    if model.outputs is not None:
        for j, o in enumerate(model.outputs):
            try:
                split_key(o)
            except ValueError as e:
                raise doc.error(("model", "outputs", j), str(e)) from None
    forces = ForcesSpec() if model.forces == "autograd" else model.forces
    if forces is not None:
        for key in ("energy", "positions", "output"):
            value = getattr(forces, key)
            if value is not None:
                try:
                    split_key(value)
                except ValueError as e:
                    raise doc.error(("model", "forces", key), str(e)) from None

    sections = {}
    for key, sec_model in SECTIONS.items():
        if key in data:
            # a section whose schema depends on its content (e.g. on its `type:`) names the
            # concrete model through `resolve_model(data, doc, path)`
            resolve = getattr(sec_model, "resolve_model", None)
            model_cls = resolve(data[key], doc, (key,)) if resolve is not None else sec_model
            sections[key] = validate_model(model_cls, data[key], doc, (key,), key)
    return Spec(doc, data.get("name"), inputs, graph, layers, model.outputs, sections, data.get("description"),
                forces)


def parse_spec_text(text: str, file: str = "<string>") -> Spec:
    return parse_spec(load_spec_text(text, file))
