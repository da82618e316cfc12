"""The exported JSON Schema accepts every shipped spec and flags typos, as an editor would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict

from graphdl.nn.base import BLOCKS
from graphdl.spec import model as spec_model
from graphdl.spec.loader import load_spec, parse_yaml
from graphdl.spec.schema import spec_schema

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted(p for d in ("specs", "examples") for p in (ROOT / d).rglob("*.yaml"))


@pytest.fixture(scope="module")
def loaded():
    """Every shipped spec, resolved (`extends`, references, imports run first so user blocks register)."""
    return {p: load_spec(str(p), trust=True).data for p in SPEC_FILES}  # the project's own specs and examples


@pytest.fixture(scope="module")
def validator(loaded):
    schema = spec_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _messages(err: jsonschema.ValidationError) -> list[str]:
    """Every message in an error's tree (oneOf branches included)."""
    out = [err.message]
    for sub in err.context or ():
        out += _messages(sub)
    return out


def test_schema_is_draft_2020_12_with_every_block(validator):
    schema = validator.schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    refs = [b["$ref"] for b in schema["$defs"]["layer"]["oneOf"]]
    # every registered block, then the `sequence` group (a layer kind of the compiler, not a block)
    assert refs == [f"#/$defs/block.{n}" for n in sorted(BLOCKS)] + ["#/$defs/block.sequence"]
    for n in BLOCKS:
        block = schema["$defs"][f"block.{n}"]
        assert block["properties"]["type"]["const"] == n
        assert {"repeat", "share_weights", "residual", "label"} <= set(block["properties"])
        assert block["additionalProperties"] is False
    assert set(spec_model.CORE_KEYS) | {"extends"} <= set(schema["properties"])


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_spec_validates(path, loaded, validator):
    errors = sorted(validator.iter_errors(loaded[path]), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors]


def test_raw_text_with_references_validates(validator):
    """Editors see `${...}` before substitution: the schema accepts a reference for any value."""
    raw = parse_yaml((ROOT / "specs" / "generic_gin.yaml").read_text()).data
    raw["model"]["layers"][0]["update"]["mlp"]["out_dim"] = "${inputs.node.h}"
    raw["model"]["layers"][1]["repeat"] = "${model.layers[0].repeat}"
    assert not list(validator.iter_errors(raw))
    strict = jsonschema.Draft202012Validator(spec_schema(references=False))
    assert any("'${inputs.node.h}' is not of type 'integer'" in m
               for e in strict.iter_errors(raw) for m in _messages(e))


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["model"]["layers"][0].__setitem__("hiden", [3]),
     "Additional properties are not allowed ('hiden' was unexpected)"),
    (lambda d: d["model"]["layers"][0]["update"]["mlp"].__setitem__("outdim", 3),
     "Additional properties are not allowed ('outdim' was unexpected)"),
    (lambda d: d.__setitem__("inptus", {}), "Additional properties are not allowed ('inptus' was unexpected)"),
    (lambda d: d["model"].__setitem__("layer", []), "Additional properties are not allowed ('layer' was unexpected)"),
    (lambda d: d["model"]["layers"][0].__setitem__("type", "lineer"), "'linear' was expected"),
    (lambda d: d["model"]["layers"][0].__setitem__("aggregate", "summ"), "'summ' is not one of"),
    (lambda d: d["model"]["layers"][0].__setitem__("repeat", 0), "0 is less than the minimum of 1"),
    (lambda d: d["inputs"].__setitem__("nodes.h", 3), "'nodes.h' does not match"),
    (lambda d: d.__setitem__("graphdl", 2), "1 was expected"),
])
def test_a_typo_fails_schema_validation(validator, mutate, expected):
    data = load_spec(str(ROOT / "specs" / "generic_gin.yaml")).data
    mutate(data)
    errors = list(validator.iter_errors(data))
    assert errors
    assert any(expected in m for e in errors for m in _messages(e)), [m for e in errors for m in _messages(e)]


def test_spec_without_extends_needs_graphdl_and_model(validator):
    assert any("'model' is a required property" in m for e in validator.iter_errors({"graphdl": 1})
               for m in _messages(e))
    assert not list(validator.iter_errors({"extends": "base.yaml", "name": "child"}))


def test_registered_sections_appear(monkeypatch):
    class Train(BaseModel):
        """Training loop settings."""

        model_config = ConfigDict(extra="forbid")
        epochs: int = 10
        lr: float = 1e-3

    monkeypatch.setitem(spec_model.SECTIONS, "zz_test_train", Train)
    schema = spec_schema()
    assert schema["properties"]["zz_test_train"]["description"] == "Training loop settings."
    v = jsonschema.Draft202012Validator(schema)
    base = {"graphdl": 1, "model": {"layers": [{"type": "relu"}]}}
    assert not list(v.iter_errors({**base, "zz_test_train": {"epochs": 3}}))
    assert list(v.iter_errors({**base, "zz_test_train": {"epochs": 3, "lr_": 1.0}}))


def test_sections_chosen_by_content(monkeypatch):
    """`resolve_model` sections: their `schema_models()` variants, or any mapping when they list none."""
    class Sgd(BaseModel):
        model_config = ConfigDict(extra="forbid")
        type: Literal["sgd"]
        lr: float

    class Adam(BaseModel):
        model_config = ConfigDict(extra="forbid")
        type: Literal["adam"]
        betas: list[float] = [0.9, 0.999]

    class Unlisted(BaseModel):
        @classmethod
        def resolve_model(cls, data, doc, path):
            return {"sgd": Sgd, "adam": Adam}[data["type"]]

    class Listed(Unlisted):
        @classmethod
        def schema_models(cls):
            return [Sgd, Adam]

    monkeypatch.setitem(spec_model.SECTIONS, "zz_listed", Listed)
    monkeypatch.setitem(spec_model.SECTIONS, "zz_unlisted", Unlisted)
    v = jsonschema.Draft202012Validator(spec_schema())
    base = {"graphdl": 1, "model": {"layers": [{"type": "relu"}]}}
    assert not list(v.iter_errors({**base, "zz_listed": {"type": "sgd", "lr": 0.1}}))
    assert not list(v.iter_errors({**base, "zz_listed": {"type": "adam"}}))
    assert list(v.iter_errors({**base, "zz_listed": {"type": "adam", "lr": 0.1}}))
    assert not list(v.iter_errors({**base, "zz_unlisted": {"type": "anything", "x": 1}}))
    assert list(v.iter_errors({**base, "zz_unlisted": 3}))


def test_schema_is_json_serialisable_and_stable():
    a = json.dumps(spec_schema(), sort_keys=True)
    b = json.dumps(spec_schema(), sort_keys=True)
    assert a == b
