"""Graph-pair families for WL expressiveness checks, generated (nothing is downloaded).

Every family returns a list of :class:`PairCase` ``(g1, g2, meta)``: two graphdl ``Graph``
objects (edges in both directions, node field ``node.x``: ``(N, 1)`` ones for unlabelled
graphs, else the one-hot of the node label over the family's vocabulary ``meta["vocab"]``)
and a ``meta`` dict with

* ``name``: the pair's name; ``family``; ``nodes``: ``(n1, n2)``;
* ``expected``: the verdict each test is known to give — ``wl1`` (1-WL, colour refinement)
  and ``wl3`` (3-WL, computed as the equivalent 2-FWL), sometimes ``wl4`` (3-FWL), and for
  the aggregator family ``sum`` / ``mean`` / ``max`` (GNNs aggregating and reading out with
  that function); ``True`` = separates;
* ``isomorphic``: whether the two graphs are isomorphic, and construction details.

Families (``FAMILIES``; sizes with default parameters):

========== ===== ============================================================== ==== ====
name       pairs what                                                           1-WL 3-WL
========== ===== ============================================================== ==== ====
csl        45    circular skip link graphs C(41, s), s ∈ {2,3,4,5,6,9,11,12,13,16}  0   45
srg        10    strongly regular pairs with equal parameters                      0    0
cfi        6     CFI graph vs its twist over K3, C4, K4, K3,3, Q3, Petersen        0    2
molecular  6     decalin / bicyclopentyl and other 1-WL-equivalent molecules       0    6
regular    11    regular pairs: cycles, prism/Möbius, Petersen, random cubic       0   11
3wl        9     1-WL-equivalent pairs 3-WL separates (5) and does not (4)          0    5
random     24    random pairs: one edge added / relabelled copy / random regular   8    16
aggregators 12   node-labelled pairs for sum > mean > max (Xu et al. 2019)        12   12
========== ===== ============================================================== ==== ====

A file of user pairs (one pair per line: two graph6 strings, ``#`` comments) loads with
:func:`read_pair_file`; :func:`load_pairs` takes a family name or such a path.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from fractions import Fraction
from typing import Any, NamedTuple

import networkx as nx
import numpy as np
import torch
from pydantic import ConfigDict, ValidationError, validate_call

from graphdl.data.graph import Graph
from graphdl.errors import DataError, did_you_mean
from graphdl.wl import constructions as C
from graphdl.wl._convert import graph_from_networkx, graph_to_networkx
from graphdl.wl._labels import label_key
from graphdl.wl._smiles import smiles_to_networkx


class PairCase(NamedTuple):
    """One pair: ``g1``, ``g2`` (graphdl ``Graph``) and ``meta`` (see the module docstring)."""

    g1: Graph
    g2: Graph
    meta: dict


FAMILIES: dict[str, Callable[..., list[PairCase]]] = {}
"""Built-in families by name: ``FAMILIES[name](seed=0, **params) -> list[PairCase]``."""


def _family(name: str):
    def deco(fn):
        checked = validate_call(config=ConfigDict(arbitrary_types_allowed=True))(fn)
        checked.family_name = name
        FAMILIES[name] = checked
        return checked

    return deco


class _Builder:
    """Collects networkx pairs, then converts all with one label vocabulary (shared ``node.x`` width)."""

    def __init__(self, family: str, labelled: bool = False):
        self.family, self.labelled = family, labelled
        self.raw: list[tuple[Any, Any, dict]] = []
        self._cache: dict[int, Graph] = {}

    def add(self, name: str, G1, G2, expected: dict, isomorphic: bool = False, **info) -> None:
        meta = {"name": name, "family": self.family, "nodes": (G1.number_of_nodes(), G2.number_of_nodes()),
                "expected": dict(expected), "isomorphic": isomorphic, **info}
        self.raw.append((G1, G2, meta))

    def build(self) -> list[PairCase]:
        vocab = None
        if self.labelled:  # one entry per label value (compared by value), in key order
            labels = {label_key(d.get("label", "")): d.get("label", "")
                      for G1, G2, _ in self.raw for G in (G1, G2) for _, d in G.nodes(data=True)}
            vocab = [labels[k] for k in sorted(labels)]
        out = []
        for G1, G2, meta in self.raw:
            if vocab is not None:
                meta["vocab"] = vocab
            out.append(PairCase(self._convert(G1, vocab), self._convert(G2, vocab), meta))
        return out

    def _convert(self, G, vocab) -> Graph:
        # a graph used by several pairs becomes one Graph object (joint WL work is shared)
        if id(G) not in self._cache:
            self._cache[id(G)] = graph_from_networkx(G, vocab)
        return self._cache[id(G)]


# ------------------------------------------------------------------------------ CSL
CSL_SKIPS = (2, 3, 4, 5, 6, 9, 11, 12, 13, 16)


@_family("csl")
def csl_pairs(n: int = 41, skips: tuple[int, ...] = CSL_SKIPS, seed: int = 0) -> list[PairCase]:
    """Circular skip link graphs (Murphy et al. 2019; Dwivedi et al. benchmark): every pair of
    different skip lengths. All are 4-regular on ``n`` nodes (1-WL: no); with ``n`` prime
    ``C(n, s) ≅ C(n, s')`` only when ``s' ≡ ±s^{±1}``, which no two default skips satisfy,
    and 2-FWL separates every pair."""
    b = _Builder("csl")
    graphs = {s: C.csl_graph(n, s) for s in skips}
    for s, t in itertools.combinations(skips, 2):
        b.add(f"csl{n}_s{s}_vs_s{t}", graphs[s], graphs[t], {"wl1": False, "wl3": True}, skips=(s, t))
    return b.build()


# ------------------------------------------------------------------------------ SRG
SRG_PAIRS = ("rook_shrikhande", "rook_shrikhande_complement", "chang", "paley25_latin5", "latin_groups")


@_family("srg")
def srg_pairs(
    include: tuple[str, ...] = SRG_PAIRS,
    latin_groups: tuple[tuple[str, ...], ...] = (("Z6", "S3"),),
    seed: int = 0,
) -> list[PairCase]:
    """Non-isomorphic strongly regular graphs with equal parameters ``(n, k, λ, μ)``: 2-FWL
    (≡ 3-WL) gives every vertex pair of an SRG a colour fixed by adjacency and the
    parameters, so it separates none of them (1-WL neither: they are regular).

    * ``rook_shrikhande``: 4×4 rook's graph vs Shrikhande, srg(16,6,2,2) (and
      ``..._complement``: srg(16,9,4,6));
    * ``chang``: ``T(8)`` and the three Chang graphs, srg(28,12,6,4), all 6 pairs;
    * ``paley25_latin5``: Paley(25) (= Latin square graph of Z5) vs the Latin square graph of
      the non-group square of order 5, srg(25,12,5,6);
    * ``latin_groups``: Latin square graphs of Cayley tables of non-isomorphic groups of one
      order (default Z6 vs S3, srg(36,15,6,6)); for order >= 5 the Latin square graph
      determines the square up to main class, and group tables of non-isomorphic groups are
      not main-class equivalent, so the graphs are not isomorphic.

    Parameters are checked on ``A²`` when the family is built.
    """
    b = _Builder("srg")
    bad = [x for x in include if x not in SRG_PAIRS]
    if bad:
        raise DataError(f"srg: unknown pair kind `{bad[0]}`{did_you_mean(bad[0], SRG_PAIRS)}")
    exp = {"wl1": False, "wl3": False}

    def add(name, G1, G2, wl4=None, **info):
        p1, p2 = C.srg_parameters(G1), C.srg_parameters(G2)
        if p1 is None or p1 != p2:
            raise DataError(f"srg: `{name}` is not a pair of SRGs with equal parameters ({p1} vs {p2})")
        b.add(name, G1, G2, exp if wl4 is None else {**exp, "wl4": wl4}, srg=p1, **info)

    if "rook_shrikhande" in include:  # the rook's graph has 4-cliques, Shrikhande none: 4-WL sees it
        add("rook4x4_vs_shrikhande", C.rook_graph(4), C.shrikhande_graph(), wl4=True)
    if "rook_shrikhande_complement" in include:
        add("co_rook4x4_vs_co_shrikhande", nx.complement(C.rook_graph(4)), nx.complement(C.shrikhande_graph()))
    if "chang" in include:
        gs = [("T8", C.triangular_graph(8))] + [(f"chang{i + 1}", g) for i, g in enumerate(C.chang_graphs())]
        gs = [(n, nx.convert_node_labels_to_integers(g)) for n, g in gs]
        for (n1, g1), (n2, g2) in itertools.combinations(gs, 2):
            add(f"{n1}_vs_{n2}", g1, g2, wl4=True if n1 == "T8" else None)
    if "paley25_latin5" in include:
        add("paley25_vs_latin5", C.paley_graph(25), C.latin_square_graph(C.LATIN5_NONGROUP))
    if "latin_groups" in include:
        for groups in latin_groups:
            graphs = [(g, C.latin_square_graph(C.group_table(g))) for g in groups]
            for (n1, g1), (n2, g2) in itertools.combinations(graphs, 2):
                add(f"latin_{n1}_vs_latin_{n2}", g1, g2, groups=(n1, n2))
    return b.build()


# ------------------------------------------------------------------------------ CFI
CFI_BASES: dict[str, tuple[Callable[[], nx.Graph], int]] = {
    "K3": (lambda: nx.complete_graph(3), 2),
    "C4": (lambda: nx.cycle_graph(4), 2),
    "C5": (lambda: nx.cycle_graph(5), 2),
    "K4": (lambda: nx.complete_graph(4), 3),
    "K33": (lambda: nx.complete_bipartite_graph(3, 3), 3),
    "Q3": (lambda: nx.hypercube_graph(3), 3),
    "petersen": (nx.petersen_graph, 4),
    "K5": (lambda: nx.complete_graph(5), 4),
}
"""Base graphs for CFI pairs with their treewidth."""


@_family("cfi")
def cfi_pairs(bases: tuple[str, ...] = ("K3", "C4", "K4", "K33", "Q3", "petersen"), seed: int = 0) -> list[PairCase]:
    """Cai-Fürer-Immerman graph vs its twisted version over each base graph. Not isomorphic;
    1-WL never separates them (identical local structure); 3-WL (2-FWL) separates them exactly
    when the base has treewidth <= 2 (K3, C4, C5), and 4-WL (3-FWL) over the treewidth-3 base
    K4 (recorded as ``wl4``)."""
    b = _Builder("cfi")
    for name in bases:
        if name not in CFI_BASES:
            raise DataError(f"cfi: unknown base graph `{name}`{did_you_mean(name, CFI_BASES)}")
        make, tw = CFI_BASES[name]
        base = make()
        exp = {"wl1": False, "wl3": tw <= 2}
        if name in ("K3", "C4", "K4"):
            exp["wl4"] = True
        b.add(f"cfi_{name}", C.cfi_graph(base), C.cfi_graph(base, twisted=True), exp, base=name, treewidth=tw)
    return b.build()


# ------------------------------------------------------------------------ molecular
MOLECULAR_PAIRS = (
    ("decalin_vs_bicyclopentyl", "C1CCC2CCCCC2C1", "C1CCC(C1)C1CCCC1"),
    ("dioxadecalin_vs_dioxabicyclopentyl", "O1OCC2COOCC2C1", "O1OCC(C1)C1COOC1"),
    ("diazadecalin_vs_diazabicyclopentyl", "C1CNC2NCCNC2N1", "C1CNC(N1)C1NCCN1"),
    ("bicyclooctane_vs_bicyclobutyl", "C1CC2CCCC2C1", "C1CC(C1)C1CCC1"),
    ("cyclohexane_vs_2cyclopropane", "C1CCCCC1", "C1CC1.C1CC1"),
    ("cyclooctane_vs_2cyclobutane", "C1CCCCCCC1", "C1CCC1.C1CCC1"),
)


@_family("molecular")
def molecular_pairs(seed: int = 0) -> list[PairCase]:
    """Molecules (heavy-atom graphs, element labels as ``node.x`` one-hot over C, N, O) that
    colour refinement cannot separate: decalin vs bicyclopentyl (two fused 6-rings vs two
    linked 5-rings), versions with O or N on matching positions, bicyclo[3.3.0]octane vs
    bicyclobutyl, and ring vs two rings. 3-WL separates all (it sees cycle lengths)."""
    b = _Builder("molecular", labelled=True)
    for name, s1, s2 in MOLECULAR_PAIRS:
        b.add(name, smiles_to_networkx(s1), smiles_to_networkx(s2), {"wl1": False, "wl3": True}, smiles=(s1, s2))
    return b.build()


# -------------------------------------------------------------------------- regular
def _random_separable_regular_pair(n: int, d: int, rng: np.random.Generator, tries: int = 200):
    """Two non-isomorphic random ``d``-regular graphs on ``n`` nodes that 2-FWL separates."""
    from graphdl.wl.kwl import kwl_distinguishes

    for _ in range(tries):
        g1, g2 = C.random_regular(n, d, rng), C.random_regular(n, d, rng)
        if not nx.is_isomorphic(g1, g2) and kwl_distinguishes(g1, g2, 2, folklore=True):
            return g1, g2
    raise DataError(f"could not draw two separable non-isomorphic {d}-regular graphs on {n} nodes")


@_family("regular")
def regular_pairs(
    cycle_lengths: tuple[int, ...] = (3, 4, 5),
    ladder_sizes: tuple[int, ...] = (3, 4, 5),
    petersen: bool = True,
    n_random: int = 4,
    random_nodes: int = 12,
    random_degree: int = 3,
    seed: int = 0,
) -> list[PairCase]:
    """Regular pairs of equal size and degree (1-WL: no; 3-WL: yes): ``C_{2m}`` vs two
    ``C_m`` (m = 3: hexagon vs two triangles), ``m``-prism vs Möbius ladder on ``2m`` nodes
    (m = 3: prism vs K3,3; m = 4: cube vs Wagner graph), Petersen vs pentagonal prism, and
    random ``d``-regular pairs (drawn with ``seed``, non-isomorphic, kept when 2-FWL separates)."""
    b = _Builder("regular")
    exp = {"wl1": False, "wl3": True}
    for m in cycle_lengths:
        b.add(f"C{2 * m}_vs_2C{m}", C.cycles(2 * m), C.cycles(m, m), exp, degree=2)
    for m in ladder_sizes:
        b.add(f"prism{m}_vs_mobius{2 * m}", C.prism_graph(m), C.mobius_ladder(m), exp, degree=3)
    if petersen:
        b.add("petersen_vs_prism5", nx.petersen_graph(), C.prism_graph(5), exp, degree=3)
    rng = np.random.default_rng(seed)
    for i in range(n_random):
        g1, g2 = _random_separable_regular_pair(random_nodes, random_degree, rng)
        b.add(f"random_regular_{i}", g1, g2, exp, degree=random_degree)
    return b.build()


# ------------------------------------------------------------------------------ 3wl
@_family("3wl")
def three_wl_pairs(seed: int = 0) -> list[PairCase]:
    """Pairs 1-WL cannot separate: the first five 3-WL separates (hexagon vs two triangles,
    decalin vs bicyclopentyl, CSL skips 2 vs 3, cube vs Wagner graph, CFI over K3), the last
    four it cannot (4×4 rook vs Shrikhande, T(8) vs a Chang graph, CFI over K4, Latin square
    graphs of Z6 vs S3). ``wl4`` (3-FWL ≡ 4-WL) is recorded where it was verified."""
    b = _Builder("3wl")
    yes, no = {"wl1": False, "wl3": True}, {"wl1": False, "wl3": False}
    b.add("hexagon_vs_2triangles", C.cycles(6), C.cycles(3, 3), {**yes, "wl4": True})
    d1, d2 = MOLECULAR_PAIRS[0][1:]
    b.add("decalin_vs_bicyclopentyl", smiles_to_networkx(d1), smiles_to_networkx(d2), yes)
    b.add("csl41_s2_vs_s3", C.csl_graph(41, 2), C.csl_graph(41, 3), yes)
    b.add("cube_vs_wagner", C.prism_graph(4), C.mobius_ladder(4), yes)
    k3 = nx.complete_graph(3)
    b.add("cfi_K3", C.cfi_graph(k3), C.cfi_graph(k3, True), {**yes, "wl4": True})
    b.add("rook4x4_vs_shrikhande", C.rook_graph(4), C.shrikhande_graph(), {**no, "wl4": True})
    b.add("T8_vs_chang1", C.triangular_graph(8), C.chang_graphs()[0], {**no, "wl4": True})
    k4 = nx.complete_graph(4)
    b.add("cfi_K4", C.cfi_graph(k4), C.cfi_graph(k4, True), {**no, "wl4": True})
    b.add("latin_Z6_vs_latin_S3", C.latin_square_graph(C.group_table("Z6")),
          C.latin_square_graph(C.group_table("S3")), no)
    return b.build()


# --------------------------------------------------------------------------- random
def _gnp(n: int, p: float, rng: np.random.Generator) -> nx.Graph:
    iu = np.triu_indices(n, 1)
    keep = rng.random(len(iu[0])) < p
    G = nx.Graph()
    G.add_nodes_from(range(n))
    G.add_edges_from(zip(iu[0][keep].tolist(), iu[1][keep].tolist()))
    return G


@_family("random")
def random_pairs(
    n_pairs: int = 24,
    nodes: int = 10,
    p: float = 0.3,
    degree: int = 3,
    seed: int = 0,
) -> list[PairCase]:
    """Random pairs for GNN tests, cycling through three kinds:

    * ``edge_added``: G(n, p) and the same graph plus one edge — 1-WL and 3-WL separate
      (the edge count differs);
    * ``relabelled``: G(n, p) and a random relabelling — isomorphic, nothing separates;
    * ``regular``: two non-isomorphic random ``degree``-regular graphs on ``nodes`` nodes —
      1-WL cannot separate, 3-WL (2-FWL) does (pairs are kept only when it does).
    """
    if not 0.0 <= p <= 1.0:
        raise DataError(f"random: p must be in [0, 1], found {p}")
    if nodes < 3:
        raise DataError(f"random: nodes must be >= 3, found {nodes}")
    b = _Builder("random")
    rng = np.random.default_rng(seed)
    kinds = ("edge_added", "relabelled", "regular")
    for i in range(n_pairs):
        kind = kinds[i % 3]
        if kind == "regular":
            g1, g2 = _random_separable_regular_pair(nodes, degree, rng)
            b.add(f"random_{i}_{kind}", g1, g2, {"wl1": False, "wl3": True}, kind=kind)
            continue
        g1 = _gnp(nodes, p, rng)
        while kind == "edge_added" and g1.number_of_edges() == nodes * (nodes - 1) // 2:
            g1 = _gnp(nodes, p, rng)
        if kind == "edge_added":
            non = [(u, v) for u, v in itertools.combinations(range(nodes), 2) if not g1.has_edge(u, v)]
            g2 = g1.copy()
            g2.add_edge(*non[int(rng.integers(len(non)))])
            b.add(f"random_{i}_{kind}", g1, g2, {"wl1": True, "wl3": True}, kind=kind)
        else:
            perm = rng.permutation(nodes).tolist()
            g2 = nx.Graph()
            g2.add_nodes_from(range(nodes))
            g2.add_edges_from((perm[u], perm[v]) for u, v in g1.edges())
            b.add(f"random_{i}_{kind}", g1, g2, {"wl1": False, "wl3": False}, isomorphic=True, kind=kind)
    return b.build()


# ---------------------------------------------------------------------- aggregators
AGG_VOCAB = ("a", "b", "c", "d")


def _labelled(edges, labels) -> nx.Graph:
    G = nx.Graph()
    G.add_nodes_from((i, {"label": lab}) for i, lab in enumerate(labels))
    G.add_edges_from(edges)
    return G


def _stars(rows: list[list[int]]) -> nx.Graph:
    """Centres labelled ``a``; centre ``i`` gets ``rows[i][j]`` leaves of colour ``AGG_VOCAB[j+1]``."""
    labels, edges = [], []
    for row in rows:
        c = len(labels)
        labels.append("a")
        for j, cnt in enumerate(row):
            for _ in range(cnt):
                edges.append((c, len(labels)))
                labels.append(AGG_VOCAB[j + 1])
    return _labelled(edges, labels)


def _fused_stars(row: list[int], copies: int) -> nx.Graph:
    """``copies`` centres all joined to ``copies`` × the leaves of one star with leaf counts ``row``."""
    labels = ["a"] * copies
    for j, cnt in enumerate(row):
        labels += [AGG_VOCAB[j + 1]] * (cnt * copies)
    edges = [(c, leaf) for c in range(copies) for leaf in range(copies, len(labels))]
    return _labelled(edges, labels)


@_family("aggregators")
def aggregator_pairs(n_random: int = 6, seed: int = 0) -> list[PairCase]:
    """Xu et al. (2019, §5) "sum > mean > max", as node-labelled pairs 1-WL separates
    (``node.x``: one-hot of a, b, c, d). Two kinds, equal node counts and label histograms:

    * ``sum_only``: every node sees the same *distribution* of neighbour labels in both
      graphs but with other multiplicities (``c`` disjoint stars vs the ``c`` centres joined
      to all their leaves; two a-b edges vs an a-b 4-cycle; C6 labelled abcabc vs K2,2,2).
      Only sum separates: ``mean`` and ``max`` verdicts are False, with any readout.
    * ``mean_not_max``: every node sees the same *set* of labels, but centres' label
      distributions differ (leaf counts per centre ``[[2,1],[1,2]]`` vs ``[[1,1],[2,2]]``,
      same leaves overall). Sum and mean separate, max does not.

    ``n_random`` more pairs of both kinds are drawn with ``seed``.
    """
    b = _Builder("aggregators", labelled=True)
    sum_only = {"wl1": True, "wl3": True, "sum": True, "mean": False, "max": False}
    mean_not_max = {"wl1": True, "wl3": True, "sum": True, "mean": True, "max": False}
    b.add("2K2_vs_C4", _stars([[1], [1]]), _fused_stars([1], 2), sum_only, kind="sum_only")
    b.add("3K2_vs_K33", _stars([[1], [1], [1]]), _fused_stars([1], 3), sum_only, kind="sum_only")
    b.add("2P3_vs_K24", _stars([[1, 1], [1, 1]]), _fused_stars([1, 1], 2), sum_only, kind="sum_only")
    c6 = _labelled([(i, (i + 1) % 6) for i in range(6)], ["a", "b", "c", "a", "b", "c"])
    k222 = _labelled([(i, j) for i in range(6) for j in range(i + 1, 6) if i // 2 != j // 2],
                     ["a", "a", "b", "b", "c", "c"])
    b.add("C6abc_vs_K222", c6, k222, sum_only, kind="sum_only")
    b.add("stars_21_12_vs_11_22", _stars([[2, 1], [1, 2]]), _stars([[1, 1], [2, 2]]), mean_not_max,
          kind="mean_not_max")
    b.add("stars_31_13_vs_22_22", _stars([[3, 1], [1, 3]]), _stars([[2, 2], [2, 2]]), mean_not_max,
          kind="mean_not_max")
    rng = np.random.default_rng(seed)
    for i in range(n_random):
        colours = int(rng.integers(1, 4))
        if i % 2 == 0:
            row = rng.integers(1, 4, size=colours).tolist()
            copies = int(rng.integers(2, 4))
            b.add(f"random_{i}_sum_only", _stars([row] * copies), _fused_stars(row, copies), sum_only,
                  kind="sum_only")
        else:
            m1, m2 = _mean_not_max_rows(rng, max(colours, 2))
            b.add(f"random_{i}_mean_not_max", _stars(m1), _stars(m2), mean_not_max, kind="mean_not_max")
    return b.build()


def _mean_not_max_rows(rng: np.random.Generator, colours: int):
    """Two leaf-count matrices (centres × colours, entries >= 1) with equal column sums and
    equal centre counts whose rows' label distributions differ as multisets."""
    while True:
        centres = int(rng.integers(2, 4))
        m1 = rng.integers(1, 4, size=(centres, colours))
        m2 = m1.copy()
        # move one unit of colour j from centre r to centre s: column sums stay
        r, s = rng.choice(centres, 2, replace=False)
        j = int(rng.integers(colours))
        if m2[r, j] < 2:
            continue
        m2[r, j] -= 1
        m2[s, j] += 1

        def dists(m):  # exact fractions: rounded floats could merge two distributions
            return sorted(tuple(Fraction(int(x), int(row.sum())) for x in row) for row in m)

        if dists(m1) != dists(m2):
            return m1.tolist(), m2.tolist()


