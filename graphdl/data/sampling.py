"""Neighbour-sampled mini-batches of one large graph (GraphSAGE, Hamilton et al. 2017).

A node task on a graph too large for one batch trains on *seed* nodes in batches; each seed
brings its sampled L-hop in-neighbourhood, and the compiled model runs unchanged on that
subgraph. Sampling, per hop ``h`` with fanout ``k_h``:

* every node of the frontier (the seeds at hop 0, then the nodes the previous hop added)
  draws up to ``k_h`` of its in-edges **without replacement** (all of them when it has at most
  ``k_h``; ``-1`` or ``all``: every in-edge);
* the sources of the drawn edges that are not yet in the subgraph join it and form the next
  frontier. A node is expanded once, at the first hop that reaches it, so each node of the
  subgraph has at most one fanout's worth of in-edges (PyTorch Geometric's ``NeighborLoader``
  builds the same subgraph; DGL's per-layer "blocks" carry the same edges split by hop).

Local node ids: the seeds first (rows ``0..B-1``, in batch order), then each hop's new nodes in
order of first appearance. The subgraph carries every node field (gathered), every edge field
(gathered by edge id), the graph fields, ``node.origin`` (the node's id in the full graph, for
prediction tables) and, under ``mask_key``, a boolean field that is true on the seeds only, so a
task's row mask (:attr:`graphdl.train.tasks.Task.row_mask`) scores the seeds and nothing else.

Exactness: for ``fanouts: all`` with one fanout per message-passing layer, the outputs at the
seeds equal a full-graph forward pass (a node first reached at hop ``h < L`` brings all its
in-edges, which is all its layer-``(L-h)`` representation reads) for blocks whose update reads
only the destination's in-edges (SAGE, GIN, GAT, MPNN...). GCN's symmetric normalisation also
reads the *source's* degree, which the subgraph truncates, as in PyG and DGL.

Cost: the draw without replacement is Floyd's algorithm (Bentley & Floyd, "Programming
Pearls: a sample of brilliance", CACM 1987) run for all frontier nodes at once: ``k`` vectorised
steps over an ``(m, k)`` table, so time and memory are ``O(m·k)`` for ``m`` frontier nodes
whatever their degrees (a hub with a million in-edges costs as much as a node with ``k``), and
a batch's memory is bounded by ``batch_size · Π(1 + k_h)``, not by the graph. No Python loop runs
over nodes or edges. Deterministic: the draws come from a ``torch.Generator`` seeded by the
loader's seed and the batch's key (epoch, batch, part).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from graphdl.data.graph import Graph
from graphdl.errors import DataError

__all__ = ["ORIGIN", "NeighborLoader", "generator_for", "sample_in_edges", "sample_subgraph"]

ORIGIN = "node.origin"
"""Node field of a sampled subgraph: each node's id in the full graph."""

_MIX = 1_000_003


