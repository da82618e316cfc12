"""``dc_sbm``: one large graph with a known answer, from a degree-corrected stochastic block model.

The node classification benchmark of graphdl's neighbour sampling: a graph of any size
(a million nodes and ten million edges in ``datasets/sbm_1m.yaml``) whose labels are known
by construction, generated here and cached, never downloaded.

Model (Karrer & Newman, "Stochastic blockmodels and community structure in networks",
Phys. Rev. E 83, 016107, 2011), with fixed block sizes and a mixing share:

* node ``i`` belongs to block ``b_i``, drawn uniformly from ``num_blocks`` blocks;
* its degree propensity ``θ_i`` is Pareto with tail exponent ``degree_exponent`` (minimum 1,
  capped at ``max_theta``), so degrees are heavy-tailed as in citation and social graphs;
* each of ``num_edges / 2`` undirected edges picks its first end ``u`` with probability
  ``∝ θ_u``; its second end lies in ``u``'s block with probability ``p_in`` and otherwise in one
  of the other blocks chosen uniformly, and within that block is drawn ``∝ θ``. Self-loops are
  dropped, each edge is stored in both directions, and repeated edges once (so the final count
  is a little below ``num_edges``);
* features ``x_i = μ_{b_i} + noise · ε_i`` with block centroids ``μ_b ~ N(0, I_d)`` and
  ``ε_i ~ N(0, I_d)``: from its features alone a node's block is uncertain, and a model that
  averages over neighbours (most of them in the same block) sees it much more clearly;
* the class of a node is its block: ``node.y`` holds ``b_i`` (one column; use
  ``classification`` with ``num_classes: num_blocks``).

Fields: ``node.feat`` (``features`` channels, float32), ``node.y`` (block id as a float, one
column), ``node.degree`` (in-degree, for analysis; not a sensible input). Every random number
comes from one ``numpy.random.Generator`` seeded by ``seed``; the arrays are cached in
``$GRAPHDL_CACHE/dc_sbm/`` (an ``.npz`` named after the parameters) and their content
checksum (:func:`graphdl.data.cache.sha256_arrays`) is checked against the spec's ``sha256``.
Generation is vectorised (no loop over nodes or edges) and chunked over edges, so memory stays
a few arrays of ``num_edges`` integers.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import numpy as np
import torch
from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from graphdl.data.cache import cache_root, check_sha256, load_npz, params_key, save_npz, sha256_arrays
from graphdl.data.graph import Graph
from graphdl.data.registry import Dataset, DatasetParams, DatasetType, register_dataset
from graphdl.types import Scalar

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
"""Bumped whenever the generator changes its numbers (it names the cache file)."""

_CHUNK = 1 << 22  # edges drawn per chunk: bounds the generator's scratch memory


class DCSBMParams(DatasetParams):
    """Parameters of ``type: dc_sbm`` (see the module docstring)."""

    type: Literal["dc_sbm"] = "dc_sbm"
    num_nodes: PositiveInt = 100_000
    num_edges: PositiveInt = 1_000_000
    """Directed edges asked for (both directions of ``num_edges / 2`` undirected draws)."""
    num_blocks: int = Field(16, ge=2)
    p_in: float = Field(0.7, ge=0.0, le=1.0)
    """Share of edges inside a block (homophily)."""
    degree_exponent: float = Field(2.5, gt=1.0)
    """Tail exponent ``α`` of the Pareto degree propensities ``θ`` (``P(θ > t) = t^{1-α}``)."""
    max_theta: PositiveFloat = 1000.0
    features: PositiveInt = 32
    noise: float = Field(2.0, ge=0.0)
    """Standard deviation of the feature noise around the block centroids (centroids are N(0, I))."""
    seed: int = 0
    sha256: str | None = None

    @model_validator(mode="after")
    def _sizes(self):
        if self.num_nodes < self.num_blocks:
            raise ValueError(f"num_nodes ({self.num_nodes}) must be at least num_blocks ({self.num_blocks})")
        if self.num_nodes > 2**31 - 1:
            raise ValueError(f"num_nodes must be below 2^31 (int32 node ids), found {self.num_nodes}")
        return self

    def generation(self) -> dict:
        """What the cached numbers depend on (and the cache file is named after)."""
        d = self.model_dump(include={"num_nodes", "num_edges", "num_blocks", "p_in", "degree_exponent",
                                     "max_theta", "features", "noise", "seed"})
        d["version"] = GENERATOR_VERSION
        return d


def _pick(cum: np.ndarray, lo: np.ndarray, width: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Positions drawn with probability ∝ weight inside ``[lo, lo + width)`` of a cumulative sum ``cum``."""
    target = lo + u * width
    return np.minimum(np.searchsorted(cum, target, side="right"), cum.size - 1)


