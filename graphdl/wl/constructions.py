"""Graph constructions behind the WL pair families (networkx graphs, generated, no download).

* circular skip link graphs ``csl_graph`` (Murphy et al. 2019);
* strongly regular graphs: rook's graph, Shrikhande, triangular graphs ``T(m)`` and the
  three Chang graphs (Seidel switches of ``T(8)``), Paley graphs ``P(q)`` for ``q = p`` and
  ``p²``, Latin square graphs of group tables and of a non-group square of order 5, with
  :func:`srg_parameters` to check them;
* Cai-Fürer-Immerman graphs ``cfi_graph(base, twisted)``;
* ladders (prism / Möbius), disjoint unions of cycles, random regular graphs from a seeded
  numpy generator (stable across networkx versions).
"""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np

from graphdl.errors import DataError


# --------------------------------------------------------------------------- cycles
def csl_graph(n: int, skip: int) -> nx.Graph:
    """Circular skip link graph ``C_{n,skip}``: the cycle ``0..n-1`` plus chords ``i ~ i+skip mod n``.

    4-regular when ``2 <= skip < n/2``; so all CSL graphs of one ``n`` look alike to 1-WL.
    """
    if not 2 <= skip < n / 2:
        raise DataError(f"CSL skip length must be in [2, n/2), found {skip} for n={n}")
    G = nx.cycle_graph(n)
    G.add_edges_from((i, (i + skip) % n) for i in range(n))
    return G


def cycles(*lengths: int) -> nx.Graph:
    """Disjoint union of cycles of the given lengths (nodes ``0..sum-1``)."""
    G = nx.Graph()
    off = 0
    for m in lengths:
        G.add_edges_from((off + i, off + (i + 1) % m) for i in range(m))
        off += m
    return G


def prism_graph(m: int) -> nx.Graph:
    """Circular ladder (``m``-gonal prism): two ``m``-cycles joined by rungs; cubic, ``2m`` nodes."""
    G = cycles(m, m)
    G.add_edges_from((i, m + i) for i in range(m))
    return G


def mobius_ladder(m: int) -> nx.Graph:
    """Möbius ladder on ``2m`` nodes: a ``2m``-cycle plus the ``m`` long diagonals; cubic."""
    G = nx.cycle_graph(2 * m)
    G.add_edges_from((i, i + m) for i in range(m))
    return G


def random_regular(n: int, d: int, rng: np.random.Generator, max_tries: int = 10_000) -> nx.Graph:
    """A uniformly random simple ``d``-regular graph on ``n`` nodes (pairing model, rejection)."""
    if (n * d) % 2 or d >= n:
        raise DataError(f"no simple {d}-regular graph on {n} nodes (need n*d even and d < n)")
    points = np.repeat(np.arange(n), d)
    for _ in range(max_tries):
        p = rng.permutation(points).reshape(-1, 2)
        if (p[:, 0] == p[:, 1]).any():
            continue
        key = np.sort(p, axis=1)
        if len(np.unique(key[:, 0] * n + key[:, 1])) != len(key):
            continue
        G = nx.Graph()
        G.add_nodes_from(range(n))
        G.add_edges_from(map(tuple, key.tolist()))
        return G
    raise DataError(f"could not draw a simple {d}-regular graph on {n} nodes in {max_tries} tries")


# --------------------------------------------------------------- strongly regular
def srg_parameters(G: nx.Graph) -> tuple[int, int, int, int] | None:
    """``(n, k, λ, μ)`` when ``G`` is strongly regular (checked on ``A²``), else None."""
    A = nx.to_numpy_array(G, nodelist=sorted(G.nodes, key=str), dtype=np.int64)
    n = len(A)
    deg = A.sum(1)
    if n < 2 or (deg != deg[0]).any() or np.trace(A):
        return None
    k = int(deg[0])
    A2 = A @ A
    off = ~np.eye(n, dtype=bool)
    lam = A2[(A == 1) & off]
    mu = A2[(A == 0) & off]
    if len(lam) == 0 or len(mu) == 0 or (lam != lam[0]).any() or (mu != mu[0]).any():
        return None
    return n, k, int(lam[0]), int(mu[0])


def rook_graph(m: int = 4) -> nx.Graph:
    """``m × m`` rook's graph ``K_m □ K_m``: srg(m², 2(m-1), m-2, 2)."""
    G = nx.Graph()
    cells = [(r, c) for r in range(m) for c in range(m)]
    G.add_nodes_from(cells)
    G.add_edges_from((a, b) for a, b in itertools.combinations(cells, 2) if a[0] == b[0] or a[1] == b[1])
    return nx.convert_node_labels_to_integers(G)


