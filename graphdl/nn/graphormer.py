"""Graphormer's structural encodings (Ying et al. 2021, "Do Transformers Really Perform Bad for
Graph Representation?", https://arxiv.org/abs/2106.05234) as fields of a complete graph.

A graph transformer attends over every pair of atoms (``graph: {kind: complete, self_loops:
true}``), so the bonds must reach the attention some other way:

* ``degree_encoding`` (centrality encoding, §3.1.1): a learned vector per node degree,
  ``z[deg(i)]`` (clipped at ``max_degree``), added to the node features. Degrees are those of
  the dataset's own graph, not of the complete graph the model attends over.
* ``shortest_path_bias`` (spatial encoding, §3.1.2): a learned scalar per head for the
  shortest-path distance ``φ(j, i)`` (hops from ``j`` to ``i`` in the dataset's graph),
  written as an edge field of the complete graph and added to the attention logits
  (``multihead_attention`` / ``transformer_encoder_layer`` ``attn_bias``). Distances at or
  beyond ``max_distance`` share one bucket; pairs in different components (e.g. the ions of a
  salt) another.
* Edge encoding (§3.1.3): Graphormer averages learned projections of the bond features along
  a shortest path. For molecules we use the direct bond instead: the complete graph carries
  the bond features of bonded pairs (zero elsewhere, :func:`graphdl.ops.neighbors.build_graph`),
  and a ``linear`` block maps them to one logit per head (``{type: linear, input: edge.e,
  output: edge.bond, out_dim: H}``), summed with the distance bias in ``attn_bias``.

The distances come from a padded dense adjacency per batch (:func:`pair_distances`): a
breadth-first search as ``max_distance − 1`` boolean matrix products, and reachability by
``⌈log₂ M⌉`` squarings; no loop over nodes or graphs. Cached on the batch.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveInt, field_validator
from torch import Tensor, nn

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, BlockParams, Signature, register_block
from graphdl.nn.basic import _check_key
from graphdl.nn.sequence import node_positions
from graphdl.nn.structural import dense_adjacency
from graphdl.ops.neighbors import source_graph
from graphdl.types import Scalar, split_key


def pair_distances(g, max_distance: int) -> Tensor:
    """Hops from node ``j`` to node ``i`` of each graph of ``g``, bucketed: ``(B, M, M)`` int64.

    ``D[b, i, j]`` = the length of the shortest directed path ``j → … → i`` when it is below
    ``max_distance``; ``max_distance`` when it is that long or longer; ``max_distance + 1`` when
    there is no path (another component). ``D[b, i, i] = 0``. Padding slots are unreachable.
    """
    A, _, _ = dense_adjacency(g)  # A[b, i, j] = 1 for an edge j -> i
    B, m, _ = A.shape
    eye = torch.eye(m, dtype=torch.bool, device=A.device).expand(B, m, m)
    dist = torch.full((B, m, m), max_distance, dtype=torch.long, device=A.device)
    dist = dist.masked_fill(eye, 0)
    reach = eye
    for t in range(1, max_distance):  # BFS layers (bounded by max_distance, not by the graph)
        new = reach | (torch.bmm(A, reach.to(A.dtype)) > 0)
        dist = dist.masked_fill(new & ~reach, t)
        reach = new
    closure = eye | (A > 0)
    for _ in range(max(1, math.ceil(math.log2(max(m, 2))))):  # paths of length up to 2^k
        closure = closure | (torch.bmm(closure.to(A.dtype), closure.to(A.dtype)) > 0)
    return dist.masked_fill(~closure, max_distance + 1)


def edge_distances(g, max_distance: int) -> Tensor:
    """The bucketed distance (:func:`pair_distances` in the dataset's own graph) of every edge of ``g``, ``(E,)``.

    ``g`` is the message-passing graph (complete, with or without loops); the distances are
    those of the graph it was built from (:func:`graphdl.ops.neighbors.source_graph`). Cached on ``g``.
    """
    key = ("graphormer.edge_distances", max_distance)
    if key not in g._cache:
        dist = pair_distances(source_graph(g), max_distance)
        pos = node_positions(g)
        src, dst = g.src, g.dst
        g._cache[key] = dist[g.batch.index_select(0, dst), pos.index_select(0, dst), pos.index_select(0, src)]
    return g._cache[key]


@register_block("shortest_path_bias")
class ShortestPathBias(Block):
    r"""Graphormer's spatial encoding: ``b_ij = w[φ(j, i)]`` per head, an edge field of the complete graph.

    ``φ(j, i)``: hops from ``j`` to ``i`` in the dataset's own graph, in buckets ``0 ..
    max_distance`` (the last one: that far or farther) plus one for unreachable pairs;
    ``w`` ``(max_distance + 2, heads)`` is learned (``N(0, 0.02²)``, as Graphormer). Feed it to
    an attention block's ``attn_bias``. Needs ``graph.kind: complete`` (the pairs it scores).

    Shapes: writes ``output`` ``(E, heads)``.
    """

    family = "structural"

    class Params(BlockParams):
        output: str = "edge.spd"
        heads: PositiveInt
        max_distance: int = Field(5, ge=1, le=64)

        _v_out = field_validator("output")(_check_key)

    @classmethod
    def infer(cls, p, fields, ctx):
        if split_key(p.output)[0] != "edge":
            raise InferenceError(f"shortest_path_bias writes one value per node pair, an edge field; found "
                                 f"`{p.output}` (use `output: edge.spd`)")
        if ctx.graph_kind != "complete":
            raise InferenceError(f"shortest_path_bias scores every pair of nodes, so it needs `graph: {{kind: "
                                 f"complete, self_loops: true}}` (found `{ctx.graph_kind}`); the distances are "
                                 f"measured in the dataset's own graph")
        return Signature({}, {p.output: Scalar(p.heads)})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.weight = nn.Parameter(torch.randn(p.max_distance + 2, p.heads) * 0.02)

    def forward(self, g, f):
        return {self.p.output: self.weight.index_select(0, edge_distances(g, self.p.max_distance))}

    def eager_structure_keys(self) -> tuple:
        return (("graphormer.edge_distances", self.p.max_distance),)

    def eager_structure(self, g) -> None:
        """Compute the distances before a ``torch.compile`` trace: the padded adjacency reads the
        largest graph's size on the host, which inside the trace breaks the graph and makes new
        batch sizes recompile."""
        edge_distances(g, self.p.max_distance)

    def describe_extra(self) -> str:
        return f"distances 0..{self.p.max_distance}+ and unreachable -> {self.p.heads} heads"


@register_block("degree_encoding")
class DegreeEncoding(Block):
    r"""Graphormer's centrality encoding: ``h_i ← h_i + z[min(deg(i), max_degree)]``.

    ``deg`` is the in-degree in the dataset's own graph (for undirected graphs, the degree;
    Graphormer's in- and out-degree encodings coincide there), never in the complete graph the
    model attends over. ``z`` ``(max_degree + 1, d)`` is learned (``N(0, 0.02²)``). Added to
    ``add_to`` (default ``node.h``), or written to ``output`` with ``dim`` channels when
    ``add_to: null``.

    Shapes: ``(N, d) -> (N, d)``.
    """

    family = "structural"

    class Params(BlockParams):
        add_to: str | None = "node.h"
        output: str = "node.degree"
        dim: PositiveInt | None = None
        max_degree: int = Field(8, ge=1)

        _v_out = field_validator("output")(_check_key)

        @field_validator("add_to")
        @classmethod
        def _v_add(cls, v):
            return None if v is None else _check_key(v)

    @classmethod
    def infer(cls, p, fields, ctx):
        if p.add_to is not None:
            if split_key(p.add_to)[0] != "node":
                raise InferenceError(f"degree_encoding adds to node features; `{p.add_to}` is not a node field")
            d = fields.need_scalar(p.add_to, cls.name)
            return Signature({p.add_to: fields[p.add_to]}, {p.add_to: Scalar(d)}, {"dim": d})
        if p.dim is None or split_key(p.output)[0] != "node":
            raise InferenceError("degree_encoding without `add_to` writes a node field `output` of `dim` channels; "
                                 "give both (e.g. `output: node.degree, dim: 16`)")
        return Signature({}, {p.output: Scalar(p.dim)}, {"dim": p.dim})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.weight = nn.Parameter(torch.randn(p.max_degree + 1, sig.info["dim"]) * 0.02)

    def _degrees(self, g) -> Tensor:
        key = self.eager_structure_keys()[0]
        deg = g._cache.get(key)
        if deg is None:
            deg = g._cache[key] = source_graph(g).in_degree().clamp(max=self.p.max_degree)
        return deg

    def eager_structure_keys(self) -> tuple:
        return (("graphormer.degree", self.p.max_degree),)

    def eager_structure(self, g) -> None:
        """Compute the degrees before a ``torch.compile`` trace (they come from the dataset's graph,
        whose own structure cache the trace must not read)."""
        self._degrees(g)

    def forward(self, g, f):
        z = self.weight.index_select(0, self._degrees(g))
        if self.p.add_to is not None:
            return {self.p.add_to: f[self.p.add_to] + z}
        return {self.p.output: z}


__all__ = ["DegreeEncoding", "ShortestPathBias", "edge_distances", "pair_distances"]
