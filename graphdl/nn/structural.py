"""Structural node features that lift message passing beyond 1-WL.

1-WL (and so every sum-aggregating MPNN, Xu et al. 2019) cannot count cycles: all
``d``-regular graphs of one size look alike to it. Giving each node the number of short
cycles through it (Bouritsas et al. 2022, "GSN: Graph Substructure Networks") separates
graphs 1-WL cannot, e.g. CSL graphs C(41, 2) (triangles) and C(41, 3) (extra 4-cycles).

``random_features`` gives every node a random vector instead (separates almost anything,
but only in distribution under relabelling). ``cycle_counts`` computes, per node ``i`` of an undirected simple graph with adjacency ``A``
and degrees ``d``::

    c3(i) = (A³)_ii / 2
    c4(i) = ((A⁴)_ii − d_i² − Σ_{j∈N(i)} (d_j − 1)) / 2

(closed walks of length 3 are triangles traversed both ways; of length 4, those that are
not 4-cycles go back and forth along one or two edges.) The graphs of a batch are padded
into one dense ``(B, n_max, n_max)`` stack, so the products are batched matmuls.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, BlockParams, Signature, register_block
from graphdl.nn.basic import _check_key
from graphdl.types import Scalar, split_key

CYCLE_LENGTHS = (3, 4)


def dense_adjacency(g) -> tuple[Tensor, Tensor, Tensor]:
    """The graphs of batch ``g`` as a padded dense stack.

    Returns ``(A, b, local)``: ``A`` (B, n_max, n_max) float with ``A[b, i, j] = 1`` for each
    edge j -> i of graph b, and for every node its graph ``b`` (N,) and position ``local`` (N,)
    in that graph. One host sync (``n_max``, :meth:`~graphdl.data.Graph.max_graph_nodes`, read
    before the trace by a compiled model); callers cache the result per batch.
    """
    ptr = g.ptr
    b = g.batch
    local = torch.arange(g.num_nodes, device=b.device) - ptr[b]
    n_max = g.max_graph_nodes()
    A = torch.zeros(g.num_graphs, n_max, n_max, device=b.device)
    src, dst = g.edge_index
    A[b[dst], local[dst], local[src]] = 1.0
    return A, b, local


def cycle_counts(g, lengths: tuple[int, ...] = CYCLE_LENGTHS) -> Tensor:
    """Number of k-cycles through each node, k in ``lengths`` (3 and/or 4).

    Shapes: ``g`` with N nodes -> ``(N, len(lengths))``. Assumes an undirected simple graph
    (both directions of each edge present, no self-loops).
    """
    A, b, local = dense_adjacency(g)
    A2 = A @ A
    deg = A.sum(-1)  # (B, n)
    cols = []
    for k in lengths:
        if k == 3:
            c = (A2 * A).sum(-1) / 2  # (A³)_ii = Σ_j (A²)_ij A_ji
        elif k == 4:
            walks = (A2 * A2).sum(-1)  # (A⁴)_ii = Σ_j (A²)_ij², A symmetric
            back = deg**2 + (A @ (deg - 1).clamp_min(0).unsqueeze(-1)).squeeze(-1)
            c = (walks - back) / 2
        else:  # validated by Params
            raise ValueError(f"cycle length {k}")
        cols.append(c[b, local])
    return torch.stack(cols, -1)


class _FeatureBlock(Block):
    """A block that writes features computed from the graph alone (no input tensor to take a
    dtype from): a zero-size, non-persistent buffer follows ``model.to(dtype)`` / ``.double()``
    so the features come out in the model's floating dtype."""

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.register_buffer("_dtype_probe", torch.zeros(0), persistent=False)

    @property
    def out_dtype(self) -> torch.dtype:
        return self._dtype_probe.dtype


@register_block("cycle_counts")
class CycleCounts(_FeatureBlock):
    """Per-node counts of k-cycles (k in ``lengths``) written to ``output`` (GSN, Bouritsas et
    al. 2022): ``c3(i) = (A³)_ii / 2``, ``c4(i) = ((A⁴)_ii − d_i² − Σ_{j~i}(d_j − 1)) / 2``.

    Shapes: reads no field; writes ``output`` ``(N, len(lengths))``, ``log1p`` of the counts
    when ``transform: log1p`` (default). The counts depend on the graph only, so they are
    computed once per batch object and cached on it.
    """

    family = "structural"
    needs_max_graph_nodes = True  # a dense per-graph adjacency stack (dense_adjacency)

    class Params(BlockParams):
        output: str = "node.cycles"
        lengths: list[Literal[3, 4]] = Field(default_factory=lambda: [3, 4], min_length=1)
        transform: Literal["log1p", "none"] = "log1p"

        _v_out = field_validator("output")(_check_key)

    @classmethod
    def infer(cls, p, fields, ctx):
        if split_key(p.output)[0] != "node":
            raise InferenceError(f"cycle_counts writes a node field, found output `{p.output}`; "
                                 f"use `output: node.cycles`")
        if ctx is not None and getattr(ctx, "graph_kind", "given") != "given":
            raise InferenceError("cycle_counts counts cycles of the dataset's graph; it needs `graph: {kind: given}`")
        return Signature({}, {p.output: Scalar(len(p.lengths))})

    def forward(self, g, f):
        key = ("cycle_counts", tuple(self.p.lengths), self.p.transform, self.out_dtype)
        out = g._cache.get(key)
        if out is None:
            out = cycle_counts(g, tuple(self.p.lengths)).to(self.out_dtype)
            if self.p.transform == "log1p":
                out = torch.log1p(out)
            g._cache[key] = out
        return {self.p.output: out}


