"""k-WL and k-FWL: Weisfeiler-Leman refinement of k-tuples, vectorised over all tuples.

Both colour every k-tuple ``v = (v_1, ..., v_k)`` of nodes, starting from its *atomic type*
(the node labels of ``v_1..v_k`` and, for every ``i < j``, whether ``v_i = v_j`` and the
label of the edge ``v_i v_j`` if any). Write ``v[j←w]`` for ``v`` with entry ``j`` set to
``w``. One round is

* k-WL (the "oblivious" k-WL of Morris et al. 2019 / Grohe 2021):
  ``c'(v) = ( c(v), {{c(v[1←w])}}_w, ..., {{c(v[k←w])}}_w )`` — k separate multisets;
* k-FWL (folklore WL, Cai-Fürer-Immerman 1992):
  ``c'(v) = ( c(v), {{ (c(v[1←w]), ..., c(v[k←w])) : w ∈ V }} )`` — one multiset of k-tuples.

Classical facts the tests check on the pair families: k-FWL is as strong as (k+1)-WL
(so 2-FWL ≡ 3-WL, and 2-FWL is the cheap way to run "3-WL": n³ tuples instead of n⁴ work),
and 2-WL is only as strong as 1-WL (colour refinement, :mod:`graphdl.wl.refine`).

The colours of a graph live in a dense ``(n,)*k`` array. A round builds, for every tuple, its
multiset row (``n`` codes: one per ``w``) with broadcasting, and hashes and verifies the rows
(:class:`graphdl.wl._hashing.MultisetDictionary`) in chunks of the first tuple axis, so
memory stays near ``4M`` codes per chunk. For oblivious k-WL the multiset at position ``j``
does not depend on ``v_j``: it is computed once per ``(k-1)``-tuple by sorting along axis
``j``. Work per round: ``O(n^k log n)`` for k-WL, ``O(n^(k+1))`` for k-FWL.

Graphs of one call are refined jointly (comparable colours). Graphs of different sizes never
share a tuple colour (the atomic type includes ``n``; their tuple counts differ anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from graphdl.errors import DataError
from graphdl.wl._convert import Packed, pack
from graphdl.wl._hashing import MultisetDictionary, row_ids, split_into_words

CHUNK_CODES = 1 << 22
"""Codes built per chunk (about 32 MB of int64 per word)."""


@dataclass
class TupleColoring:
    """Colours of all k-tuples of every graph after each round.

    ``colors[t][g]`` is an ``(n_g,)*k`` int64 tensor: the colour of tuple ``(v_1..v_k)`` of
    graph ``g`` after ``t`` rounds; ids in ``[0, num_colors[t])`` shared by all graphs.
    """

    k: int
    folklore: bool
    colors: list[list[Tensor]]
    num_colors: list[int]
    num_graphs: int
    stable: bool

    @property
    def iterations(self) -> int:
        return len(self.colors) - 1

    def histograms(self, t: int = -1) -> Tensor:
        """``(B, K_t)`` int64 counts of each tuple colour in each graph."""
        K = self.num_colors[t]
        return torch.from_numpy(np.stack([np.bincount(c.numpy().reshape(-1), minlength=K)
                                          for c in self.colors[t]]).astype(np.int64).reshape(-1, K))


# ----------------------------------------------------------------------- the engine
class _Engine:
    """Per-graph arrays and rounds of k-WL / k-FWL on a packed batch."""

    def __init__(self, p: Packed, k: int, folklore: bool):
        self.k, self.folklore = k, folklore
        self.sizes = [int(s) for s in p.sizes]
        self.groups: dict[int, list[int]] = {}
        for g, n in enumerate(self.sizes):
            self.groups.setdefault(n, []).append(g)
        self.labels, self.pairs = [], []
        ptr = p.ptr
        estart = np.searchsorted(p.src, ptr)  # edges are sorted by source, graphs are contiguous
        nel = max(p.num_edge_labels, 1)
        self.pair_radix = 2 * nel + 2
        for g, n in enumerate(self.sizes):
            a, b = int(ptr[g]), int(ptr[g + 1])
            s, d = p.src[estart[g]:estart[g + 1]] - a, p.dst[estart[g]:estart[g + 1]] - a
            adj = np.zeros((n, n), dtype=np.int64)
            lab = p.edge_label[estart[g]:estart[g + 1]] if p.edge_label is not None else 0
            adj[s, d] = 1 + lab
            self.pairs.append(2 * adj + np.eye(n, dtype=np.int64))
            self.labels.append(p.node_label[a:b].astype(np.int64))
        self.num_node_labels = max(p.num_node_labels, 1)

    def initial(self) -> tuple[list[np.ndarray], int]:
        """Atomic types of all tuples, jointly over graphs (the graph size is part of the type)."""
        k = self.k
        cols: list[list[np.ndarray]] = [[] for _ in range(1 + k + k * (k - 1) // 2)]
        for g, n in enumerate(self.sizes):
            shape = (n,) * k
            c = [np.full(shape, n, dtype=np.int64)]
            for i in range(k):
                c.append(np.broadcast_to(self.labels[g].reshape(_axis_shape(k, n, (i,))), shape))
            for i in range(k):
                for j in range(i + 1, k):
                    P = self.pairs[g].reshape(_axis_shape(k, n, (i, j)))
                    c.append(np.broadcast_to(P, shape))
            for slot, arr in zip(cols, c):
                slot.append(arr.reshape(-1))
        flat = [np.concatenate(s) if s else np.zeros(0, np.int64) for s in cols]
        radices = [max(self.sizes, default=0) + 1] + [self.num_node_labels] * k + [self.pair_radix] * (len(flat) - 1 - k)
        ids, K = row_ids(flat, radices)
        return self._split(ids), K

    def _split(self, flat: np.ndarray) -> list[np.ndarray]:
        out, off = [], 0
        for n in self.sizes:
            m = n ** self.k
            out.append(flat[off:off + m].reshape((n,) * self.k))
            off += m
        return out

    def step(self, colors: list[np.ndarray], K: int) -> tuple[list[np.ndarray], int]:
        new: list[np.ndarray | None] = [None] * len(colors)
        offset = 0
        for n in sorted(self.groups):
            members = self.groups[n]
            if n == 0:
                for g in members:
                    new[g] = colors[g].copy()
                continue
            if self.folklore:
                ids, Kg = self._folklore_group([colors[g] for g in members], n, K)
            else:
                ids, Kg = self._oblivious_group([colors[g] for g in members], n, K)
            for g, arr in zip(members, ids):
                new[g] = arr + offset
            offset += Kg
        return new, offset  # type: ignore[return-value]

    def _folklore_group(self, Cs: list[np.ndarray], n: int, K: int):
        k = self.k
        D = MultisetDictionary()
        rows_per_v1 = n ** (k - 1)
        chunk = max(1, CHUNK_CODES // max(rows_per_v1 * n, 1))
        moved0 = None
        for C in Cs:
            moved0 = np.expand_dims(np.moveaxis(C, 0, -1), 0)  # C[w, v2..vk] for every v1
            for s in range(0, n, chunk):
                Cc = C[s:s + chunk]
                comps = [moved0] + [np.expand_dims(np.moveaxis(Cc, j, -1), j) for j in range(1, k)]
                shape = (len(Cc),) + (n,) * k
                comps = [np.broadcast_to(c, shape) for c in comps]
                words = split_into_words(comps, K)
                D.add(Cc.reshape(-1), [w.reshape(-1, n) for w in words])
        ids, Kg = D.finish()
        return self._split_group(ids, len(Cs), n), Kg

    def _oblivious_group(self, Cs: list[np.ndarray], n: int, K: int):
        k = self.k
        cols = [np.concatenate([C.reshape(-1) for C in Cs])]
        radices = [K]
        for j in range(k):
            D = MultisetDictionary()
            for C in Cs:  # the multiset at position j depends on the other k-1 entries only
                rows = np.moveaxis(C, j, -1).reshape(-1, n)
                D.add(np.zeros(len(rows), np.int64), [rows])
            ids, Kj = D.finish()
            per = n ** (k - 1)
            parts = []
            for i, C in enumerate(Cs):
                m = ids[i * per:(i + 1) * per].reshape((n,) * (k - 1))
                parts.append(np.broadcast_to(np.expand_dims(m, j), (n,) * k).reshape(-1))
            cols.append(np.concatenate(parts))
            radices.append(Kj)
        ids, Kg = row_ids(cols, radices)
        return self._split_group(ids, len(Cs), n), Kg

    def _split_group(self, ids: np.ndarray, count: int, n: int) -> list[np.ndarray]:
        m = n ** self.k
        return [ids[i * m:(i + 1) * m].reshape((n,) * self.k) for i in range(count)]

    def histogram(self, colors: list[np.ndarray], K: int, graphs: list[int]) -> np.ndarray:
        return np.stack([np.bincount(colors[g].reshape(-1), minlength=K) for g in graphs])


def _axis_shape(k: int, n: int, axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n if a in axes else 1 for a in range(k))


def _check_k(k: int, folklore: bool) -> None:
    if not isinstance(k, int) or k < 1:
        raise DataError(f"k must be a positive integer, found {k!r}")
    if folklore and k < 2:
        raise DataError("k-FWL needs k >= 2 (1-WL is colour refinement: use k=1 without folklore)")
    if k > 4:
        raise DataError(f"k = {k} builds n^{k} tuples (n^{k + int(folklore)} codes per round); "
                        f"graphdl supports k <= 4")


def kwl_refine(
    graphs: Any,
    k: int,
    *,
    folklore: bool = False,
    iterations: int | None = None,
    node_labels: str | bool | None = None,
    edge_labels: str | bool | None = None,
) -> TupleColoring:
    """Refine the k-tuple colours of all graphs jointly (k >= 2; k-FWL: k >= 2).

    ``iterations=None`` runs until stable. Labels as in :func:`graphdl.wl.wl_refine`.
    For ``k = 1`` (not folklore) use :func:`graphdl.wl.wl_refine`; it is refused here
    because oblivious "1-WL" on 1-tuples is not colour refinement.
    """
    _check_k(k, folklore)
    if k == 1:
        raise DataError("k=1 is colour refinement: call graphdl.wl.wl_refine (or kwl_distinguishes with k=1)")
    p = pack(graphs, node_labels, edge_labels)
    eng = _Engine(p, k, folklore)
    colors, K = eng.initial()
    all_colors, counts, stable = [colors], [K], False
    limit = iterations if iterations is not None else max(sum(s ** k for s in eng.sizes), 1)
    for _ in range(limit):
        if stable:
            all_colors.append(all_colors[-1])
            counts.append(counts[-1])
            continue
        colors, K2 = eng.step(colors, K)
        stable = K2 == K
        K = K2
        all_colors.append(colors)
        counts.append(K)
        if stable and iterations is None:
            break
    return TupleColoring(
        k=k, folklore=folklore, colors=[[torch.from_numpy(c) for c in cs] for cs in all_colors],
        num_colors=counts, num_graphs=p.num_graphs, stable=stable,
    )


def kwl_distinguishes(
    g1: Any,
    g2: Any,
    k: int,
    folklore: bool = False,
    *,
    iterations: int | None = None,
    node_labels: str | bool | None = None,
    edge_labels: str | bool | None = None,
) -> bool:
    """Whether k-WL (``folklore=False``) or k-FWL (``folklore=True``) tells two graphs apart.

    Compares the histograms of tuple colours after every round and stops at the first
    difference or when the joint colouring is stable (``iterations=None``) or after
    ``iterations`` rounds. ``k=1`` without folklore is colour refinement (1-WL).
    Reminders: 2-FWL ≡ 3-WL, 3-FWL ≡ 4-WL, 2-WL ≡ 1-WL.
    """
    _check_k(k, folklore)
    if k == 1:
        from graphdl.wl.refine import wl_distinguishes

        return wl_distinguishes(g1, g2, iterations, node_labels=node_labels, edge_labels=edge_labels)
    p = pack([g1, g2], node_labels, edge_labels)
    if p.num_graphs != 2:
        raise DataError(f"kwl_distinguishes compares two graphs; the inputs hold {p.num_graphs}")
    if p.sizes[0] != p.sizes[1]:
        return True
    eng = _Engine(p, k, folklore)
    colors, K = eng.initial()
    limit = iterations if iterations is not None else max(2 * int(p.sizes[0]) ** k, 1)
    for t in range(limit + 1):
        h = eng.histogram(colors, K, [0, 1])
        if not np.array_equal(h[0], h[1]):
            return True
        if t == limit:
            break
        colors, K2 = eng.step(colors, K)
        if K2 == K:
            h = eng.histogram(colors, K2, [0, 1])
            return not np.array_equal(h[0], h[1])
        K = K2
    return False


def kwl_equivalence(
    graphs: Any,
    k: int,
    folklore: bool = False,
    *,
    node_labels: str | bool | None = None,
    edge_labels: str | bool | None = None,
) -> Tensor:
    """``(B,)`` class of each graph under stable k-WL / k-FWL: equal ⟺ not distinguished."""
    _check_k(k, folklore)
    if k == 1:
        from graphdl.wl.refine import wl_equivalence

        return wl_equivalence(graphs, node_labels=node_labels, edge_labels=edge_labels)
    res = kwl_refine(graphs, k, folklore=folklore, node_labels=node_labels, edge_labels=edge_labels)
    hist = res.histograms(-1).numpy()
    if hist.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    _, inv = np.unique(hist, axis=0, return_inverse=True)
    return torch.from_numpy(inv.reshape(-1).astype(np.int64))