def shrikhande_graph() -> nx.Graph:
    """Cayley graph of Z4×Z4 with connection set ±(0,1), ±(1,0), ±(1,1): srg(16, 6, 2, 2)."""
    G = nx.Graph()
    for a in range(4):
        for b in range(4):
            for da, db in ((0, 1), (1, 0), (1, 1)):
                G.add_edge(4 * a + b, 4 * ((a + da) % 4) + (b + db) % 4)
    return G


def triangular_graph(m: int) -> nx.Graph:
    """``T(m)``: the line graph of ``K_m`` (nodes = 2-subsets): srg(m(m-1)/2, 2(m-2), m-2, 4)."""
    pairs = list(itertools.combinations(range(m), 2))
    G = nx.Graph()
    G.add_nodes_from(pairs)
    G.add_edges_from((a, b) for a, b in itertools.combinations(pairs, 2) if set(a) & set(b))
    return G


def seidel_switch(G: nx.Graph, subset) -> nx.Graph:
    """Toggle every adjacency between ``subset`` and the rest of the nodes."""
    S = set(subset)
    H = G.copy()
    for u in S:
        for v in G.nodes:
            if v not in S:
                if H.has_edge(u, v):
                    H.remove_edge(u, v)
                else:
                    H.add_edge(u, v)
    return H


def chang_graphs() -> list[nx.Graph]:
    """The three Chang graphs: ``T(8)`` switched w.r.t. the edges of a perfect matching, of an
    8-cycle, and of a triangle plus a disjoint 5-cycle of ``K_8``; all srg(28, 12, 6, 4)."""
    T = triangular_graph(8)

    def cyc(*vs):
        return [tuple(sorted((vs[i], vs[(i + 1) % len(vs)]))) for i in range(len(vs))]

    switches = [
        [(0, 1), (2, 3), (4, 5), (6, 7)],
        cyc(*range(8)),
        cyc(0, 1, 2) + cyc(3, 4, 5, 6, 7),
    ]
    return [nx.convert_node_labels_to_integers(seidel_switch(T, s), ordering="sorted") for s in switches]


def _gf_p2(p: int):
    """Elements of GF(p²) as pairs (a, b) = a + bα with α² = r, r a non-residue mod p."""
    squares = {(x * x) % p for x in range(1, p)}
    r = next(x for x in range(2, p) if x not in squares)

    def mul(x, y):
        return ((x[0] * y[0] + r * x[1] * y[1]) % p, (x[0] * y[1] + x[1] * y[0]) % p)

    return [(a, b) for a in range(p) for b in range(p)], mul


def paley_graph(q: int) -> nx.Graph:
    """Paley graph ``P(q)`` for a prime ``q`` or ``q = p²`` with ``q ≡ 1 (mod 4)``:
    ``x ~ y`` when ``x - y`` is a non-zero square; srg(q, (q-1)/2, (q-5)/4, (q-1)/4)."""
    if q % 4 != 1:
        raise DataError(f"Paley graphs need q ≡ 1 (mod 4), found {q}")
    p = round(q ** 0.5)
    if p * p == q and _is_prime(p):
        elems, mul = _gf_p2(p)
        squares = {mul(x, x) for x in elems if x != (0, 0)}
        index = {x: i for i, x in enumerate(elems)}
        G = nx.Graph()
        G.add_nodes_from(range(q))
        for x in elems:
            for y in elems:
                d = ((x[0] - y[0]) % p, (x[1] - y[1]) % p)
                if d in squares:
                    G.add_edge(index[x], index[y])
        return G
    if not _is_prime(q):
        raise DataError(f"paley_graph supports q = p or p² for an odd prime p, found {q}")
    squares = {(x * x) % q for x in range(1, q)}
    G = nx.Graph()
    G.add_nodes_from(range(q))
    G.add_edges_from((x, y) for x in range(q) for y in range(x + 1, q) if (y - x) % q in squares)
    return G


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def latin_square_graph(square) -> nx.Graph:
    """Latin square graph of an ``m × m`` Latin square: the ``m²`` cells, adjacent when they share
    a row, a column or a symbol; srg(m², 3(m-1), m, 6)."""
    L = np.asarray(square)
    m = len(L)
    if L.shape != (m, m) or any(sorted(row) != list(range(m)) for row in L.tolist()) or \
            any(sorted(col) != list(range(m)) for col in L.T.tolist()):
        raise DataError("not a Latin square on symbols 0..m-1")
    G = nx.Graph()
    cells = [(r, c) for r in range(m) for c in range(m)]
    G.add_nodes_from(range(m * m))
    for (i, a), (j, b) in itertools.combinations(enumerate(cells), 2):
        if a[0] == b[0] or a[1] == b[1] or L[a] == L[b]:
            G.add_edge(i, j)
    return G