# ------------------------------------------------------------------------ user files
def _decode_graph6(token: str) -> nx.Graph:
    t = token
    for header in (">>graph6<<", ">>sparse6<<"):
        t = t.removeprefix(header)
    bad = [ch for ch in t if not 63 <= ord(ch) <= 126 and ch != ":"]
    if bad:
        raise ValueError(f"character `{bad[0]}` is outside graph6's range `?`..`~`")
    data = t.encode("ascii")
    return nx.from_sparse6_bytes(data) if t.startswith(":") else nx.from_graph6_bytes(data)


def read_pair_file(path: str) -> list[PairCase]:
    """Pairs from a text file: one pair per line, two graph6 (or sparse6) strings separated by
    whitespace; ``#`` starts a comment; blank lines are ignored. A bad line raises
    :class:`~graphdl.errors.DataError` naming ``file:line`` and the problem. Expected verdicts
    are unknown (``None``)."""
    if not os.path.exists(path):
        raise DataError(f"pair file `{path}` not found")
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    b = _Builder("file")
    base = os.path.basename(path)
    for lineno, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = text.split()
        if len(fields) != 2:
            raise DataError(
                f"{path}:{lineno}: expected two graph6 strings separated by whitespace, "
                f"found {len(fields)} field{'s' if len(fields) != 1 else ''}"
            )
        graphs = []
        for which, tok in zip(("first", "second"), fields):
            try:
                G = _decode_graph6(tok)
            except (nx.NetworkXError, ValueError, IndexError, TypeError) as e:
                shown = tok if len(tok) <= 24 else tok[:21] + "..."
                raise DataError(f"{path}:{lineno}: the {which} graph `{shown}` is not valid graph6 ({e})") from None
            if G.number_of_nodes() == 0:
                raise DataError(f"{path}:{lineno}: the {which} graph has no nodes")
            graphs.append(G)
        b.add(f"{base}:{lineno}", graphs[0], graphs[1], {"wl1": None, "wl3": None}, isomorphic=None,
              source=f"{path}:{lineno}")
    if not b.raw:
        raise DataError(f"{path}: no pairs (expected lines of two graph6 strings)")
    return b.build()