def generate(p: DCSBMParams) -> dict[str, np.ndarray]:
    """Draw the graph: ``src``, ``dst`` (int32, sorted by destination then source, no self-loops or
    repeats, both directions), ``block`` (int16), ``feat`` (float32 ``(N, features)``) and ``params`` (JSON)."""
    import json

    rng = np.random.default_rng(p.seed)
    n, k = p.num_nodes, p.num_blocks
    block = rng.integers(0, k, n).astype(np.int16)
    theta = np.minimum((1.0 - rng.random(n)) ** (-1.0 / (p.degree_exponent - 1.0)), p.max_theta)
    # nodes sorted by block: block r occupies [first[r], first[r+1]) of `order`
    order = np.argsort(block, kind="stable")
    counts = np.bincount(block, minlength=k)
    first = np.concatenate([[0], np.cumsum(counts)])
    cum = np.cumsum(theta[order])  # cumulative θ in block order
    lo_block = np.concatenate([[0.0], cum])[first[:-1]]  # θ mass before each block
    mass = np.concatenate([[0.0], cum])[first[1:]] - lo_block  # θ mass of each block
    total = cum[-1]
    pairs = p.num_edges // 2
    keys = []
    for start in range(0, pairs, _CHUNK):
        m = min(_CHUNK, pairs - start)
        u_pos = _pick(cum, np.zeros(m), np.full(m, total), rng.random(m))
        bu = block[order[u_pos]].astype(np.int64)
        same = rng.random(m) < p.p_in
        other = (bu + rng.integers(1, k, m)) % k
        bv = np.where(same, bu, other)
        v_pos = _pick(cum, lo_block[bv], mass[bv], rng.random(m))
        u, v = order[u_pos].astype(np.int64), order[v_pos].astype(np.int64)
        keep = u != v
        u, v = u[keep], v[keep]
        keys.append(v * n + u)  # key = dst * N + src, both directions
        keys.append(u * n + v)
    key = np.unique(np.concatenate(keys))  # sorted: by destination, then source; repeats once
    del keys
    dst, src = np.divmod(key, n)
    centroids = rng.standard_normal((k, p.features))
    feat = (centroids[block] + p.noise * rng.standard_normal((n, p.features))).astype(np.float32)
    return {"src": src.astype(np.int32), "dst": dst.astype(np.int32), "block": block, "feat": feat,
            "params": np.array(json.dumps(p.generation(), sort_keys=True))}


def load_or_generate(p: DCSBMParams, cache_dir=None) -> tuple[dict[str, np.ndarray], dict]:
    """The cached arrays (generated on a miss) and where they came from.

    Raises:
        DataError: the arrays' checksum differs from the spec's ``sha256``.
    """
    gen = p.generation()
    path = cache_root(cache_dir) / "dc_sbm" / f"sbm{p.num_nodes}_{params_key(gen)}.npz"
    generated, seconds = False, 0.0
    if path.exists():
        arrays = load_npz(path)
        digest = sha256_arrays(arrays)
    else:
        log.info("generating dc_sbm data into %s", path)
        t0 = time.perf_counter()
        arrays = generate(p)
        seconds = time.perf_counter() - t0
        digest = save_npz(path, arrays)
        generated = True
    check_sha256(digest, p.sha256, path=path, spec=f"dataset `{p.name or 'dc_sbm'}`", generated=generated)
    return arrays, {"cache_file": str(path), "sha256": digest, "generated": generated,
                    "generation_seconds": round(seconds, 2)}


@register_dataset("dc_sbm")
class DCSBM(DatasetType):
    """One degree-corrected SBM graph (see the module docstring); node classification, class = block."""

    Params = DCSBMParams

    @classmethod
    def fields(cls, p) -> dict:
        return {"node.feat": Scalar(p.features), "node.y": Scalar(1), "node.degree": Scalar(1)}

    @classmethod
    def field_docs(cls, p) -> dict[str, str]:
        return {"node.feat": f"block centroid + N(0, {p.noise}²) noise, {p.features} channels",
                "node.y": f"block (= class) id, 0..{p.num_blocks - 1}",
                "node.degree": "in-degree (analysis only)"}

    @classmethod
    def load(cls, params: DCSBMParams, *, cache_dir=None, base_dir=None) -> Dataset:
        arrays, record = load_or_generate(params, cache_dir)
        n = params.num_nodes
        src = torch.from_numpy(arrays["src"]).to(torch.long)
        dst = torch.from_numpy(arrays["dst"]).to(torch.long)
        edge_index = torch.stack([src, dst])
        del src, dst
        deg = torch.bincount(edge_index[1], minlength=n)
        y = torch.from_numpy(arrays["block"].astype(np.float32)).unsqueeze(1)
        fields = {"node.feat": torch.from_numpy(arrays["feat"]), "node.y": y,
                  "node.degree": deg.to(torch.float32).unsqueeze(1)}
        g = Graph(edge_index, n, fields, sort=False, validate=False)  # generated sorted and in range
        same = (y[edge_index[0], 0] == y[edge_index[1], 0]).to(torch.float64).mean()
        meta = {**record, "params": params.generation(), "num_edges": int(edge_index.size(1)),
                "mean_degree": float(edge_index.size(1) / n), "max_degree": int(deg.max()),
                "edge_homophily": float(same), "target_names": {"node.y": ["block"]}}
        return Dataset(graphs=[g], fields=cls.fields(params), targets=["node.y"], meta=meta)


__all__ = ["DCSBM", "DCSBMParams", "generate", "load_or_generate"]
