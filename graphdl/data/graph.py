"""``Graph`` and ``Batch``: edge lists sorted by destination, fields keyed ``space.name``.

A graph holds
* ``edge_index`` ``(2, E)``: row 0 the source, row 1 the destination of each edge, sorted by
  destination (then source). Edge fields are permuted with it, once, at construction.
* ``fields``: a flat dict ``"node.h" -> (N, ...)``, ``"edge.e" -> (E, ...)``,
  ``"graph.y" -> (B, ...)``.
* ``batch`` ``(N,)`` node -> graph and ``ptr`` ``(B + 1,)`` node offsets of each graph.

The CSR of the adjacency (rows = destinations) and its transpose (rows = sources) are
built on first use and cached; both are built from tensors without a host sync.

The cache (``Graph._cache``) is eager-mode state. A ``torch.compile`` trace must not read it:
each cached object would enter the compiled graph as an input (its tensors, and its Python
ints as symbolic sizes), guarded on which keys the dict held when the trace ran, so a warm
and a cold batch would compile two graphs, and a cached structure fed to a custom autograd
function crashed Dynamo. A compiled model works on :meth:`Graph.uncached` instead: the
structure is rebuilt inside the compiled graph (a sort and a few gathers; Inductor fuses
them) and shared by the layers of that call only.

Validation (indices in range, finite features) runs when a graph is made from user data
(``validate=True``), never inside a model's forward pass.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from graphdl.errors import DataError
from graphdl.ops.csr import CSR
from graphdl.ops.segment import index_add_rows
from graphdl.types import SPACES, split_key


class Graph:
    """One graph or a batch of disjoint graphs (see :func:`collate`).

    Args:
        edge_index: ``(2, E)`` integer tensor of (source, destination) pairs.
        num_nodes: number of nodes ``N`` (nodes without edges are allowed).
        fields: ``{"node.h": (N, d), "edge.e": (E, d), "graph.y": (B, d), ...}``.
        batch: ``(N,)`` graph id of each node; default all zeros (one graph).
        num_graphs: number of graphs ``B``; default 1.
        sort: sort edges by destination (default). Pass ``False`` only when they already are.
        validate: check indices and fields (one host sync each); default True.
    """

    _max_graph_nodes: int | None = None  # see max_graph_nodes()

    def __init__(
        self,
        edge_index: Tensor | Sequence[Sequence[int]] | None,
        num_nodes: int,
        fields: Mapping[str, Tensor] | None = None,
        *,
        batch: Tensor | None = None,
        num_graphs: int = 1,
        sort: bool = True,
        validate: bool = True,
    ):
        num_nodes = int(num_nodes)
        if num_nodes < 0:
            raise DataError(f"num_nodes must be >= 0, found {num_nodes}")
        fields = dict(fields or {})
        device = None
        for v in fields.values():
            if isinstance(v, Tensor):
                device = v.device
                break
        if edge_index is None:
            edge_index = torch.zeros(2, 0, dtype=torch.long, device=device)
        edge_index = torch.as_tensor(edge_index, device=device)
        if edge_index.numel() == 0:
            edge_index = edge_index.reshape(2, 0)
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise DataError(
                f"edge_index must have shape (2, E) (row 0 sources, row 1 destinations), "
                f"found shape {tuple(edge_index.shape)}; transpose an (E, 2) edge list with `.t()`"
            )
        if edge_index.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
            raise DataError(f"edge_index must hold integers, found dtype {edge_index.dtype}")
        edge_index = edge_index.long()
        self.num_nodes = num_nodes
        self.num_graphs = int(num_graphs)
        if validate:
            _check_edge_index(edge_index, num_nodes)
        fields = {k: torch.as_tensor(v) for k, v in fields.items()}
        if sort and edge_index.size(1) > 1:
            key = edge_index[1] * max(num_nodes, 1) + edge_index[0]
            perm = torch.sort(key, stable=True).indices
            edge_index = edge_index[:, perm]
            fields = {k: (v[perm] if k.startswith("edge.") else v) for k, v in fields.items()}
        self.edge_index = edge_index
        if batch is None:
            batch = torch.zeros(num_nodes, dtype=torch.long, device=edge_index.device)
        self.batch = batch
        self.fields: dict[str, Tensor] = {}
        for k, v in fields.items():
            self._set(k, v, validate)
        self._cache: dict[str, object] = {}
        self._max_graph_nodes: int | None = None

    # ------------------------------------------------------------------ fields
    def _set(self, key: str, value: Tensor, validate: bool = True) -> None:
        try:
            space, _ = split_key(key)
        except ValueError as e:
            raise DataError(str(e)) from None
        n = {"node": self.num_nodes, "edge": self.num_edges, "graph": self.num_graphs}[space]
        if value.dim() == 0 or value.size(0) != n:
            raise DataError(
                f"field `{key}` must have {n} rows (one per {space}), found shape {tuple(value.shape)}"
            )
        if validate and value.is_floating_point():
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                row = int(bad.reshape(n, -1).any(1).nonzero()[0, 0])
                raise DataError(
                    f"field `{key}` has NaN or infinite values (first at {space} {row}); "
                    f"clean or impute the input before building the graph"
                )
        self.fields[key] = value

    def __getitem__(self, key: str) -> Tensor:
        try:
            return self.fields[key]
        except KeyError:
            have = ", ".join(sorted(self.fields)) or "none"
            raise DataError(f"graph has no field `{key}` (fields: {have})") from None

    def __setitem__(self, key: str, value: Tensor) -> None:
        self._set(key, value)

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def keys(self, space: str | None = None) -> list[str]:
        return [k for k in self.fields if space is None or k.startswith(space + ".")]

    # --------------------------------------------------------------- structure
    @property
    def num_edges(self) -> int:
        return self.edge_index.size(1)

    @property
    def src(self) -> Tensor:
        return self.edge_index[0]

    @property
    def dst(self) -> Tensor:
        return self.edge_index[1]

    @property
    def device(self) -> torch.device:
        return self.edge_index.device

    @property
    def ptr(self) -> Tensor:
        """``(B + 1,)`` offsets of each graph's nodes."""
        if "ptr" not in self._cache:
            # counts by index_add_, not bincount: bincount's length depends on the data (a host
            # sync on CUDA, and a graph break under torch.compile); this one is always (B,)
            counts = index_add_rows(torch.zeros(self.num_graphs, dtype=torch.long, device=self.device),
                                    self.batch, torch.ones_like(self.batch))
            ptr = torch.zeros(self.num_graphs + 1, dtype=torch.long, device=self.device)
            torch.cumsum(counts, 0, out=ptr[1:])
            self._cache["ptr"] = ptr
        return self._cache["ptr"]  # type: ignore[return-value]

    @property
    def edge_batch(self) -> Tensor:
        """``(E,)`` graph id of each edge (that of its destination)."""
        if "edge_batch" not in self._cache:
            self._cache["edge_batch"] = self.batch[self.dst]
        return self._cache["edge_batch"]  # type: ignore[return-value]

    def max_graph_nodes(self) -> int:
        """Nodes of the largest graph in the batch (0 without graphs): the side of padded
        per-graph layouts (dense attention, dense adjacency stacks).

        One host sync, then remembered on this graph (and on its :meth:`uncached` view, so
        a compiled model reads it as a size instead of breaking its graph on ``int()``).
        """
        if self._max_graph_nodes is None:
            counts = self.ptr[1:] - self.ptr[:-1]
            self._max_graph_nodes = int(counts.max()) if self.num_graphs else 0
        return self._max_graph_nodes

    def csr(self) -> CSR:
        """Adjacency with rows = destinations, columns = sources; entries in edge order."""
        if "csr" not in self._cache:
            self._cache["csr"] = CSR.from_sorted_rows(self.dst, self.src, self.num_nodes, self.num_nodes)
        return self._cache["csr"]  # type: ignore[return-value]

    def csr_t(self) -> CSR:
        """Transposed adjacency (rows = sources); ``perm`` maps entries to edge ids."""
        if "csr_t" not in self._cache:
            self._cache["csr_t"] = CSR.from_sorted_cols(self.src, self.dst, self.num_nodes, self.num_nodes)
        return self._cache["csr_t"]  # type: ignore[return-value]

    def in_degree(self) -> Tensor:
        return self.csr().degree()

    def out_degree(self) -> Tensor:
        return self.csr_t().degree()

    # ------------------------------------------------------------ conversions
    def to(self, device=None, dtype: torch.dtype | None = None, *, non_blocking: bool = False) -> "Graph":
        """A copy on ``device`` and/or with floating fields in ``dtype`` (``g.to("cuda")``,
        ``g.to(torch.float64)``, ``g.to("cuda", torch.float32)``); indices and integer or
        boolean fields keep their dtype. ``non_blocking``: asynchronous host-to-GPU copies
        (they overlap with computation when the graph is in pinned memory, :meth:`pin_memory`)."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device

        def move(v: Tensor) -> Tensor:
            if dtype is not None and v.is_floating_point():
                return v.to(device=device, dtype=dtype, non_blocking=non_blocking)
            return v.to(device, non_blocking=non_blocking) if device is not None else v

        g = self._like(move(self.edge_index), {k: move(v) for k, v in self.fields.items()})
        g.batch = move(self.batch)
        return g

    def pin_memory(self) -> "Graph":
        """A copy in page-locked host memory (what ``torch.utils.data.DataLoader(pin_memory=True)``
        calls), so that ``.to("cuda", non_blocking=True)`` copies asynchronously. Needs CUDA."""
        g = self._like(self.edge_index.pin_memory(), {k: v.pin_memory() for k, v in self.fields.items()})
        g.batch = self.batch.pin_memory()
        return g

    def _like(self, edge_index: Tensor, fields: dict[str, Tensor]) -> "Graph":
        g = object.__new__(type(self))
        g.num_nodes, g.num_graphs = self.num_nodes, self.num_graphs
        g.edge_index, g.batch, g.fields, g._cache = edge_index, self.batch, fields, {}
        g._max_graph_nodes = self._max_graph_nodes  # same batch vector, same graph sizes
        return g

    def uncached(self, keep: tuple = ()) -> Graph:
        """A shallow copy sharing every tensor, with an empty structure cache.

        What a ``torch.compile`` trace works on (see the module docstring): everything a block
        caches on it lives for one call, and the original's cache is neither read nor written.
        ``keep``: cache keys carried over (plain tensors computed eagerly before the trace, e.g.
        :meth:`graphdl.nn.graphormer.ShortestPathBias.eager_structure`; they enter the trace as inputs).
        """
        g = self._like(self.edge_index, dict(self.fields))
        if "source_graph" in self._cache:  # neighbors.SOURCE_GRAPH: the dataset's own bonds, not a cache
            g._cache["source_graph"] = self._cache["source_graph"]
        for k in keep:
            if k in self._cache:
                g._cache[k] = self._cache[k]
        return g

    def replace(self, **fields: Tensor) -> "Graph":
        """A shallow copy with some fields replaced (keys with ``__`` for ``.``: ``node__h``)."""
        new = dict(self.fields)
        new.update({k.replace("__", "."): v for k, v in fields.items()})
        g = self._like(self.edge_index, new)
        g._cache = self._cache
        return g

    def add_self_loops(self) -> "Graph":
        """A copy with one self-loop added to every node (edge fields of new loops are zero)."""
        loops = torch.arange(self.num_nodes, device=self.device).repeat(2, 1)
        fields = dict(self.fields)
        for k in self.keys("edge"):
            v = fields[k]
            fields[k] = torch.cat([v, v.new_zeros((self.num_nodes,) + v.shape[1:])])
        return Graph(
            torch.cat([self.edge_index, loops], 1), self.num_nodes, fields,
            batch=self.batch, num_graphs=self.num_graphs, validate=False,
        )

    def graphs(self) -> list["Graph"]:
        """Split a batch back into single graphs (a data utility, not for forward passes)."""
        ptr = self.ptr.tolist()
        eb = torch.bincount(self.edge_batch, minlength=self.num_graphs)
        eptr = [0] + torch.cumsum(eb, 0).tolist()
        out = []
        for i in range(self.num_graphs):
            a, b, ea, eb_ = ptr[i], ptr[i + 1], eptr[i], eptr[i + 1]
            fields = {}
            for k, v in self.fields.items():
                space = k.split(".")[0]
                fields[k] = {"node": v[a:b], "edge": v[ea:eb_], "graph": v[i : i + 1]}[space]
            out.append(Graph(self.edge_index[:, ea:eb_] - a, b - a, fields, sort=False, validate=False))
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.fields.items())
        kind = "Batch" if self.num_graphs > 1 else "Graph"
        return f"{kind}(num_nodes={self.num_nodes}, num_edges={self.num_edges}, num_graphs={self.num_graphs}, {fields})"


Batch = Graph
"""A batch is a Graph holding several disjoint graphs; ``batch``/``ptr`` say which node is whose."""


def _check_edge_index(edge_index: Tensor, num_nodes: int) -> None:
    if edge_index.numel() == 0:
        return
    lo, hi = int(edge_index.min()), int(edge_index.max())
    if lo < 0 or hi >= num_nodes:
        bad = ((edge_index < 0) | (edge_index >= num_nodes)).any(0).nonzero()[0, 0]
        s, d = edge_index[:, bad].tolist()
        raise DataError(
            f"edge {int(bad)} ({s} -> {d}) refers to a node outside 0..{num_nodes - 1}; "
            f"edge indices must be in [0, num_nodes)"
        )


def collate(graphs: Iterable[Graph]) -> Graph:
    """Stack graphs into one disjoint-union batch; dst order is kept (no re-sort)."""
    graphs = list(graphs)
    if not graphs:
        raise DataError("cannot collate an empty list of graphs")
    keys = list(graphs[0].fields)
    for i, g in enumerate(graphs):
        if list(g.fields) != keys and set(g.fields) != set(keys):
            raise DataError(
                f"graph {i} has fields {sorted(g.fields)} but graph 0 has {sorted(keys)}; "
                f"all graphs in a batch need the same fields"
            )
    sizes = torch.tensor([g.num_nodes for g in graphs])
    offsets = torch.cumsum(sizes, 0) - sizes
    device = graphs[0].device
    edge_index = torch.cat(
        [g.edge_index + int(o) for g, o in zip(graphs, offsets.tolist())], 1
    ) if graphs else torch.zeros(2, 0, dtype=torch.long)
    graph_counts = [g.num_graphs for g in graphs]
    batch = torch.cat([g.batch + s for g, s in zip(graphs, _cumsum0(graph_counts))]).to(device)
    fields = {k: torch.cat([g.fields[k] for g in graphs]) for k in keys}
    out = Graph(
        edge_index, int(sizes.sum()), fields, batch=batch, num_graphs=sum(graph_counts),
        sort=False, validate=False,
    )
    return out


def _cumsum0(xs: list[int]) -> list[int]:
    out, s = [], 0
    for x in xs:
        out.append(s)
        s += x
    return out


__all__ = ["Graph", "Batch", "collate", "SPACES"]