def load_pairs(name_or_path: str, **params) -> list[PairCase]:
    """A built-in family by name (``params`` go to it, e.g. ``seed=1``) or a graph6 pair file."""
    if name_or_path in FAMILIES:
        try:
            return FAMILIES[name_or_path](**params)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err.get("loc", ()))
            raise DataError(f"family `{name_or_path}`: parameter `{loc}`: {err['msg']}") from None
    if os.path.exists(name_or_path):
        if params:
            raise DataError(f"a pair file takes no parameters, found {', '.join(sorted(params))}")
        return read_pair_file(name_or_path)
    hint = did_you_mean(name_or_path, FAMILIES)  # "; did you mean `csl`?" or ""
    raise DataError(
        f"`{name_or_path}` is neither a pair family nor an existing pair file (families: "
        f"{', '.join(sorted(FAMILIES))}){hint}"
    )


# -------------------------------------------------------------------------- helpers
def pair_to_networkx(case: PairCase) -> tuple[nx.Graph, nx.Graph]:
    """Both graphs of a pair as networkx graphs (node attribute ``label``: row id of ``node.x``)."""
    return graph_to_networkx(case.g1), graph_to_networkx(case.g2)


def permute_nodes(g: Graph, rng: np.random.Generator) -> Graph:
    """The same graph with its nodes renumbered by a random permutation."""
    n = g.num_nodes
    perm = torch.from_numpy(rng.permutation(n)).long()  # new node i is old node perm[i]
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)
    fields = {k: (v[perm] if k.startswith("node.") else v) for k, v in g.fields.items()}
    return Graph(inv[g.edge_index], n, fields)


