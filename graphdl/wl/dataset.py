"""Dataset type ``wl_pairs``: a WL pair family (or a graph6 pair file) as a graphdl Dataset.

A dataset spec (``datasets/wl_*.yaml``)::

    graphdl: 1
    type: wl_pairs
    family: csl               # a built-in family (graphdl.wl.families.FAMILIES) ...
    # path: my_pairs.g6       # ... or a file of graph6 pairs (relative to the spec)
    params: {n: 41}           # the family's parameters (checked against its signature)
    seed: 0                   # for random families (and for `permute`)
    permute: false            # renumber every graph's nodes at random
    sha256: ...               # optional: checksum of the generated pairs (see `pairs_digest`)

The graphs alternate pair members (``graphs[2i]``, ``graphs[2i+1]`` are pair ``i``); every
graph has ``node.x``. ``meta`` holds ``family``, ``pairs`` (each pair's meta dict), ``names``,
``expected`` (``{test: [verdict per pair]}`` for ``wl1``, ``wl3`` and whatever else the family
records) and ``sha256``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from typing import Any

import networkx as nx
import numpy as np
from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from graphdl.data.registry import Dataset, DatasetParams, DatasetType, register_dataset
from graphdl.errors import DataError, did_you_mean
from graphdl.types import Scalar
from graphdl.wl._convert import graph_to_networkx
from graphdl.wl.families import FAMILIES, PairCase, load_pairs, permute_nodes


class WLPairsParams(DatasetParams):
    """``family`` (a built-in pair family) or ``path`` (a graph6 pair file); ``params``: the
    family's parameters; ``seed``; ``permute``: renumber nodes at random; ``sha256``: expected
    checksum of the pairs."""

    type: str = "wl_pairs"
    family: str | None = None
    path: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    permute: bool = False
    sha256: str | None = None

    @field_validator("family")
    @classmethod
    def _known_family(cls, v):
        if v is not None and v not in FAMILIES:
            raise ValueError(f"unknown pair family `{v}`{did_you_mean(v, FAMILIES)}")
        return v

    @field_validator("params")
    @classmethod
    def _family_params(cls, v, info):
        family = info.data.get("family")
        if family is None or family not in FAMILIES:
            if v and info.data.get("path") is not None:
                raise ValueError("a pair file takes no `params`")
            return v
        sig = inspect.signature(FAMILIES[family])
        allowed = [n for n in sig.parameters if n != "seed"]
        out = {}
        for key, value in v.items():
            if key not in allowed:
                if key == "seed":
                    raise ValueError("give `seed` at the top level of the dataset spec, not in `params`")
                raise ValueError(f"family `{family}` has no parameter `{key}`{did_you_mean(key, allowed)}")
            ann = sig.parameters[key].annotation
            try:
                out[key] = TypeAdapter(ann).validate_python(value) if ann is not inspect.Parameter.empty else value
            except ValidationError as e:
                raise ValueError(f"`{key}`: {e.errors()[0]['msg']}") from None
        return out

    @model_validator(mode="after")
    def _one_source(self):
        if (self.family is None) == (self.path is None):
            raise ValueError("give exactly one of `family` (a built-in pair family: "
                             f"{', '.join(sorted(FAMILIES))}) or `path` (a file of graph6 pairs)")
        return self


def pairs_digest(pairs: list[PairCase]) -> str:
    """sha256 of the pairs: graph6 of both graphs, their ``node.x`` and the expected verdicts."""
    h = hashlib.sha256()
    for case in pairs:
        for g in (case.g1, case.g2):
            h.update(nx.to_graph6_bytes(graph_to_networkx(g), header=False).strip())
            h.update(b"|")
            if "node.x" in g.fields:
                h.update(np.ascontiguousarray(g.fields["node.x"].detach().cpu().numpy(), dtype=np.float32).tobytes())
            h.update(b"|")
        h.update(json.dumps(case.meta.get("expected", {}), sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


@register_dataset("wl_pairs")
class WLPairs(DatasetType):
    """WL expressiveness pairs: graphs alternate pair members; meta has the expected verdicts."""

    Params = WLPairsParams

    @classmethod
    def load(cls, params: WLPairsParams, *, cache_dir: str | None = None, base_dir: str = ".") -> Dataset:
        if params.family is not None:
            fn = FAMILIES[params.family]
            kwargs = dict(params.params)
            if "seed" in inspect.signature(fn).parameters:
                kwargs["seed"] = params.seed
            pairs = load_pairs(params.family, **kwargs)
            source = params.family
        else:
            path = params.path if os.path.isabs(params.path) else os.path.join(base_dir, params.path)
            pairs = load_pairs(path)
            source = os.path.abspath(path)
        if params.permute:
            rng = np.random.default_rng(params.seed)
            pairs = [PairCase(permute_nodes(c.g1, rng), permute_nodes(c.g2, rng), c.meta) for c in pairs]
        digest = pairs_digest(pairs)
        if params.sha256 is not None and params.sha256 != digest:
            raise DataError(
                f"wl_pairs `{params.name or source}`: the generated pairs have sha256 {digest}, the spec "
                f"records {params.sha256}; the generator or its parameters changed — check the pairs and "
                f"update `sha256`"
            )
        graphs = [g for c in pairs for g in (c.g1, c.g2)]
        width = graphs[0].fields["node.x"].shape[1]
        tests = sorted({k for c in pairs for k in c.meta.get("expected", {})})
        meta = {
            "family": params.family,
            "source": source,
            "pairs": [c.meta for c in pairs],
            "names": [c.meta["name"] for c in pairs],
            "expected": {t: [c.meta.get("expected", {}).get(t) for c in pairs] for t in tests},
            "sha256": digest,
        }
        return Dataset(graphs=graphs, fields={"node.x": Scalar(int(width))}, targets=[], meta=meta)


def dataset_pairs(ds: Dataset) -> list[PairCase]:
    """The pairs of a ``wl_pairs`` dataset (graphs ``2i`` and ``2i+1`` with ``meta["pairs"][i]``)."""
    if len(ds.graphs) % 2 or "pairs" not in ds.meta:
        raise DataError("not a wl_pairs dataset: expected an even number of graphs and meta['pairs']")
    return [PairCase(ds.graphs[2 * i], ds.graphs[2 * i + 1], m) for i, m in enumerate(ds.meta["pairs"])]