def laplacian_pe(g, k: int) -> Tensor:
    """|eigenvectors| of the k smallest non-trivial eigenvalues of each graph's normalised
    Laplacian ``L = I − D^{-1/2} A D^{-1/2}`` (Dwivedi et al. 2020, LapPE).

    Sign handling: the absolute value (invariant to the sign flip of each eigenvector; not to
    a basis change within a repeated eigenvalue). Graphs with fewer than ``k + 1`` nodes get
    zeros in the missing columns. Shapes: ``(N, k)``, float64 (the caller casts once, so a float64
    model sees no float32 rounding).
    """
    A, b, local = dense_adjacency(g)
    B, n, _ = A.shape
    deg = A.sum(-1)
    inv = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))
    L = torch.eye(n, device=A.device).expand(B, n, n) - inv.unsqueeze(-1) * A * inv.unsqueeze(-2)
    sizes = (g.ptr[1:] - g.ptr[:-1]).unsqueeze(-1)  # (B, 1)
    pad = torch.arange(n, device=A.device).unsqueeze(0) >= sizes  # (B, n) padded slots
    L = L + torch.diag_embed(pad.to(L.dtype) * 1e3)  # padded slots: eigenvalue 1e3, sorted last
    L = L.masked_fill(pad.unsqueeze(-1) & ~torch.eye(n, dtype=torch.bool, device=A.device), 0.0)
    _, vecs = torch.linalg.eigh(L.double())  # ascending eigenvalues
    vecs = vecs[:, :, 1:k + 1].abs()  # (B, n, <=k) in float64: skip the trivial one; callers cast once
    valid = torch.arange(1, vecs.shape[-1] + 1, device=A.device).unsqueeze(0) < sizes  # (B, <=k)
    vecs = vecs * valid.unsqueeze(1)
    out = vecs[b, local]
    if out.shape[-1] < k:
        out = torch.cat([out, out.new_zeros(out.shape[0], k - out.shape[-1])], -1)
    return out


@register_block("laplacian_pe")
class LaplacianPE(_FeatureBlock):
    """Laplacian positional encodings (Dwivedi et al. 2020): ``|v_1 .. v_k|`` per node, the
    eigenvectors of ``L = I − D^{-1/2} A D^{-1/2}`` for the k smallest non-zero eigenvalues,
    per graph (dense padded ``eigh``, cached per batch). The absolute value removes the sign
    ambiguity; a repeated eigenvalue leaves a basis ambiguity, which ``graphdl wl check``
    reports as an unreliable model. Shapes: writes ``(N, k)``.
    """

    family = "structural"
    needs_max_graph_nodes = True  # a dense per-graph adjacency stack (dense_adjacency)

    class Params(BlockParams):
        output: str = "node.pe"
        k: int = Field(4, ge=1)

        _v_out = field_validator("output")(_check_key)

    @classmethod
    def infer(cls, p, fields, ctx):
        if split_key(p.output)[0] != "node":
            raise InferenceError(f"laplacian_pe writes a node field, found output `{p.output}`; use `output: node.pe`")
        return Signature({}, {p.output: Scalar(p.k)})

    def forward(self, g, f):
        key = ("laplacian_pe", self.p.k, self.out_dtype)
        out = g._cache.get(key)
        if out is None:
            out = g._cache[key] = laplacian_pe(g, self.p.k).to(self.out_dtype)
        return {self.p.output: out}


@register_block("random_features")
class RandomFeatures(_FeatureBlock):
    """Random node features (Abboud et al. 2021; Sato et al. 2021): ``r_i ~ N(0, I_dim)``
    written to ``output``, so that message passing can tell apart nodes 1-WL colours alike.

    Training draws fresh features every forward; evaluation draws them from a generator
    seeded with ``seed`` at each forward, so one batch gets the same features every time.
    The features are i.i.d. per node of the batch, so a model using them is invariant to
    relabelling only in distribution: its outputs vary, and ``graphdl wl check``'s T² test
    counts a pair as separated only when the mean output differs. Shapes: writes ``(N, dim)``.
    """

    family = "structural"

    class Params(BlockParams):
        output: str = "node.random"
        dim: int = Field(8, ge=1)
        seed: int = 0

        _v_out = field_validator("output")(_check_key)

    @classmethod
    def infer(cls, p, fields, ctx):
        if split_key(p.output)[0] != "node":
            raise InferenceError(f"random_features writes a node field, found output `{p.output}`; "
                                 f"use `output: node.random`")
        return Signature({}, {p.output: Scalar(p.dim)})

    def forward(self, g, f):
        n = g.num_nodes
        if self.training:
            return {self.p.output: torch.randn(n, self.p.dim, device=g.device, dtype=self.out_dtype)}
        gen = torch.Generator().manual_seed(self.p.seed)
        return {self.p.output: torch.randn(n, self.p.dim, generator=gen, dtype=self.out_dtype).to(g.device)}


__all__ = ["CycleCounts", "LaplacianPE", "RandomFeatures", "cycle_counts", "dense_adjacency", "laplacian_pe"]
