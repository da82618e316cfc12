"""Graph builders from positions: complete, radius (cell list) and k-nearest-neighbour graphs.

Every builder works on a batch of disjoint graphs at once (``batch`` maps node -> graph),
never connects nodes of different graphs, never makes self-loops, and returns
``edge_index (2, E)`` (row 0 source, row 1 destination) sorted by destination, then source.

* ``complete_graph``: every ordered pair ``(j -> i)``, ``j ≠ i``, of the same graph.
* ``causal_graph``: ``(j -> i)`` for ``j < i`` within each graph (node order is sequence order).
* ``radius_graph``: pairs with ``‖x_i − x_j‖ < cutoff``, found with scipy's ``cKDTree`` for
  CPU tensors (9× faster than the cell list at 2 × 1,000 particles, ``benchmarks/gns.py``), or
  anywhere with a cell list (cells of
  side ``cutoff``, or larger for a tiny cutoff in a large box; each node only looks at its own and the 26 adjacent cells), so memory is
  O(N · neighbours), never an N×N distance matrix. ``max_neighbors`` keeps, per destination,
  the nearest sources first, ties broken by the smaller source index (deterministic).
* ``knn_graph``: each destination's ``k`` nearest sources of its graph (same tie rule);
  computed in row chunks of a padded per-graph distance table.

:func:`build_graph` applies a :class:`~graphdl.spec.model.GraphSpec` to a
:class:`~graphdl.data.Graph`; edge fields of the given graph are carried over to the new
edges joining the same pair, and are zero on new pairs. The new graph remembers the one it
was built from (:func:`source_graph`), so a block on a complete graph can still read the
dataset's bonds (Graphormer's shortest-path distances and degrees).

Shapes: ``pos (N, D)``, ``batch (N,)`` int64 sorted (nodes of a graph contiguous),
result ``(2, E)`` int64.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from graphdl.errors import DataError

_CHUNK = 1 << 22  # entries of a knn distance chunk
SOURCE_GRAPH = "source_graph"
"""Cache key under which a built graph keeps the graph it was built from."""


def source_graph(g):
    """The graph ``g`` was built from by :func:`build_graph` (the dataset's own edges), or ``g``."""
    return g._cache.get(SOURCE_GRAPH, g)


def _counts_ptr(batch: Tensor, num_graphs: int) -> tuple[Tensor, Tensor]:
    counts = torch.bincount(batch, minlength=num_graphs)
    ptr = torch.zeros(num_graphs + 1, dtype=torch.long, device=batch.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return counts, ptr


def _sort_by_dst(src: Tensor, dst: Tensor, n: int) -> Tensor:
    key = dst * max(n, 1) + src
    order = torch.sort(key).indices
    return torch.stack([src[order], dst[order]])


def _block_pairs(batch: Tensor, num_graphs: int | None, causal: bool, self_loops: bool) -> Tensor:
    """Edges ``j -> i`` of every graph's node pairs, dst-major: ``j`` runs over the graph's nodes
    (``complete``) or its nodes up to ``i`` (``causal``), skipping ``j = i`` without ``self_loops``.

    One pass over the ``E`` edges with a single gather (``E`` is 2.1M for a batch of 32 x 256
    tokens, so every extra pass over it counts): edge ``e`` of destination ``i`` has rank
    ``e − start_i`` among ``i``'s sources, and its source is ``ptr_b + rank`` (plus one past the
    diagonal when loops are skipped).
    """
    n = batch.numel()
    device = batch.device
    if n == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1
    counts, ptr = _counts_ptr(batch, num_graphs)
    first = ptr.index_select(0, batch)  # (N,) first node of each node's graph
    local = torch.arange(n, device=device) - first
    if causal:
        deg = local + 1 if self_loops else local
    else:
        deg = counts.index_select(0, batch) if self_loops else (counts.index_select(0, batch) - 1).clamp_min(0)
    start = torch.cumsum(deg, 0) - deg  # first edge of each destination
    total = int(deg.sum())
    dst = torch.repeat_interleave(torch.arange(n, device=device), deg, output_size=total)
    out = torch.empty(2, total, dtype=torch.long, device=device)
    out[1].copy_(dst)
    if causal or self_loops:
        torch.arange(total, device=device, out=out[0])
        out[0].sub_((start - first).index_select(0, dst))  # ptr_b + rank
    else:
        # rank r < local_i -> ptr_b + r; r >= local_i -> ptr_b + r + 1 (skip the diagonal)
        e = torch.arange(total, device=device)
        per = torch.stack([start - first, start + local], 1).index_select(0, dst)  # one gather, two columns
        torch.sub(e, per[:, 0], out=out[0])
        out[0].add_(e >= per[:, 1])
    return out


def complete_graph(batch: Tensor, num_graphs: int | None = None, self_loops: bool = False) -> Tensor:
    """All ordered pairs ``j -> i`` (``i ≠ j``; ``i = j`` too with ``self_loops``) within each graph,
    sorted by (dst, src)."""
    return _block_pairs(batch, num_graphs, False, self_loops)


def causal_graph(batch: Tensor, num_graphs: int | None = None, self_loops: bool = False) -> Tensor:
    """Pairs ``j -> i`` with ``j < i`` (``j ≤ i`` with ``self_loops``) within each graph (graph
    nodes contiguous), sorted by (dst, src).

    Node ``i`` at position ``l`` of its graph gets the ``l`` sources ``ptr_b .. i − 1`` (and
    itself with ``self_loops``: a decoder's mask); without loops the first node of every graph
    gets none. Shapes: ``batch (N,)`` -> ``(2, E)`` with ``E = Σ_b n_b (n_b ∓ 1) / 2``.
    """
    return _block_pairs(batch, num_graphs, True, self_loops)


def _cap_nearest(src: Tensor, dst: Tensor, d2: Tensor, n: int, cap: int | None) -> Tensor:
    """Keep at most ``cap`` sources per destination: nearest first, ties by source index."""
    if cap is not None and src.numel():
        order = torch.argsort(src, stable=True)
        order = order[torch.argsort(d2[order], stable=True)]
        order = order[torch.argsort(dst[order], stable=True)]
        src, dst = src[order], dst[order]
        counts = torch.bincount(dst, minlength=n)
        start = torch.cumsum(counts, 0) - counts
        rank = torch.arange(dst.numel(), device=dst.device) - start[dst]
        keep = rank < cap
        src, dst = src[keep], dst[keep]
    return _sort_by_dst(src, dst, n)


def radius_graph(pos: Tensor, batch: Tensor | None, cutoff: float,
                 max_neighbors: int | None = None, method: str = "auto") -> Tensor:
    """Pairs closer than ``cutoff`` within each graph (see the module docstring).

    Args:
        pos: ``(N, D)`` positions (D = 1..3; more dims work, with 3^D neighbour cells).
        batch: ``(N,)`` graph id per node, or None for one graph.
        cutoff: strict distance cutoff ``r < cutoff``.
        max_neighbors: keep at most this many sources per destination (nearest first).
        method: ``cell_list`` (torch, any device), ``kdtree`` (``scipy.spatial.cKDTree`` on
            the host, CPU tensors only) or ``auto``: the k-d tree for CPU tensors when scipy
            imports, the cell list elsewhere. Both give the same edges (the k-d tree proposes
            pairs, the same float test ``‖x_i − x_j‖² < cutoff²`` keeps them). Measured by
            ``benchmarks/gns.py`` (2 × 1,000 particles at water density, one thread): cell list
            8.2 ms, cKDTree 0.9 ms.
    """
    if cutoff <= 0:
        raise DataError(f"radius graph cutoff must be > 0, found {cutoff}")
    if method not in ("auto", "cell_list", "kdtree"):
        raise DataError(f"radius graph method must be auto, cell_list or kdtree, found `{method}`")
    n, dim = pos.shape
    device = pos.device
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=device)
    if n == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    p = pos.detach()
    if method == "kdtree" or (method == "auto" and device.type == "cpu" and _have_scipy()):
        if device.type != "cpu":
            raise DataError("radius graph method `kdtree` runs on the host; use `cell_list` for CUDA tensors")
        return _kdtree_radius(p, batch, cutoff, max_neighbors)
    num_graphs = int(batch.max()) + 1
    # graph-local integer cell coordinates, padded by one cell on each side
    lo = torch.full((num_graphs, dim), float("inf"), dtype=p.dtype, device=device)
    lo = lo.scatter_reduce(0, batch[:, None].expand(-1, dim), p, reduce="amin", include_self=True)
    # cells of side >= cutoff: neighbours are then in adjacent cells; a side of at least
    # span / 2^14 keeps the int64 cell keys from overflowing when the cutoff is tiny
    span = float((p - lo[batch]).max())
    side = max(float(cutoff), span / 16384.0)
    cell = torch.floor((p - lo[batch]) / side).long() + 1  # (N, D) >= 1
    extent = cell.max(0).values + 2  # cells per axis incl. padding
    stride = torch.ones(dim + 1, dtype=torch.long, device=device)
    for a in range(dim - 1, -1, -1):  # loop over axes (D <= 3), not nodes
        stride[a] = stride[a + 1] * extent[a]
    key = batch * stride[0] + (cell * stride[1:]).sum(1)
    skey, order = torch.sort(key)
    # the 3^D neighbour offsets as key deltas
    offs = torch.cartesian_prod(*[torch.tensor([-1, 0, 1], device=device)] * dim).reshape(-1, dim)
    delta = (offs * stride[1:]).sum(1)  # (3^D,)
    q = key[:, None] + delta[None, :]  # (N, 3^D)
    lo_i = torch.searchsorted(skey, q.reshape(-1), right=False)
    hi_i = torch.searchsorted(skey, q.reshape(-1), right=True)
    cnt = hi_i - lo_i
    dst = torch.repeat_interleave(torch.arange(n, device=device).repeat_interleave(delta.numel()), cnt)
    first = torch.cumsum(cnt, 0) - cnt
    rel = torch.arange(dst.numel(), device=device) - torch.repeat_interleave(first, cnt)
    src = order[torch.repeat_interleave(lo_i, cnt) + rel]
    d2 = (p[src] - p[dst]).pow(2).sum(-1)
    keep = (d2 < cutoff * cutoff) & (src != dst)
    return _cap_nearest(src[keep], dst[keep], d2[keep], n, max_neighbors)


def _have_scipy() -> bool:
    try:
        import scipy.spatial  # noqa: F401
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    return True


def _kdtree_radius(p: Tensor, batch: Tensor, cutoff: float, max_neighbors: int | None) -> Tensor:
    """:func:`radius_graph` through one ``cKDTree`` over all graphs: each graph is shifted along
    the first axis past the previous one by more than ``cutoff``, so no pair crosses graphs and
    no Python loop runs over graphs. Candidate pairs (a slightly larger radius, in float64) are
    then tested exactly as the cell list tests them."""
    from scipy.spatial import cKDTree

    n = p.size(0)
    x = p.double().numpy().copy()
    b = batch.numpy()
    lo = np.full(int(b.max()) + 1, np.inf)
    hi = np.full(int(b.max()) + 1, -np.inf)
    np.minimum.at(lo, b, x[:, 0])
    np.maximum.at(hi, b, x[:, 0])
    width = np.where(np.isfinite(hi - lo), hi - lo, 0.0) + 4.0 * cutoff
    start = np.concatenate([[0.0], np.cumsum(width)[:-1]])
    x[:, 0] += start[b] - np.where(np.isfinite(lo), lo, 0.0)[b]
    pairs = cKDTree(x).query_pairs(cutoff * (1 + 1e-6) + 1e-300, output_type="ndarray")
    i = torch.from_numpy(pairs[:, 0].astype(np.int64))
    j = torch.from_numpy(pairs[:, 1].astype(np.int64))
    src, dst = torch.cat([i, j]), torch.cat([j, i])
    d2 = (p[src] - p[dst]).pow(2).sum(-1)
    keep = d2 < cutoff * cutoff
    if max_neighbors is not None:
        return _cap_nearest(src[keep], dst[keep], d2[keep], n, max_neighbors)
    src, dst = src[keep].numpy(), dst[keep].numpy()
    order = np.argsort(dst * max(n, 1) + src)  # keys are distinct: any sort is (dst, src) order
    return torch.from_numpy(np.stack([src[order], dst[order]]))


def knn_graph(pos: Tensor, batch: Tensor | None, k: int) -> Tensor:
    """Each node's ``k`` nearest other nodes of its graph as sources (ties: smaller index).

    A graph with ``n ≤ k`` nodes gives each node all ``n − 1`` others.
    """
    if k <= 0:
        raise DataError(f"knn graph needs k >= 1, found {k}")
    n = pos.shape[0]
    device = pos.device
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=device)
    if n == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    p = pos.detach()
    num_graphs = int(batch.max()) + 1
    counts, ptr = _counts_ptr(batch, num_graphs)
    nmax = int(counts.max())
    local = torch.arange(n, device=device) - ptr[batch]
    padded = p.new_zeros(num_graphs, nmax, p.shape[1])
    padded[batch, local] = p
    valid = torch.zeros(num_graphs, nmax, dtype=torch.bool, device=device)
    valid[batch, local] = True
    kk = min(k, nmax - 1)
    if kk <= 0:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    rows = max(1, _CHUNK // max(nmax, 1))
    srcs, dsts = [], []
    for s in range(0, n, rows):  # row chunks bound memory; not a loop per node
        idx = torch.arange(s, min(n, s + rows), device=device)
        b = batch[idx]
        d2 = (padded[b] - p[idx, None, :]).pow(2).sum(-1)  # (r, nmax)
        bad = ~valid[b]
        bad[torch.arange(idx.numel(), device=device), local[idx]] = True
        d2 = d2.masked_fill(bad, float("inf"))
        near = torch.sort(d2, dim=1, stable=True)
        j = near.indices[:, :kk]
        ok = torch.isfinite(near.values[:, :kk])
        src = (ptr[b][:, None] + j)[ok]
        dst = idx[:, None].expand(-1, kk)[ok]
        srcs.append(src)
        dsts.append(dst)
    return _sort_by_dst(torch.cat(srcs), torch.cat(dsts), n)


def _carry_edge_fields(g, edge_index: Tensor) -> dict[str, Tensor]:
    """Edge fields of ``g`` moved to ``edge_index``: same pair -> same value, new pair -> 0."""
    edge_keys = g.keys("edge")
    fields = {k: v for k, v in g.fields.items() if not k.startswith("edge.")}
    if not edge_keys:
        return fields
    n = max(g.num_nodes, 1)
    old = g.edge_index[1] * n + g.edge_index[0]  # sorted (edges are sorted by dst, src)
    new = edge_index[1] * n + edge_index[0]
    if old.numel() == 0:
        pos = torch.zeros_like(new)
        hit = torch.zeros_like(new, dtype=torch.bool)
    else:
        pos = torch.searchsorted(old, new).clamp_max(old.numel() - 1)
        hit = old[pos] == new
    for k in edge_keys:
        v = g.fields[k]
        gathered = v[pos] if v.size(0) else v.new_zeros((new.numel(),) + v.shape[1:])
        mask = hit.reshape((-1,) + (1,) * (v.dim() - 1))
        fields[k] = torch.where(mask, gathered, torch.zeros_like(gathered))
    return fields


def _pattern_graph_class():
    """:class:`PatternGraph` (defined on first use: ``graphdl.data.graph`` imports this module's package)."""
    global _PATTERN_GRAPH
    if _PATTERN_GRAPH is not None:
        return _PATTERN_GRAPH
    from graphdl.data.graph import Graph

    class PatternGraph(Graph):
        """A complete or causal graph (edges a fixed pattern of each graph's node pairs) whose
        edge list is made on first use of ``edge_index``.

        Dense attention reads only ``batch``/``ptr``, so a transformer batch of 32 x 256 tokens
        never builds (nor moves) its 2.1M edges; a block that reads edges (a sparse lowering, a
        convolution, a CSR) builds them once, then they are cached like any graph's. Everything
        else is :class:`~graphdl.data.graph.Graph`'s. Made by :func:`build_graph` for graphs
        without edge fields (edge fields are carried onto the edges, so they need them).
        """

        def __init__(self, source, causal: bool, self_loops: bool):
            self.num_nodes, self.num_graphs, self.batch = source.num_nodes, source.num_graphs, source.batch
            self.fields = dict(source.fields)
            self._cache = {}
            self._pattern = (causal, self_loops)
            self._edges = None

        @property
        def edge_index(self):
            if self._edges is None:
                causal, loops = self._pattern
                self._edges = _block_pairs(self.batch, self.num_graphs, causal, loops)
            return self._edges

        @edge_index.setter
        def edge_index(self, value):
            self._edges = value

        @property
        def device(self):
            return self.batch.device

        def _lazy_like(self, fields: dict, cache: dict):
            g = object.__new__(type(self))
            g.num_nodes, g.num_graphs, g.batch, g.fields, g._cache = (self.num_nodes, self.num_graphs, self.batch,
                                                                       fields, cache)
            g._pattern, g._edges = self._pattern, self._edges  # still lazy when not built yet
            g._max_graph_nodes = self._max_graph_nodes
            return g

        def uncached(self, keep: tuple = ()):
            # Graph.uncached reads edge_index, which would build the edges (a host sync) inside a
            # torch.compile trace of a dense transformer that never needs them
            kept = {k: self._cache[k] for k in (SOURCE_GRAPH, *keep) if k in self._cache}
            return self._lazy_like(dict(self.fields), kept)

        def replace(self, **fields):
            new = dict(self.fields)
            new.update({k.replace("__", "."): v for k, v in fields.items()})
            return self._lazy_like(new, self._cache)

    _PATTERN_GRAPH = PatternGraph
    return PatternGraph


_PATTERN_GRAPH = None


def build_graph(g, spec, self_loops: bool = False):
    """The message-passing graph that ``spec`` (a GraphSpec) asks for, as a new Graph.

    ``self_loops`` (``complete`` and ``causal`` only) places one loop per node in its sorted
    position directly, with zero edge fields (as ``Graph.add_self_loops``), instead of
    appending and re-sorting: for a transformer batch of 32 x 256 tokens that sort is most of
    the graph's cost. Other kinds raise ValueError with it (add loops afterwards). A complete or
    causal graph of a batch without edge fields is a ``PatternGraph``: its edges are made
    when a block first reads them, which dense attention never does.
    """
    from graphdl.data.graph import Graph

    kind = spec.kind
    if self_loops and kind not in ("complete", "causal"):
        raise ValueError(f"build_graph places self-loops only for complete and causal graphs, not `{kind}`")
    if kind == "given":
        return g
    if kind in ("complete", "causal") and not g.keys("edge"):  # edges made only if a block reads them
        out = _pattern_graph_class()(g, kind == "causal", self_loops)
        out._cache[SOURCE_GRAPH] = source_graph(g)
        return out
    if kind == "complete":
        ei = complete_graph(g.batch, g.num_graphs, self_loops)
    elif kind == "causal":
        ei = causal_graph(g.batch, g.num_graphs, self_loops)
    else:
        if spec.positions not in g.fields:
            have = ", ".join(sorted(g.fields)) or "none"
            raise DataError(f"graph kind `{kind}` reads positions `{spec.positions}`, but the batch has no such "
                            f"field (fields: {have}); set `graph.positions`")
        pos = g.fields[spec.positions]
        if kind == "radius":
            if spec.cutoff is None:
                raise DataError("graph kind `radius` needs `graph.cutoff` (a distance > 0)")
            ei = radius_graph(pos, g.batch, float(spec.cutoff), spec.max_neighbors)
        elif kind == "knn":
            if spec.k is None:
                raise DataError("graph kind `knn` needs `graph.k` (neighbours per node)")
            ei = knn_graph(pos, g.batch, int(spec.k))
        else:
            raise DataError(f"unknown graph kind `{kind}`; expected given, complete, causal, radius or knn")
    fields = _carry_edge_fields(g, ei)
    if self_loops and g.keys("edge"):
        loop = (ei[0] == ei[1]).unsqueeze(-1)
        for k in g.keys("edge"):  # loops are new edges: zero features, as add_self_loops
            v = fields[k]
            fields[k] = torch.where(loop.view((-1,) + (1,) * (v.dim() - 1)), torch.zeros_like(v), v)
    out = Graph(ei, g.num_nodes, fields, batch=g.batch, num_graphs=g.num_graphs, sort=False, validate=False)
    out._cache[SOURCE_GRAPH] = source_graph(g)
    return out


__all__ = ["SOURCE_GRAPH", "build_graph", "causal_graph", "complete_graph", "knn_graph", "radius_graph", "source_graph"]