def group_table(name: str) -> np.ndarray:
    """Cayley table (a Latin square) of a small group: ``Z<n>``, ``Z2xZ2xZ2``, ``Z4xZ2``,
    ``S3``, ``D4`` (order 8) or ``Q8``."""
    if name.startswith("Z") and name[1:].isdigit():
        n = int(name[1:])
        return np.add.outer(np.arange(n), np.arange(n)) % n
    if name in ("Z2xZ2xZ2", "Z4xZ2"):
        mods = (2, 2, 2) if name == "Z2xZ2xZ2" else (4, 2)
        elems = list(itertools.product(*[range(m) for m in mods]))
        index = {e: i for i, e in enumerate(elems)}
        return np.array([[index[tuple((a + b) % m for a, b, m in zip(x, y, mods))] for y in elems] for x in elems])
    if name in ("S3", "D4"):  # dihedral groups of the triangle (S3) and the square: (rotation, flip)
        n = 3 if name == "S3" else 4
        elems = [(r, f) for f in range(2) for r in range(n)]
        index = {e: i for i, e in enumerate(elems)}

        def mul(x, y):  # (r1, f1)(r2, f2) = (r1 + (-1)^f1 r2, f1 + f2)
            return ((x[0] + (-1) ** x[1] * y[0]) % n, (x[1] + y[1]) % 2)

        return np.array([[index[mul(x, y)] for y in elems] for x in elems])
    if name == "Q8":  # quaternions ±1, ±i, ±j, ±k as (sign, unit), unit 0..3 = 1, i, j, k
        # products of units as (sign, unit): i² = j² = k² = -1, ij = k, jk = i, ki = j, ji = -k, ...
        table = {(1, 1): (-1, 0), (1, 2): (1, 3), (1, 3): (-1, 2), (2, 1): (-1, 3), (2, 2): (-1, 0),
                 (2, 3): (1, 1), (3, 1): (1, 2), (3, 2): (-1, 1), (3, 3): (-1, 0)}
        elems = [(s, u) for s in (1, -1) for u in range(4)]
        index = {e: i for i, e in enumerate(elems)}

        def qmul(x, y):
            if x[1] == 0 or y[1] == 0:
                return (x[0] * y[0], x[1] + y[1])
            s, u = table[(x[1], y[1])]
            return (x[0] * y[0] * s, u)

        return np.array([[index[qmul(x, y)] for y in elems] for x in elems])
    raise DataError(f"unknown group `{name}`; known: Z<n>, Z2xZ2xZ2, Z4xZ2, S3, D4, Q8")


LATIN5_NONGROUP = np.array([
    [0, 1, 2, 3, 4],
    [1, 0, 3, 4, 2],
    [2, 3, 4, 0, 1],
    [3, 4, 1, 2, 0],
    [4, 2, 0, 1, 3],
])
"""A Latin square of order 5 with a 2×2 subsquare, so not isotopic to the cyclic group
table (groups of odd order have none): the second main class of order 5."""


# ------------------------------------------------------------------------------ CFI
def cfi_graph(base: nx.Graph, twisted: bool = False) -> nx.Graph:
    """The Cai-Fürer-Immerman graph over ``base`` (uncoloured), optionally twisted.

    Each base vertex ``v`` with incident edges ``E(v)`` becomes a gadget: *middle* vertices
    ``m(v, S)`` for every even-size ``S ⊆ E(v)`` and *end* vertices ``a(v, e, b)`` for
    ``e ∈ E(v)``, ``b ∈ {0, 1}``, with ``m(v, S) ~ a(v, e, [e ∈ S])``. Each base edge
    ``e = uv`` joins ``a(u, e, b) ~ a(v, e, b)``; the twisted graph crosses these two links
    (``b ~ 1-b``) on one edge. Over a connected base the two graphs are not isomorphic, and
    k-WL does not tell them apart when ``base`` has treewidth >= k (CFI 1992; Dawar &
    Richerby 2007) — with 2-FWL ≡ 3-WL, a base of treewidth 3 such as ``K4`` defeats 3-WL.
    Size: ``Σ_v (2^(d(v)-1) + 2 d(v))`` nodes.
    """
    if base.number_of_nodes() == 0 or not nx.is_connected(base):
        raise DataError("the CFI base graph must be connected and non-empty")
    edges = [tuple(sorted(e, key=str)) for e in base.edges()]
    G = nx.Graph()
    for v in base.nodes:
        inc = [e for e in edges if v in e]
        for size in range(0, len(inc) + 1, 2):
            for S in itertools.combinations(inc, size):
                m = ("m", v, S)
                G.add_node(m)
                for e in inc:
                    G.add_edge(m, ("a", v, e, int(e in S)))
    for i, e in enumerate(edges):
        u, v = e
        for b in (0, 1):
            G.add_edge(("a", u, e, b), ("a", v, e, (1 - b) if (twisted and i == 0) else b))
    return nx.convert_node_labels_to_integers(G)  # insertion order: deterministic