def generator_for(seed: int, *key: int) -> torch.Generator:
    """A CPU generator seeded by ``seed`` and a tuple of small integers (distinct tuples, distinct seeds)."""
    s = int(seed)
    for k in key:
        s = (s * _MIX + int(k) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(s)


def sample_in_edges(rowptr: Tensor, nodes: Tensor, k: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Up to ``k`` in-edges of each of ``nodes``, drawn uniformly without replacement.

    Args:
        rowptr: ``(N + 1,)`` CSR offsets of the in-edges of each node (edges sorted by destination,
            so entry ``e`` of the CSR is edge ``e`` of the graph).
        nodes: ``(m,)`` node ids (the frontier).
        k: fanout; ``-1`` takes every in-edge.
        generator: the source of randomness (CPU).

    Returns:
        ``(edges, row)``: ``(M,)`` edge ids and ``(M,)`` the position in ``nodes`` of each edge's
        destination; ``M = Σ min(deg, k)``. Each node's edges come in draw order.

    Floyd's algorithm, vectorised over rows: for ``s = 0..k-1`` with ``j = d - k + s``, draw ``t``
    uniform in ``0..j``; take ``t`` unless this row already took it, else ``j``. Every ``k``-subset
    of ``0..d-1`` is equally likely. Time and memory ``O(m·k)``.
    """
    nodes = nodes.to(torch.long)
    start = rowptr[nodes]
    deg = rowptr[nodes + 1] - start
    m = nodes.numel()
    if k < 0:
        total = int(deg.sum())
        row = torch.repeat_interleave(torch.arange(m), deg, output_size=total)
        first = torch.cumsum(deg, 0) - deg
        offset = torch.arange(total) - first.repeat_interleave(deg, output_size=total)
        return start[row] + offset, row
    if k == 0 or m == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    u = torch.rand(m, k, generator=generator, dtype=torch.float64)
    pick = torch.empty(m, k, dtype=torch.long)
    for s in range(k):  # k steps (the fanout), never a loop over nodes
        j = deg - k + s
        t = torch.minimum((u[:, s] * (j + 1).to(torch.float64)).to(torch.long), j)
        if s:
            t = torch.where((pick[:, :s] == t[:, None]).any(1), j, t)
        pick[:, s] = t
    cols = torch.arange(k)
    few = deg <= k
    pick = torch.where(few[:, None], cols[None, :], pick)  # rows with at most k edges take them all
    keep = cols[None, :] < deg.clamp(max=k)[:, None]
    row = torch.arange(m)[:, None].expand(m, k)[keep]
    return (start[:, None] + pick)[keep], row


def _add_nodes(present: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    """Local ids of ``cand`` given the ``P`` nodes ``present`` (unique; local id = position), and the
    candidates not present, in order of first appearance (they get ids ``P, P+1, ...``)."""
    p = present.numel()
    both = torch.cat([present, cand])
    uniq, inv = torch.unique(both, return_inverse=True)
    pos = torch.arange(both.numel())
    first = torch.full((uniq.numel(),), both.numel(), dtype=torch.long).scatter_reduce_(0, inv, pos, "amin")
    new_u = (first >= p).nonzero().squeeze(1)
    new_u = new_u[torch.argsort(first[new_u])]
    local = first.clone()
    local[new_u] = p + torch.arange(new_u.numel())
    return local[inv[p:]], uniq[new_u]


def sample_subgraph(graph: Graph, seeds: Tensor, fanouts: Sequence[int], generator: torch.Generator,
                    mask_key: str | None = None, rowptr: Tensor | None = None) -> Graph:
    """The sampled subgraph of ``seeds`` (see the module docstring), on the CPU.

    Args:
        graph: the full graph (one graph; its edges sorted by destination as every Graph's).
        seeds: ``(B,)`` distinct node ids; they become nodes ``0..B-1``.
        fanouts: one per hop, ``-1`` for every in-edge.
        generator: randomness of the draws.
        mask_key: node field set true on the seeds only (a task's row mask).
        rowptr: the in-edge CSR offsets of ``graph`` (default: ``graph.csr().rowptr``).

    Returns:
        A :class:`Graph` with ``node.origin`` (full-graph ids), gathered node, edge and graph fields.
    """
    if rowptr is None:
        rowptr = graph.csr().rowptr
    col = graph.src
    seeds = seeds.to(torch.long)
    parts = [seeds]
    present = seeds
    frontier, offset = seeds, 0
    src_l, dst_l, eids = [], [], []
    for k in fanouts:
        e, row = sample_in_edges(rowptr, frontier, int(k), generator)
        local, new = _add_nodes(present, col[e])
        src_l.append(local)
        dst_l.append(offset + row)
        eids.append(e)
        offset = present.numel()
        present = torch.cat([present, new])
        parts.append(new)
        frontier = new
    nodes = present
    n = nodes.numel()
    edge_index = torch.stack([torch.cat(src_l), torch.cat(dst_l)]) if src_l else torch.zeros(2, 0, dtype=torch.long)
    e_all = torch.cat(eids) if eids else torch.zeros(0, dtype=torch.long)
    fields: dict[str, Tensor] = {}
    for key, v in graph.fields.items():
        space = key.split(".", 1)[0]
        fields[key] = v.index_select(0, nodes) if space == "node" else v.index_select(0, e_all) if space == "edge" else v
    fields[ORIGIN] = nodes
    if mask_key is not None:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[: seeds.numel()] = True
        old = graph.fields.get(mask_key)
        fields[mask_key] = mask.reshape(n, *old.shape[1:]) if old is not None and old.dim() > 1 else mask[:, None]
    return Graph(edge_index, n, fields, sort=True, validate=False)


class NeighborLoader:
    """Batches of seed nodes of one graph with their sampled neighbourhoods (see the module docstring).

    Args:
        graph: the full graph, on the CPU.
        seeds: ``(S,)`` node ids to iterate (e.g. the training nodes).
        fanouts: in-edges drawn per node at each hop (``-1``: all).
        batch_size: seeds per batch (the last batch may be smaller).
        shuffle: a new seed order every epoch, from ``(seed, epoch)``.
        seed: seed of the order and of the draws.
        mask_key: node field marking the seeds of each batch (the task's row mask).
        pin_memory: batches in page-locked memory (for non-blocking copies to a GPU).

    The protocol the runner's data-parallel wrapper uses (:class:`graphdl.train.distributed.RankLoader`):
    :meth:`batch_indices` (the seed positions of each batch of an epoch, one process's order) and
    :meth:`make_batch` (the subgraph of some of them, from a key that fixes its draws).
    """

    def __init__(self, graph: Graph, seeds: Tensor, fanouts: Sequence[int], batch_size: int, *,
                 shuffle: bool = True, seed: int = 0, mask_key: str | None = None, pin_memory: bool = False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, found {batch_size!r}")
        bad = [k for k in fanouts if not isinstance(k, int) or isinstance(k, bool) or (k < 1 and k != -1)]
        if bad or not len(fanouts):
            raise DataError(f"fanouts must be a non-empty list of positive integers (or -1 for all in-edges), "
                            f"found {list(fanouts)}")
        if graph.device.type != "cpu":
            raise DataError("neighbour sampling reads the full graph on the CPU; keep the dataset on the CPU "
                            "(batches move to the device)")
        self.graph = graph
        self.seeds = torch.as_tensor(seeds, dtype=torch.long).reshape(-1)
        self.fanouts = [int(k) for k in fanouts]
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.mask_key = mask_key
        self.pin_memory = pin_memory
        self.rowptr = graph.csr().rowptr
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(self.seeds.numel() / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batch_indices(self, epoch: int | None = None) -> list[Tensor]:
        """Positions in ``seeds`` of each batch of ``epoch`` (default: the next one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        n = self.seeds.numel()
        order = torch.randperm(n, generator=generator_for(self.seed, epoch)) if self.shuffle else torch.arange(n)
        return list(torch.split(order, self.batch_size))

    def make_batch(self, index, key: tuple[int, ...]) -> Graph:
        """The sampled subgraph of ``seeds[index]``; ``key`` (epoch, batch, part) seeds its draws."""
        idx = torch.as_tensor(index, dtype=torch.long)
        g = sample_subgraph(self.graph, self.seeds[idx], self.fanouts, generator_for(self.seed, *key),
                            self.mask_key, self.rowptr)
        return g.pin_memory() if self.pin_memory else g

    def __iter__(self) -> Iterator[Graph]:
        epoch = self.epoch
        self.epoch += 1
        for b, idx in enumerate(self.batch_indices(epoch)):
            yield self.make_batch(idx, (epoch, b, 0))

    def __repr__(self) -> str:
        return (f"NeighborLoader({self.seeds.numel()} seeds of a {self.graph.num_nodes}-node graph, fanouts="
                f"{self.fanouts}, batch_size={self.batch_size}, shuffle={self.shuffle}, seed={self.seed})")