def pair_verdicts(pairs: list[PairCase], test: str) -> list[bool]:
    """Whether ``test`` separates each pair, from one joint refinement of all distinct graphs.

    ``test``: ``wl1`` (colour refinement), ``wl2`` (oblivious 2-WL), ``wl3`` (2-FWL ≡ 3-WL),
    ``wl3_oblivious`` (3-WL itself), ``wl4`` (3-FWL ≡ 4-WL), or ``sum`` / ``mean`` / ``max``
    (colour refinement with that aggregation and readout).
    """
    from graphdl.wl.kwl import kwl_equivalence
    from graphdl.wl.refine import wl_equivalence

    graphs: list[Graph] = []
    index: dict[int, int] = {}
    for case in pairs:
        for g in (case.g1, case.g2):
            if id(g) not in index:
                index[id(g)] = len(graphs)
                graphs.append(g)
    if not graphs:
        return []
    runs = {
        "wl1": lambda: wl_equivalence(graphs),
        "sum": lambda: wl_equivalence(graphs, aggregate="sum"),
        "mean": lambda: wl_equivalence(graphs, aggregate="mean"),
        "max": lambda: wl_equivalence(graphs, aggregate="max"),
        "wl2": lambda: kwl_equivalence(graphs, 2),
        "wl3": lambda: kwl_equivalence(graphs, 2, folklore=True),
        "wl3_oblivious": lambda: kwl_equivalence(graphs, 3),
        "wl4": lambda: kwl_equivalence(graphs, 3, folklore=True),
    }
    if test not in runs:
        raise DataError(f"unknown test `{test}`{did_you_mean(test, runs)}")
    cls = runs[test]().tolist()
    return [cls[index[id(c.g1)]] != cls[index[id(c.g2)]] for c in pairs]
