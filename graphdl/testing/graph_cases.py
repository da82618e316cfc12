"""A tagged catalogue of awkward graphs, for parity, permutation and batching tests.

Every case carries ``node.h`` ``(N, feat_dim)`` and ``edge.e`` ``(E, edge_dim)`` drawn from
a seeded generator, so the same arguments give the same tensors on every machine::

    from graphdl.testing.graph_cases import graph_cases

    @pytest.mark.parametrize("name, g", graph_cases())
    def test_matches_pyg(name, g): ...

    graph_cases("self_loop")                       # cases having every tag asked for
    graph_cases(exclude=("zero_in_degree",))       # e.g. for layers that need in-edges

Tags describing structure (``self_loop``, ``multi_edge``, ``isolated``, ``zero_in_degree``,
``no_edges``, ``symmetric``, ``directed``, ``batch``, ``single_node``, ``empty``) are exactly
what :func:`structural_tags` computes; the others (``bipartite``, ``random``,
``high_degree``) say how a case was built. ``CASE_TAGS`` lists every case's tags.

:func:`permute_graph` relabels nodes and returns the node and edge permutations needed
to compare a model's outputs on the two graphs.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from graphdl.data.graph import Graph, collate
from graphdl.errors import DataError

__all__ = [
    "CASE_TAGS",
    "PermutedGraph",
    "graph_cases",
    "permute_graph",
    "random_graph",
    "random_node_permutation",
    "structural_tags",
]


# ---------------------------------------------------------------------- random graphs
def random_graph(
    num_nodes: int,
    num_edges: int,
    feat_dim: int = 8,
    edge_dim: int = 3,
    seed: int = 0,
    self_loops: bool = True,
    multi_edges: bool = True,
    isolated: bool = True,
    dtype: torch.dtype = torch.float64,
    *,
    with_pos: bool = False,
) -> Graph:
    """A random directed graph with exactly ``num_edges`` edges, deterministic in ``seed``.

    Each flag set to ``True`` makes the graph contain at least one such feature where the
    sizes allow it (a self-loop and a duplicated edge need an edge each, an isolated node
    needs two nodes); ``False`` rules it out: no self-loops, no parallel edges, or every
    node on at least one edge. Asking for the impossible (``isolated=False`` with too few
    edges, ``multi_edges=False`` with more edges than node pairs) raises ``ValueError``.

    Fields: ``node.h`` ``(N, feat_dim)``, ``edge.e`` ``(E, edge_dim)``, standard normal;
    ``node.pos`` ``(N, 3)`` with ``with_pos``.
    """
    n, e = int(num_nodes), int(num_edges)
    if n < 0 or e < 0:
        raise ValueError(f"num_nodes and num_edges must be >= 0, found {n} and {e}")
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n, generator=gen)
    n_iso = max(1, n // 8) if isolated and n >= 2 else 0
    active = order[n_iso:]
    m = active.numel()
    if e and m == 0:
        raise ValueError(f"a graph with {n} nodes cannot hold {e} edges")
    if e and m == 1 and not self_loops:
        raise ValueError(f"{e} edges on one non-isolated node need self_loops=True")

    edges: list[tuple[int, int]] = []
    a = active.tolist()
    if not isolated and m:
        need = math.ceil(m / 2)
        if e < need:
            raise ValueError(
                f"isolated=False: {m} nodes need at least {need} edges to all be covered, found {e}"
            )
        edges += [(a[i], a[i + 1]) for i in range(0, m - 1, 2)]
        if m % 2:
            edges.append((a[-1], a[0]) if m > 1 else (a[0], a[0]))
    has_loop = any(s == d for s, d in edges)
    if self_loops and not has_loop and len(edges) < e:
        v = a[int(torch.randint(m, (), generator=gen))]
        edges.append((v, v))
    if not multi_edges:
        capacity = m * (m - 1) + (m if self_loops else 0)
        if e > capacity:
            raise ValueError(
                f"multi_edges=False: {m} nodes hold at most {capacity} distinct edges, asked {e}"
            )
        edges += _distinct_edges(active, e - len(edges), set(edges), self_loops, gen)
    else:
        if len(edges) < e and e >= 2:
            if not edges:
                edges += _random_edges(active, 1, self_loops, gen)
            edges.append(edges[int(torch.randint(len(edges), (), generator=gen))])
        edges += _random_edges(active, e - len(edges), self_loops, gen)
    edge_index = torch.tensor(edges, dtype=torch.long).reshape(-1, 2).t()
    fields = {
        "node.h": torch.randn(n, feat_dim, generator=gen, dtype=dtype),
        "edge.e": torch.randn(e, edge_dim, generator=gen, dtype=dtype),
    }
    if with_pos:
        fields["node.pos"] = torch.randn(n, 3, generator=gen, dtype=dtype)
    return Graph(edge_index, n, fields)


def _random_edges(active: Tensor, k: int, self_loops: bool, gen: torch.Generator) -> list[tuple[int, int]]:
    if k <= 0:
        return []
    m = active.numel()
    i = torch.randint(m, (k,), generator=gen)
    if self_loops or m == 1:
        j = torch.randint(m, (k,), generator=gen)
    else:  # a uniform other node: shift by 1..m-1
        j = (i + 1 + torch.randint(m - 1, (k,), generator=gen)) % m
    return list(zip(active[i].tolist(), active[j].tolist()))


def _distinct_edges(
    active: Tensor, k: int, taken: set, self_loops: bool, gen: torch.Generator
) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    taken = set(taken)
    while len(out) < k:
        for s, d in _random_edges(active, 2 * (k - len(out)) + 8, self_loops, gen):
            if (s, d) not in taken:
                taken.add((s, d))
                out.append((s, d))
                if len(out) == k:
                    break
    return out


# -------------------------------------------------------------------------------- tags
def structural_tags(g: Graph) -> set[str]:
    """The structural tags of ``g`` (see the module docstring); a data utility, it syncs."""
    tags = set()
    n, ei = g.num_nodes, g.edge_index
    if n == 0:
        tags.add("empty")
    if n == 1 and g.num_graphs == 1:
        tags.add("single_node")
    if g.num_graphs > 1:
        tags.add("batch")
    if g.num_edges == 0:
        tags.add("no_edges")
    if bool((ei[0] == ei[1]).any()):
        tags.add("self_loop")
    key = ei[0] * max(n, 1) + ei[1]
    if torch.unique(key).numel() < key.numel():
        tags.add("multi_edge")
    touched = torch.zeros(n, dtype=torch.bool)
    touched[ei.reshape(-1)] = True
    if not bool(touched.all()):
        tags.add("isolated")
    if n and bool((torch.bincount(ei[1], minlength=n) == 0).any()):
        tags.add("zero_in_degree")
    if g.num_edges:
        rkey = ei[1] * max(n, 1) + ei[0]
        tags.add("symmetric" if torch.equal(key.sort().values, rkey.sort().values) else "directed")
    return tags


# ---------------------------------------------------------------------------- catalogue
def _fixed(n: int, edges: list[tuple[int, int]]) -> Callable[..., Graph]:
    def build(feat_dim, edge_dim, gen, dtype, with_pos):
        return _with_fields(
            torch.tensor(edges, dtype=torch.long).reshape(-1, 2).t(),
            n,
            feat_dim,
            edge_dim,
            gen,
            dtype,
            with_pos,
        )

    return build


def _with_fields(edge_index, n, feat_dim, edge_dim, gen, dtype, with_pos) -> Graph:
    fields = {
        "node.h": torch.randn(n, feat_dim, generator=gen, dtype=dtype),
        "edge.e": torch.randn(edge_index.size(1), edge_dim, generator=gen, dtype=dtype),
    }
    if with_pos:
        fields["node.pos"] = torch.randn(n, 3, generator=gen, dtype=dtype)
    return Graph(edge_index, n, fields)


def _random_mixed(feat_dim, edge_dim, gen, dtype, with_pos):
    seed = int(torch.randint(2**31 - 1, (), generator=gen))
    return random_graph(13, 30, feat_dim, edge_dim, seed, dtype=dtype, with_pos=with_pos)


def _batch(feat_dim, edge_dim, gen, dtype, with_pos):
    parts = [
        _fixed(4, [(0, 1), (1, 2), (2, 0), (3, 3)]),  # triangle + a node with only a self-loop
        _fixed(3, []),  # no edges
        _fixed(1, []),  # a single node
        _fixed(5, [(0, 1), (0, 1), (1, 2), (3, 2), (2, 2)]),  # multi-edge, self-loop, isolated node 4
        _random_mixed,
    ]
    return collate([p(feat_dim, edge_dim, gen, dtype, with_pos) for p in parts])


_RING5 = [(i, (i + 1) % 5) for i in range(5)]

_CASES: dict[str, tuple[frozenset[str], Callable[..., Graph]]] = {
    "isolated_nodes": (
        frozenset({"isolated", "zero_in_degree", "directed"}),
        _fixed(6, [(0, 1), (1, 2), (2, 0), (3, 0), (1, 3)]),
    ),
    "self_loops": (
        frozenset({"self_loop", "directed"}),
        _fixed(4, [(0, 0), (1, 1), (0, 1), (1, 2), (2, 3), (3, 3), (3, 0)]),
    ),
    "multi_edges": (
        frozenset({"multi_edge", "directed"}),
        _fixed(4, [(0, 1), (0, 1), (0, 1), (1, 2), (2, 1), (2, 3), (3, 0), (3, 0)]),
    ),
    "no_edges": (frozenset({"no_edges", "isolated", "zero_in_degree"}), _fixed(5, [])),
    "single_node": (
        frozenset({"single_node", "no_edges", "isolated", "zero_in_degree"}),
        _fixed(1, []),
    ),
    "single_node_self_loop": (frozenset({"single_node", "self_loop", "symmetric"}), _fixed(1, [(0, 0)])),
    "bipartite": (
        frozenset({"bipartite", "directed", "zero_in_degree"}),
        _fixed(7, [(0, 3), (0, 4), (1, 4), (1, 5), (2, 6), (2, 3), (0, 6)]),
    ),
    "star": (
        frozenset({"high_degree", "directed", "zero_in_degree"}),
        _fixed(10, [(i, 0) for i in range(1, 10)] + [(0, 1)]),
    ),
    "undirected_ring": (
        frozenset({"symmetric"}),
        _fixed(5, _RING5 + [(d, s) for s, d in _RING5] + [(0, 2), (2, 0)]),
    ),
    "random_mixed": (
        frozenset({"random", "self_loop", "multi_edge", "isolated", "zero_in_degree", "directed"}),
        _random_mixed,
    ),
    "batch": (
        frozenset({"batch", "self_loop", "multi_edge", "isolated", "zero_in_degree", "directed", "random"}),
        _batch,
    ),
    "empty": (frozenset({"empty", "no_edges"}), _fixed(0, [])),
}

CASE_TAGS: dict[str, frozenset[str]] = {name: tags for name, (tags, _) in _CASES.items()}
"""Tags of every case, by name."""


def graph_cases(
    tags: str | Iterable[str] | None = None,
    feat_dim: int = 8,
    edge_dim: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    *,
    exclude: str | Iterable[str] = (),
    include_empty: bool = False,
    with_pos: bool = False,
) -> list[tuple[str, Graph]]:
    """``[(name, graph), ...]`` of the catalogue's cases, in a fixed order.

    Cases: ``isolated_nodes``, ``self_loops``, ``multi_edges``, ``no_edges``, ``single_node``,
    ``single_node_self_loop``, ``bipartite`` (sources -> sinks), ``star`` (one node with
    in-degree 9), ``undirected_ring`` (both directions), ``random_mixed`` (self-loops,
    parallel edges and isolated nodes at once), ``batch`` (five graphs, one without edges,
    one a single node) and, with ``include_empty``, ``empty`` (no nodes at all).

    Args:
        tags: keep the cases that carry every tag given (``None``: all).
        feat_dim, edge_dim: widths of ``node.h`` and ``edge.e``.
        seed: features (and the random cases' structure) depend only on ``seed`` and the
            case's name, so adding cases never changes existing ones.
        dtype: dtype of the float fields (float64 by default, so parity tests can compare at
            round-off level, ~1e-12).
        exclude: drop the cases carrying any of these tags.
        include_empty: include ``empty`` (0 nodes), which many layers need not accept.
        with_pos: add ``node.pos`` ``(N, 3)`` for geometric models.
    """
    want = {tags} if isinstance(tags, str) else set(tags or ())
    drop = {exclude} if isinstance(exclude, str) else set(exclude)
    known = set().union(*CASE_TAGS.values())
    for t in want | drop:
        if t not in known:
            raise DataError(f"unknown graph case tag `{t}`; known tags: {', '.join(sorted(known))}")
    out = []
    for name, (case_tags, build) in _CASES.items():
        if name == "empty" and not include_empty:
            continue
        if not want <= case_tags or drop & case_tags:
            continue
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
        out.append((name, build(feat_dim, edge_dim, gen, dtype, with_pos)))
    return out


# ------------------------------------------------------------------------ permutations
class PermutedGraph(NamedTuple):
    """A relabelled graph and how to line up outputs with the original's.

    ``graph``'s node ``i`` is the original node ``node_perm[i]`` and its edge ``k`` the
    original edge ``edge_perm[k]``, so a permutation-equivariant model satisfies
    ``f(graph)[node field] == f(g)[node field][node_perm]`` (edges: ``[edge_perm]``), and an
    invariant one ``f(graph)[graph field] == f(g)[graph field]``.
    """

    graph: Graph
    node_perm: Tensor
    edge_perm: Tensor


def permute_graph(g: Graph, perm: Tensor) -> PermutedGraph:
    """Relabel the nodes of ``g``: new node ``i`` is old node ``perm[i]``.

    Node fields are permuted, edges renumbered and re-sorted by destination (edge fields
    with them), graph fields kept. In a batch, ``perm`` must keep every node in its graph
    (:func:`random_node_permutation` draws such permutations).
    """
    n = g.num_nodes
    perm = torch.as_tensor(perm, dtype=torch.long, device=g.device)
    if perm.shape != (n,) or not torch.equal(perm.sort().values, torch.arange(n, device=g.device)):
        raise DataError(
            f"perm must be a permutation of 0..{n - 1} with shape ({n},), found shape {tuple(perm.shape)}"
        )
    batch = g.batch[perm]
    if g.num_graphs > 1 and not torch.equal(batch, g.batch):
        raise DataError(
            "perm moves nodes between graphs of the batch; permute within each graph "
            "(graphdl.testing.graph_cases.random_node_permutation does)"
        )
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n, device=g.device)
    ei = inv[g.edge_index]
    edge_perm = torch.sort(ei[1] * max(n, 1) + ei[0], stable=True).indices
    fields = {}
    for k, v in g.fields.items():
        space = k.split(".", 1)[0]
        fields[k] = v[perm] if space == "node" else v[edge_perm] if space == "edge" else v
    new = Graph(ei[:, edge_perm], n, fields, batch=batch, num_graphs=g.num_graphs, sort=False, validate=False)
    return PermutedGraph(new, perm, edge_perm)


def random_node_permutation(g: Graph, seed: int = 0) -> Tensor:
    """A random ``(N,)`` node permutation of ``g`` that keeps each node in its own graph."""
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.rand(g.num_nodes, generator=gen, dtype=torch.float64).to(g.device)
    return torch.argsort(g.batch.to(torch.float64) + noise)
