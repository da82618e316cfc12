"""JSON Schema (draft 2020-12) of the spec format, for editors and for checking specs with other tools.

The schema is generated from the live registries, so it knows every block a running
graphdl knows (built-in ones and those of modules imported before the export): each layer
entry is a ``oneOf`` of the registered blocks, told apart by their ``type`` (a ``const``),
each with its parameter model's schema plus the step keys (``repeat``, ``share_weights``,
``residual``, ``label``). Top-level keys, ``inputs``, ``graph`` and every registered section
(:data:`graphdl.spec.model.SECTIONS`) are described too, and unknown keys are refused
(``additionalProperties: false``), so a typo is flagged in the editor. A section whose model
depends on its content (it defines ``resolve_model``) lists its concrete models with a
classmethod ``schema_models()``; without one, any mapping is accepted there.

A value may always be a whole ``${path.to.value}`` reference (the loader substitutes it), so
the schema accepts such a string wherever it expects something else.

Use it with the YAML language server (VS Code's YAML extension, neovim, ...): write the
schema once with ``graphdl schema -o graphdl.schema.json`` and start a spec with::

    # yaml-language-server: $schema=../graphdl.schema.json
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from graphdl.nn.base import BLOCKS, load_builtin_blocks
from graphdl.spec.model import CORE_KEYS, SECTIONS, SPEC_VERSION, GraphSpec, _load_sections

DRAFT = "https://json-schema.org/draft/2020-12/schema"
REFERENCE = {
    "type": "string",
    "pattern": r"^\s*\$\{[^{}]+\}\s*$",
    "description": "a `${path.to.value}` reference to another value of the spec",
}
STEP_PROPERTIES = {
    "repeat": {"type": "integer", "minimum": 1, "default": 1,
               "description": "apply the block N times in a row (unshared weights unless `share_weights`)"},
    "share_weights": {"type": "boolean", "default": False,
                      "description": "with `repeat: N`, one set of weights for all N applications"},
    "residual": {"type": "boolean", "default": False,
                 "description": "add each written field's input value to the block's output (same type needed)"},
    "label": {"type": "string", "description": "a name for this layer in `graphdl describe`"},
    "trace": {"type": "object", "additionalProperties": {"type": "string"},
              "description": "record a field after every repeat into a new field stacking them along dim 1, "
                             "e.g. `{node.frame: node.frames}`"},
}
_NO_REFS = {"type", "op"}  # discriminators stay literal so editors can pick the right branch


def _strip_titles(node: Any) -> Any:
    """pydantic titles every field (``"Out Dim"``); editors show descriptions better without them."""
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def _allow_refs(node: Any) -> Any:
    """Let every property value and list item also be a whole ``${...}`` reference."""
    if isinstance(node, list):
        return [_allow_refs(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _allow_refs(v) for k, v in node.items()}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: (v if k in _NO_REFS else _or_ref(v)) for k, v in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _or_ref(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _or_ref(out["additionalProperties"])
    return out


def _free_text(schema: dict) -> bool:
    if schema.get("type") == "string" and not ({"enum", "const", "pattern"} & set(schema)):
        return True
    return any(_free_text(b) for b in schema.get("anyOf", []) if isinstance(b, dict))


def _or_ref(schema: dict) -> dict:
    if schema == {"$ref": "#/$defs/reference"} or _free_text(schema):
        return schema  # free text already admits a reference
    keep = {k: schema[k] for k in ("description", "default") if k in schema}
    inner = {k: v for k, v in schema.items() if k not in ("description", "default")}
    branches = inner["anyOf"] if list(inner) == ["anyOf"] else [inner]
    return {"anyOf": [*branches, {"$ref": "#/$defs/reference"}], **keep}


def _doc(cls) -> str:
    text = (cls.__doc__ or "").strip()
    return " ".join(text.split("\n\n")[0].split()) if text else ""


def spec_schema(*, references: bool = True) -> dict:
    """The JSON Schema (draft 2020-12) of a model spec, with every registered block and section.

    Args:
        references: accept a whole ``${...}`` reference string for any value (the loader's
            substitution happens before validation; editors see raw text).
    """
    load_builtin_blocks()
    _load_sections()
    names = sorted(BLOCKS)
    models: list[tuple[type[BaseModel], str]] = [(BLOCKS[n].Params, "validation") for n in names]
    sections = sorted(SECTIONS)
    models += [(SECTIONS[s], "validation") for s in sections]
    models.append((GraphSpec, "validation"))
    keymap, top = models_json_schema(models, ref_template="#/$defs/{model}")
    defs: dict = _strip_titles(top.get("$defs", {}))

    def resolved(model) -> dict:
        ref = keymap[(model, "validation")]["$ref"].split("/")[-1]
        return copy.deepcopy(defs[ref])

    layer_refs = []
    for n in names:
        cls = BLOCKS[n]
        s = resolved(cls.Params)
        props = s.setdefault("properties", {})
        props["type"] = {"const": n, "description": _doc(cls)}
        for k, v in STEP_PROPERTIES.items():
            props.setdefault(k, v)
        s["required"] = sorted(set(s.get("required", [])) | {"type"})
        s["additionalProperties"] = False
        s["title"] = f"block `{n}`"
        s["description"] = _doc(cls)
        defs[f"block.{n}"] = s
        layer_refs.append({"$ref": f"#/$defs/block.{n}"})
    seq = {"type": "object", "additionalProperties": False, "required": ["type", "layers"],
           "title": "`sequence`", "description": "a group of layers applied in order; `repeat`, `share_weights` "
                                                 "and `trace` apply to the whole group",
           "properties": {"type": {"const": "sequence", "description": "a group of layers repeated as one"},
                          "layers": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/layer"}},
                          **{k: v for k, v in STEP_PROPERTIES.items() if k != "residual"}}}
    defs["block.sequence"] = seq
    layer_refs.append({"$ref": "#/$defs/block.sequence"})
    defs["layer"] = {
        "description": "one block of the stack: `type:` names a registered block, the other keys are its "
                       "parameters and the step keys repeat / share_weights / residual / label",
        "type": "object",
        "required": ["type"],
        "oneOf": layer_refs,
    }
    graph = resolved(GraphSpec)
    section_props = {}
    for name in sections:
        model = SECTIONS[name]
        variants = getattr(model, "schema_models", None)
        if variants is not None:  # a section whose model depends on its content lists the variants
            extra = models_json_schema([(m, "validation") for m in variants()], ref_template="#/$defs/{model}")
            defs.update(_strip_titles(extra[1].get("$defs", {})))
            section_props[name] = {"anyOf": [extra[0][(m, "validation")] for m in variants()]}
        elif hasattr(model, "resolve_model"):
            # the concrete model is picked from the content at load time and its variants are not
            # listed (no `schema_models()`): accept any mapping rather than refuse valid specs
            section_props[name] = {"type": "object"}
        else:
            section_props[name] = resolved(model)
        section_props[name].setdefault("description", _doc(model))
    properties = {
        "graphdl": {"const": SPEC_VERSION, "description": "spec format version"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "import": {"description": "user modules (names or .py paths relative to the spec) that register blocks",
                   "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "extends": {"description": "base spec(s), relative to this file, merged under this one",
                    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "inputs": {
            "description": "fields a batch brings, `space.name: type` (e.g. `node.h: 16`, `node.pos: 1o`)",
            "type": "object",
            "propertyNames": {"pattern": r"^(node|edge|graph)\.[^\s.][^\s]*$"},
            "additionalProperties": {"$ref": "#/$defs/field_type"},
        },
        "graph": graph,
        "model": {
            "type": "object",
            "additionalProperties": False,
            "required": ["layers"],
            "properties": {
                "layers": {"type": "array", "items": {"$ref": "#/$defs/layer"}},
                "outputs": {"type": "array",
                            "items": {"type": "string", "pattern": r"^(node|edge|graph)\.[^\s.][^\s]*$"}},
                "forces": {
                    "description": "forces = −∂energy/∂positions by autograd: `autograd`, or "
                                   "{type: autograd, energy, positions, output}",
                    "anyOf": [{"const": "autograd"},
                              {"type": "object", "additionalProperties": False,
                               "properties": {"type": {"const": "autograd"},
                                              "energy": {"type": "string"},
                                              "positions": {"type": "string"},
                                              "output": {"type": "string"}}}]},
            },
        },
        **section_props,
    }
    defs["field_type"] = {
        "description": "a positive dim (`64`), irreps (`1o`, `16x0e + 8x1o`), `vector`, `frame`, "
                       "`categorical(9)` (class indices) or `trajectory(6, 2)` (frames x dim)",
        "anyOf": [{"type": "integer", "minimum": 1},
                  {"type": "string", "pattern": r"^\s*(\d+|frame|vector|pos|position|"
                                                r"categorical\s*\(\s*\d+\s*\)|trajectory\s*\(\s*\d+\s*,\s*\d+\s*\)|"
                                                r"(\d+\s*x\s*)?\d+[eo](\s*\+\s*(\d+\s*x\s*)?\d+[eo])*)"
                                                r"(\s*\[\s*\d+\s*\])?\s*$"}],
    }
    schema: dict = {
        "$schema": DRAFT,
        "$id": "https://graphdl.dev/schema/spec-v1.json",
        "title": "graphdl spec",
        "description": "A graphdl model spec (`graphdl: 1`): inputs, graph, model.layers and sections.",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        # a spec that extends another may leave both to its base
        "if": {"not": {"required": ["extends"]}},
        "then": {"required": ["graphdl", "model"]},
        "$defs": defs,
    }
    assert set(CORE_KEYS) <= set(properties)
    if references:
        schema = _allow_refs(schema)
        schema["$defs"]["reference"] = REFERENCE
    return schema


def dump_schema(**kw) -> str:
    return json.dumps(spec_schema(**kw), indent=2, sort_keys=False) + "\n"


__all__ = ["dump_schema", "spec_schema"]
