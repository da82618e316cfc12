"""1-WL colour refinement over a whole batch of graphs, with a shared colour dictionary.

Colour refinement (Weisfeiler & Leman 1968; the "1-WL test" of Xu et al. 2019 and Morris
et al. 2019) starts from node labels and repeats

    c_{t+1}(v) = HASH( c_t(v), {{ (l(u, v), c_t(u)) : u ∈ N(v) }} )

where ``l(u, v)`` is an optional edge label. All graphs of a call are refined *jointly*:
one dictionary maps signatures to colours, so colour ids mean the same thing in every graph
and colour histograms can be compared. A round is a handful of array operations over all
edges of the batch (a lexicographic sort by ``(node, code)``, a segment hash, a verification
against one representative per class — see :mod:`graphdl.wl._hashing`); the only Python
loop is over rounds. Colours are exact: no two different signatures ever share a colour.

Two weaker refinements model GNNs with other aggregators (Xu et al. 2019, §5):
``aggregate="mean"`` keeps only the *distribution* of neighbour codes, ``"max"`` only their
*set*. A mean (max) GNN with mean (max) readout cannot separate graphs these do not.

Relation to ``networkx.weisfeiler_lehman_graph_hash(G, iterations=h)`` (networkx >= 3.5):
the hash covers the colour histograms of rounds ``1..h`` (all rounds, not only the last),
and since each round refines the previous one, two hashes differ exactly when the round-``h``
histograms differ. So, for simple graphs (no self-loops):

* with ``node_attr`` and/or ``edge_attr``: hashes differ ⟺ ``wl_distinguishes(G1, G2,
  iterations=h, node_labels=node_attr, edge_labels=edge_attr)``;
* without attributes networkx starts from node degrees, which *are* our round 1, and counts
  that as its first iteration, hashing rounds ``2..h`` only: hashes differ ⟺ ``h >= 2`` and
  ``wl_distinguishes(G1, G2, iterations=h)``. With ``h = 1`` networkx hashes an empty list,
  so all attribute-free graphs get one hash.

(networkx builds labels by concatenating strings without separators, so with degrees or
edge labels of two or more digits two different multisets can concatenate to the same
string — ``"1"+"23"`` and ``"12"+"3"`` — and it merges colours that 1-WL separates; the
equivalence above holds whenever labels and degrees are single characters. We are exact.
networkx also compares labels as text, ``str(value)``; we compare them by value
(:mod:`graphdl.wl._labels`: ``-0.0 == 0.0``, ``1 == 1.0``, ``1 != "1"``, NaN refused), so
the two agree where ``str`` is one-to-one on the labels present.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from graphdl.errors import DataError
from graphdl.wl._convert import Packed, pack
from graphdl.wl._hashing import ragged_multiset_ids, row_ids

Aggregate = Literal["sum", "mean", "max"]


@dataclass
class WLColoring:
    """Colours of every node of a batch after each round of refinement.

    Attributes:
        colors: ``colors[t]`` is the ``(N,)`` colour of every node after ``t`` rounds
            (``t = 0``: the initial labels); ids in ``[0, num_colors[t])``, shared by all graphs.
        num_colors: number of colours in each round.
        batch: ``(N,)`` graph of each node; ``num_graphs``: ``B``.
        stable: True when the last round split no colour class (further rounds change nothing).
        aggregate: ``"sum"`` (1-WL), ``"mean"`` or ``"max"``.
    """

    colors: list[Tensor]
    num_colors: list[int]
    batch: Tensor
    num_graphs: int
    stable: bool
    aggregate: str = "sum"

    @property
    def iterations(self) -> int:
        return len(self.colors) - 1

    def histograms(self, t: int = -1) -> Tensor:
        """``(B, K_t)`` int64 counts of each colour in each graph after round ``t``."""
        return torch.from_numpy(_histogram(self.colors[t].numpy(), self.batch.numpy(),
                                           self.num_graphs, self.num_colors[t]))


def _histogram(colors: np.ndarray, batch: np.ndarray, B: int, K: int) -> np.ndarray:
    return np.bincount(batch * K + colors, minlength=B * K).reshape(B, K).astype(np.int64)


def _check_aggregate(aggregate: str) -> None:
    if aggregate not in ("sum", "mean", "max"):
        raise DataError(f"aggregate must be `sum`, `mean` or `max`, found `{aggregate}`")


def refine_step(p: Packed, col: np.ndarray, K: int, aggregate: str = "sum") -> tuple[np.ndarray, int]:
    """One round of refinement of colours ``col`` (ids in ``[0, K)``) on a packed batch."""
    N = p.num_nodes
    if N == 0:
        return col.copy(), 0
    code = col[p.src]
    radix = K
    if p.edge_label is not None:
        code = p.edge_label * np.int64(K) + code
        radix = K * max(p.num_edge_labels, 1)
    seg = p.dst
    order = np.lexsort((code, seg))
    seg, code = seg[order], code[order]
    if aggregate != "sum" and len(seg):
        start = np.ones(len(seg), dtype=bool)
        start[1:] = (seg[1:] != seg[:-1]) | (code[1:] != code[:-1])
        if aggregate == "max":  # the set of neighbour codes
            seg, code = seg[start], code[start]
        else:  # the distribution: each code with its count / degree as a reduced fraction
            starts = np.flatnonzero(start)
            count = np.diff(np.append(starts, len(seg)))
            deg = np.bincount(seg, minlength=N)[seg[starts]]
            g = np.gcd(count, deg)
            seg, code = seg[starts], code[starts]
            frac, nfrac = row_ids([count // g, deg // g])
            code, _ = row_ids([code, frac], [radix, nfrac])
            order = np.lexsort((code, seg))  # ids of (code, frac) need not follow code order
            seg, code = seg[order], code[order]
    return ragged_multiset_ids(col, code, seg, N)


def initial_colors(p: Packed) -> tuple[np.ndarray, int]:
    return p.node_label.astype(np.int64), int(p.num_node_labels) if p.num_nodes else 0


def wl_refine(
    graphs: Any,
    iterations: int | None = None,
    *,
    node_labels: str | bool | None = None,
    edge_labels: str | bool | None = None,
    aggregate: Aggregate = "sum",
) -> WLColoring:
    """Refine the colours of all graphs jointly.

    Args:
        graphs: a graphdl ``Graph`` (one graph or a batch), a networkx graph, or a list of them.
        iterations: rounds to run; ``None`` runs until the colouring is stable (at most ``N``).
            Rounds after stability repeat the stable colouring.
        node_labels, edge_labels: where labels come from (see :mod:`graphdl.wl._convert`:
            ``Graph`` inputs use ``node.x`` by default; networkx inputs use no labels by default).
        aggregate: ``"sum"`` (1-WL, multisets), ``"mean"`` (distributions) or ``"max"`` (sets).

    Returns:
        a :class:`WLColoring` with the colours after each round ``0..iterations``.

    Shapes: ``colors[t]``: ``(N,)`` over the nodes of all graphs in input order.
    """
    _check_aggregate(aggregate)
    if iterations is not None and iterations < 0:
        raise DataError(f"iterations must be >= 0 or None, found {iterations}")
    p = pack(graphs, node_labels, edge_labels)
    col, K = initial_colors(p)
    colors, counts = [col], [K]
    stable = False
    limit = iterations if iterations is not None else max(p.num_nodes, 1)
    for _ in range(limit):
        if stable:  # the partition cannot change any more
            colors.append(colors[-1])
            counts.append(counts[-1])
            continue
        col, K2 = refine_step(p, col, K, aggregate)
        stable = K2 == K
        K = K2
        colors.append(col)
        counts.append(K)
        if stable and iterations is None:
            break
    if not stable and len(colors) > 1:
        stable = counts[-1] == counts[-2]
    return WLColoring(
        colors=[torch.from_numpy(c) for c in colors], num_colors=counts,
        batch=torch.from_numpy(p.batch), num_graphs=p.num_graphs, stable=stable, aggregate=aggregate,
    )


def wl_histograms(
    graphs: Any,
    iterations: int | None = None,
    *,
    node_labels: str | bool | None = None,
    edge_labels: str | bool | None = None,
    aggregate: Aggregate = "sum",
) -> list[Tensor]:
    """Colour histograms of every round: a list of ``(B, K_t)`` int64 count matrices.

    Colour ids are shared by the graphs of one call (they are ranks of signature hashes, so
    they do not depend on node order or on the order of the graphs); compare histograms of one
    call, not of different calls. With ``iterations=None`` the last entry is the stable one.
    """
    res = wl_refine(graphs, iterations, node_labels=node_labels, edge_labels=edge_labels, aggregate=aggregate)
    return [res.histograms(t) for t in range(len(res.colors))]


def readout_differs(hist: np.ndarray, i: int, j: int, readout: str) -> bool:
    """Whether graphs ``i`` and ``j`` differ under a sum (counts), mean (proportions) or max (set) readout."""
    a, b = hist[i], hist[j]
    if readout == "sum":
        return not np.array_equal(a, b)
    if readout == "max":
        return not np.array_equal(a > 0, b > 0)
    na, nb = int(a.sum()), int(b.sum())  # proportions equal ⟺ a * |b| == b * |a|
    return not np.array_equal(a * nb, b * na)


def wl_distinguishes(
    g1: Any,
    g2: Any,
    iterations: int | None = None,
    *,
    node_labels: str | bool | None = None,
    edge_labels: str | bool | None = None,
    aggregate: Aggregate = "sum",
    readout: Aggregate | None = None,
) -> bool:
    """Whether colour refinement tells ``g1`` and ``g2`` apart within ``iterations`` rounds.

    ``iterations=None``: until the joint colouring is stable (the full power of 1-WL).
    Histograms that differ after round ``t`` differ after every later round, so this stops at
    the first round where they differ. ``readout`` (default: same as ``aggregate``) says how a
    graph is summarised: ``"sum"`` compares colour counts, ``"mean"`` colour proportions and
    ``"max"`` the sets of colours present.
    """
    _check_aggregate(aggregate)
    readout = readout or aggregate
    _check_aggregate(readout)
    if iterations is not None and iterations < 0:
        raise DataError(f"iterations must be >= 0 or None, found {iterations}")
    p = pack([g1, g2], node_labels, edge_labels)
    if p.num_graphs != 2:
        raise DataError(f"wl_distinguishes compares two graphs; the inputs hold {p.num_graphs} (pass single graphs)")
    col, K = initial_colors(p)
    limit = iterations if iterations is not None else max(p.num_nodes, 1)
    t = 0
    while True:
        if readout_differs(_histogram(col, p.batch, 2, max(K, 1)), 0, 1, readout):
            return True
        if t == limit:
            return False
        col, K2 = refine_step(p, col, K, aggregate)
        t += 1
        if K2 == K:  # stable: nothing further can change
            return readout_differs(_histogram(col, p.batch, 2, max(K2, 1)), 0, 1, readout)
        K = K2


def wl_equivalence(
    graphs: Any,
    *,
    node_labels: str | bool | None = None,
    edge_labels: str | bool | None = None,
    aggregate: Aggregate = "sum",
    readout: Aggregate | None = None,
) -> Tensor:
    """``(B,)`` class of each graph under stable colour refinement: equal ⟺ not distinguished.

    One joint refinement of all graphs answers every pairwise question at once.
    """
    readout = readout or aggregate
    _check_aggregate(readout)
    res = wl_refine(graphs, None, node_labels=node_labels, edge_labels=edge_labels, aggregate=aggregate)
    hist = res.histograms(-1).numpy()
    return torch.from_numpy(_classes(hist, readout))


def _classes(hist: np.ndarray, readout: str) -> np.ndarray:
    if readout == "max":
        hist = (hist > 0).astype(np.int64)
    elif readout == "mean":
        g = np.gcd.reduce(hist, axis=1, keepdims=True) if hist.shape[1] else np.ones((len(hist), 1), np.int64)
        hist = hist // np.maximum(g, 1)
    if hist.shape[0] == 0:
        return np.zeros(0, np.int64)
    _, inv = np.unique(hist, axis=0, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)
