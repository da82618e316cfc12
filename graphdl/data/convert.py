"""Converters between :class:`~graphdl.data.graph.Graph` and networkx, PyTorch Geometric and DGL.

These are data utilities: they run once when a dataset is built, so they may loop in
Python. Field names follow one rule everywhere: a library's node attribute ``name`` is
the field ``node.<name>``, an edge attribute ``edge.<name>``, a graph attribute
``graph.<name>``; PyTorch Geometric's conventional names are mapped to graphdl's
(``x`` <-> ``node.h``, ``edge_attr`` <-> ``edge.e``, ``pos`` <-> ``node.pos``,
``edge_weight`` <-> ``edge.weight``, ``y`` <-> ``graph.y`` or ``node.y``).

PyTorch Geometric and DGL are optional: they are imported when a converter needs them,
and a missing package raises :class:`MissingDependencyError` (an ``ImportError``) that
names the ``pip install`` line.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from graphdl.data.graph import Graph
from graphdl.errors import DataError, KernelUnavailableError

__all__ = [
    "MissingDependencyError",
    "from_dgl",
    "from_networkx",
    "from_pyg",
    "to_dgl",
    "to_networkx",
    "to_pyg",
]


class MissingDependencyError(KernelUnavailableError, ImportError):
    """An optional package (torch_geometric, dgl) a converter needs is not importable."""


def _require(module: str, pip_name: str, who: str):
    try:
        return __import__(module)
    except Exception as e:  # dgl fails with OSError/FileNotFoundError on a torch mismatch
        raise MissingDependencyError(
            f"{who} needs `{module}`, which cannot be imported here ({type(e).__name__}: {e}); "
            f"install it with `pip install {pip_name}`"
        ) from e


# ---------------------------------------------------------------------------- helpers
def _field_keys(attrs, space: str, what: str) -> dict[str, str]:
    """``None | [names] | {name: field}`` -> ``{attribute name: field key}``."""
    if attrs is None:
        return {}
    if isinstance(attrs, str):
        attrs = [attrs]
    items = attrs.items() if isinstance(attrs, Mapping) else ((a, a) for a in attrs)
    out = {}
    for name, key in items:
        key = str(key)
        if not key.startswith(space + "."):
            if "." in key and key.split(".", 1)[0] in ("node", "edge", "graph"):
                raise DataError(f"{what} `{name}` must map to a `{space}.` field, found `{key}`")
            key = f"{space}.{key}"
        out[str(name)] = key
    return out


def _stack(values: list, dtype: torch.dtype | None, what: str) -> Tensor:
    """Stack per-node (per-edge) attribute values into one tensor with a leading axis.

    Tensors and numpy values keep their dtype; Python floats get ``dtype`` (default: torch's
    default dtype), Python ints become int64.
    """
    if not values:
        return torch.zeros(0, dtype=dtype or torch.get_default_dtype())
    try:
        if isinstance(values[0], Tensor):
            out = torch.stack([torch.as_tensor(v) for v in values])
        elif isinstance(values[0], (np.ndarray, np.generic)):
            out = torch.from_numpy(np.stack([np.asarray(v) for v in values]))
        else:  # Python numbers: parse as float64 so a float64 `dtype` loses nothing
            arr = np.asarray(values)
            if arr.dtype == object:
                raise ValueError("ragged or non-numeric values")
            out = torch.from_numpy(arr)
            if out.is_floating_point():
                out = out.to(dtype or torch.get_default_dtype())
    except (TypeError, ValueError, RuntimeError) as e:
        raise DataError(
            f"{what}: values cannot be stacked into one tensor ({e}); every item needs a number or "
            f"an array of the same shape"
        ) from None
    if dtype is not None and out.is_floating_point():
        out = out.to(dtype)
    return out


def _python_value(v: Tensor):
    return v.tolist()


# --------------------------------------------------------------------------- networkx
def from_networkx(
    G,
    node_attrs: Sequence[str] | Mapping[str, str] | None = None,
    edge_attrs: Sequence[str] | Mapping[str, str] | None = None,
    graph_attrs: Sequence[str] | Mapping[str, str] | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Graph:
    """Build a :class:`Graph` from a networkx graph.

    Nodes are relabelled ``0..N-1`` in ``G``'s node order. An undirected edge ``{u, v}``
    becomes the two directed edges ``u -> v`` and ``v -> u`` (a self-loop stays one edge),
    as PyG and DGL do; a multigraph keeps every parallel edge.

    Args:
        G: ``nx.Graph``, ``nx.DiGraph``, ``nx.MultiGraph`` or ``nx.MultiDiGraph``.
        node_attrs: node attribute names to read (each becomes ``node.<name>``), or a mapping
            ``{attribute: field}`` (``{"x": "node.h"}``). ``None`` reads none.
        edge_attrs: the same for edges (``edge.<name>``).
        graph_attrs: the same for ``G.graph`` (``graph.<name>``, one row).
        dtype: dtype of fields given as Python floats (default: torch's default dtype);
            tensor and numpy values keep theirs.

    Shapes:
        a scalar attribute gives an ``(N,)`` field, a length-``d`` vector an ``(N, d)`` field.
        An attribute with no values (a graph without edges) cannot tell its width: it gives
        a ``(0,)`` field of ``dtype``.
    """
    nodes = list(G.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    directed = G.is_directed()
    src: list[int] = []
    dst: list[int] = []
    edata: list[dict] = []
    for u, v, d in G.edges(data=True):
        i, j = index[u], index[v]
        src.append(i)
        dst.append(j)
        edata.append(d)
        if not directed and i != j:
            src.append(j)
            dst.append(i)
            edata.append(d)
    fields: dict[str, Tensor] = {}
    for name, key in _field_keys(node_attrs, "node", "node attribute").items():
        try:
            vals = [G.nodes[n][name] for n in nodes]
        except KeyError:
            missing = next(n for n in nodes if name not in G.nodes[n])
            raise DataError(
                f"node {missing!r} has no attribute `{name}` (from_networkx node_attrs)"
            ) from None
        fields[key] = _stack(vals, dtype, f"node attribute `{name}`")
    for name, key in _field_keys(edge_attrs, "edge", "edge attribute").items():
        try:
            vals = [d[name] for d in edata]
        except KeyError:
            k = next(k for k, d in enumerate(edata) if name not in d)
            raise DataError(
                f"edge ({nodes[src[k]]!r}, {nodes[dst[k]]!r}) has no attribute `{name}` "
                f"(from_networkx edge_attrs)"
            ) from None
        fields[key] = _stack(vals, dtype, f"edge attribute `{name}`")
    for name, key in _field_keys(graph_attrs, "graph", "graph attribute").items():
        if name not in G.graph:
            raise DataError(
                f"the graph has no attribute `{name}` (from_networkx graph_attrs); it has {sorted(G.graph)}"
            )
        fields[key] = _stack([G.graph[name]], dtype, f"graph attribute `{name}`")
    edge_index = torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)
    return Graph(edge_index, len(nodes), fields)


def _attr_names(g: Graph, attrs, space: str) -> dict[str, str]:
    """``{field key: attribute name}`` for :func:`to_networkx` (``None``: every field of ``space``)."""
    if attrs is None:
        return {k: k.split(".", 1)[1] for k in g.keys(space)}
    if isinstance(attrs, str):
        attrs = [attrs]
    items = attrs.items() if isinstance(attrs, Mapping) else ((a, a) for a in attrs)
    out = {}
    for key, name in items:
        key = key if str(key).startswith(space + ".") else f"{space}.{key}"
        g[key]  # raises a DataError listing the fields when absent
        out[key] = str(name).split(".", 1)[1] if str(name).startswith(space + ".") else str(name)
    return out


def to_networkx(
    g: Graph,
    node_attrs: Sequence[str] | Mapping[str, str] | None = None,
    edge_attrs: Sequence[str] | Mapping[str, str] | None = None,
    graph_attrs: Sequence[str] | Mapping[str, str] | None = None,
    *,
    to_undirected: bool = False,
    multigraph: bool | None = None,
):
    """Convert one graph to networkx; fields become attributes (values as Python lists/numbers).

    Args:
        g: a single graph (convert a batch graph by graph: ``[to_networkx(x) for x in b.graphs()]``).
        node_attrs, edge_attrs, graph_attrs: fields to write, as names (``"h"`` or ``"node.h"``)
            or ``{field: attribute}``; ``None`` writes every field of that space.
        to_undirected: return an undirected graph, keeping one edge per ``u -> v`` / ``v -> u``
            pair. The edge set must be symmetric and the two directions must carry equal edge
            fields, else a :class:`DataError` (nothing is dropped silently).
        multigraph: ``nx.Multi(Di)Graph`` or not; ``None`` picks one when ``g`` has parallel edges.
    """
    import networkx as nx

    if g.num_graphs != 1:
        raise DataError(
            f"to_networkx takes one graph, found a batch of {g.num_graphs}; convert each of `batch.graphs()`"
        )
    nkeys = _attr_names(g, node_attrs, "node")
    ekeys = _attr_names(g, edge_attrs, "edge")
    gkeys = _attr_names(g, graph_attrs, "graph")
    pairs = list(zip(*g.edge_index.tolist())) if g.num_edges else []
    if multigraph is None:
        multigraph = len(set(pairs)) != len(pairs)
    if not multigraph and len(set(pairs)) != len(pairs):
        raise DataError("the graph has parallel edges; pass multigraph=True (or leave it None)")
    cls = {
        (False, False): nx.DiGraph,
        (False, True): nx.MultiDiGraph,
        (True, False): nx.Graph,
        (True, True): nx.MultiGraph,
    }[(to_undirected, multigraph)]
    G = cls()
    nvals = {name: _python_value(g.fields[k]) for k, name in nkeys.items()}
    G.add_nodes_from((i, {name: vals[i] for name, vals in nvals.items()}) for i in range(g.num_nodes))
    evals = {name: _python_value(g.fields[k]) for k, name in ekeys.items()}
    keep = range(len(pairs))
    if to_undirected:
        keep = _undirected_half(g, pairs, list(ekeys))
    for k in keep:
        G.add_edge(*pairs[k], **{name: vals[k] for name, vals in evals.items()})
    for k, name in gkeys.items():
        G.graph[name] = _python_value(g.fields[k][0])
    return G


def _undirected_half(g: Graph, pairs: list[tuple[int, int]], ekeys: list[str]) -> list[int]:
    """Edge ids with ``src <= dst``, after checking each has a reverse with equal fields."""
    occ: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k, p in enumerate(pairs):
        occ[p].append(k)
    keep = []
    for (u, v), ks in occ.items():
        if u > v:
            continue
        rev = occ.get((v, u), [])
        if len(rev) != len(ks):
            raise DataError(
                f"edge ({u}, {v}) appears {len(ks)} time(s) but ({v}, {u}) {len(rev)} time(s); "
                f"the graph is not symmetric, so to_undirected=True would lose edges"
            )
        for a, b in zip(ks, rev):
            for key in ekeys:
                if not torch.equal(g.fields[key][a], g.fields[key][b]):
                    raise DataError(
                        f"field `{key}` differs between edges ({u}, {v}) and ({v}, {u}); "
                        f"to_undirected=True would drop one of them, keep the graph directed"
                    )
        keep.extend(ks)
    return sorted(keep)


# -------------------------------------------------------------------- PyTorch Geometric
_PYG_TO_FIELD = {"x": "node.h", "edge_attr": "edge.e", "pos": "node.pos", "edge_weight": "edge.weight"}
_FIELD_TO_PYG = {v: k for k, v in _PYG_TO_FIELD.items()}
_PYG_STRUCTURE = {"edge_index", "batch", "ptr", "num_nodes"}
_SPACED = re.compile(r"^(node|edge|graph)_(.+)$")


def from_pyg(data, mapping: Mapping[str, str | None] | None = None) -> Graph:
    """Build a :class:`Graph` (or a batch) from a PyG ``Data`` or ``Batch``.

    Default names: ``x`` -> ``node.h``, ``edge_attr`` -> ``edge.e``, ``pos`` -> ``node.pos``,
    ``edge_weight`` -> ``edge.weight``, ``node_<name>`` / ``edge_<name>`` / ``graph_<name>``
    -> ``<space>.<name>`` (what :func:`to_pyg` writes), and ``y`` -> ``graph.y`` when its
    first dim is the number of graphs, ``node.y`` when it is the number of nodes (a tie,
    i.e. one-node graphs, reads as ``graph.y``; a 0-d ``y`` becomes ``(1,)``). Other
    attributes are left out unless ``mapping`` names them.

    Args:
        data: ``torch_geometric.data.Data`` or ``Batch`` (homogeneous).
        mapping: ``{pyg attribute: field key}`` added to / overriding the defaults; map an
            attribute to ``None`` to leave it out (``{"y": None}``).
    """
    _require("torch_geometric", "torch_geometric", "from_pyg")
    from torch_geometric.data import HeteroData

    if isinstance(data, HeteroData):
        raise DataError("from_pyg takes homogeneous Data/Batch; convert HeteroData with `.to_homogeneous()`")
    num_nodes = data.num_nodes
    if num_nodes is None:
        raise DataError("the PyG data has no `x` and no `num_nodes`; set `data.num_nodes`")
    batch = getattr(data, "batch", None)
    num_graphs = int(data.num_graphs) if batch is not None else 1
    mapping = dict(mapping or {})
    keys = list(data.keys())
    for k in mapping:
        if k not in keys:
            raise DataError(f"from_pyg mapping names `{k}`, which the data lacks (it has {sorted(keys)})")
    fields: dict[str, Tensor] = {}
    for k in keys:
        if k in _PYG_STRUCTURE and k not in mapping:
            continue
        v = data[k]
        if k in mapping:
            key = mapping[k]
            if key is None:
                continue
        elif k in _PYG_TO_FIELD:
            key = _PYG_TO_FIELD[k]
        elif k == "y" and isinstance(v, Tensor):
            key, v = _y_field(v, int(num_nodes), num_graphs)
        elif _SPACED.match(k):
            key = "{}.{}".format(*_SPACED.match(k).groups())
        else:
            continue
        if not isinstance(v, Tensor):
            raise DataError(
                f"PyG attribute `{k}` is a {type(v).__name__}, not a tensor; it cannot become `{key}`"
            )
        if key in fields:
            raise DataError(f"two PyG attributes map to field `{key}`; fix the mapping")
        fields[key] = v
    edge_index = data.edge_index if getattr(data, "edge_index", None) is not None else None
    return Graph(edge_index, int(num_nodes), fields, batch=batch, num_graphs=num_graphs)


def _y_field(y: Tensor, num_nodes: int, num_graphs: int) -> tuple[str, Tensor]:
    if y.dim() == 0:
        return "graph.y", y.reshape(1)
    if y.size(0) == num_graphs:
        return "graph.y", y
    if y.size(0) == num_nodes:
        return "node.y", y
    raise DataError(
        f"PyG `y` has shape {tuple(y.shape)}: neither one row per graph ({num_graphs}) nor per node "
        f"({num_nodes}); name its field with from_pyg(data, mapping={{'y': 'graph.y'}})"
    )


def _pyg_name(key: str, g: Graph) -> str:
    if key in _FIELD_TO_PYG:
        return _FIELD_TO_PYG[key]
    if key == "graph.y":
        return "y"
    if key == "node.y" and "graph.y" not in g.fields and g.num_nodes != g.num_graphs:
        return "y"
    space, name = key.split(".", 1)
    return f"{space}_{name}"


def to_pyg(g: Graph):
    """Convert to a PyG ``Data`` (one graph) or ``Batch`` (a batch of several).

    Field names are the inverse of :func:`from_pyg`'s defaults (``node.h`` -> ``x``,
    ``edge.e`` -> ``edge_attr``, ``node.pos`` -> ``pos``, ``graph.y`` -> ``y``, ``node.y``
    -> ``y`` when there is no ``graph.y``); any other field ``<space>.<name>`` is written as
    ``<space>_<name>`` so that ``from_pyg(to_pyg(g))`` gives ``g`` back.
    """
    _require("torch_geometric", "torch_geometric", "to_pyg")
    from torch_geometric.data import Batch, Data

    if g.num_graphs > 1:
        return Batch.from_data_list([to_pyg(x) for x in g.graphs()])
    attrs = {_pyg_name(k, g): v for k, v in g.fields.items()}
    return Data(edge_index=g.edge_index, num_nodes=g.num_nodes, **attrs)


# --------------------------------------------------------------------------------- DGL
def _load_dgl(who: str):
    """DGL through :func:`graphdl.interop.dgl.load_dgl` (it keeps DGL's sampling package out
    when that has no library for the running torch)."""
    from graphdl.interop.dgl import load_dgl

    try:
        return load_dgl()
    except MissingDependencyError as e:
        raise MissingDependencyError(f"{who}: {e}") from e


def from_dgl(dg, graph_fields: Mapping[str, Tensor] | None = None, *, eid_field: str | None = None) -> Graph:
    """Build a :class:`Graph` (or a batch) from a homogeneous ``dgl.DGLGraph``.

    ``ndata[name]`` becomes ``node.<name>``, ``edata[name]`` ``edge.<name>``. A batched
    DGLGraph (``dgl.batch``) becomes a batch with the same graph boundaries (what
    :func:`~graphdl.data.graph.collate` of the unbatched graphs gives). DGL keeps no per-graph
    data, so graph-level fields (labels) come in through ``graph_fields`` (``{"graph.y": labels}``
    or ``{"y": labels}``), one row per graph.

    Edge order: a :class:`Graph` keeps its edges sorted by destination, then source (stable), so
    DGL edge ids are permuted unless the DGLGraph already is in that order (as every graph
    :func:`to_dgl` makes is: ``from_dgl(to_dgl(g))`` keeps ``g``'s order). ``eid_field``
    (e.g. ``"edge.eid"``) stores each edge's DGL edge id, to map results back.

    Raises:
        DataError: a heterograph (several node or edge types) or a DGL block (message flow
            graph), with the DGL call that converts it.
    """
    if getattr(dg, "is_block", False):
        raise DataError(
            "from_dgl takes a DGLGraph, found a DGL block (a message flow graph with separate source and "
            "destination nodes); convert it with `dgl.block_to_graph(block)`"
        )
    if not getattr(dg, "is_homogeneous", True):
        raise DataError(
            f"from_dgl takes a homogeneous DGLGraph, found node types {list(dg.ntypes)} and edge types "
            f"{list(dg.canonical_etypes)}; convert it with `dgl.to_homogeneous(g, ndata=[...], edata=[...])` "
            f"(node and edge types become the fields dgl.NTYPE / dgl.ETYPE)"
        )
    src, dst = dg.edges(order="eid")
    num_nodes = int(dg.num_nodes())
    fields: dict[str, Tensor] = {}
    for name, v in dg.ndata.items():
        fields[f"node.{name}"] = v
    for name, v in dg.edata.items():
        fields[f"edge.{name}"] = v
    if eid_field is not None:
        key = eid_field if str(eid_field).startswith("edge.") else f"edge.{eid_field}"
        if key in fields:
            raise DataError(f"from_dgl eid_field `{key}` is already an edge field of the graph; pick another name")
        fields[key] = torch.arange(src.numel(), device=src.device)
    for name, v in (graph_fields or {}).items():
        key = name if str(name).startswith("graph.") else f"graph.{name}"
        fields[key] = torch.as_tensor(v)
    num_graphs = int(dg.batch_size)
    batch = None
    if num_graphs > 1:
        counts = dg.batch_num_nodes().to(src.device).long()
        batch = torch.repeat_interleave(torch.arange(num_graphs, device=src.device), counts)
    edge_index = torch.stack([src.long(), dst.long()])
    return Graph(edge_index, num_nodes, fields, batch=batch, num_graphs=num_graphs)


def to_dgl(g: Graph, *, with_graph_fields: bool = False) -> Any:
    """Convert to a ``dgl.DGLGraph`` (batched, with its graph boundaries, when ``g`` is a batch).

    Node fields ``node.<name>`` go to ``ndata[name]``, edge fields to ``edata[name]``; edge ``k``
    of the DGLGraph is edge ``k`` of ``g`` (destination-sorted order), self-loops and parallel
    edges included, and isolated nodes are kept (``num_nodes``). A batch becomes what
    ``dgl.batch`` of its graphs gives (``batch_num_nodes`` / ``batch_num_edges`` set), so
    ``dgl.unbatch`` splits it. DGL has no place for graph-level fields: with
    ``with_graph_fields=True`` this returns ``(dgl_graph, {"graph.y": ..., ...})``; a graph that
    has graph fields and ``with_graph_fields=False`` is an error, not a silent drop.
    """
    dgl = _load_dgl("to_dgl")
    gkeys = g.keys("graph")
    if gkeys and not with_graph_fields:
        raise DataError(
            f"graph fields {gkeys} have no place on a DGLGraph; call to_dgl(g, with_graph_fields=True) "
            f"to get them beside the graph"
        )
    dg = dgl.graph((g.src, g.dst), num_nodes=g.num_nodes, idtype=torch.int64, device=g.device)
    for k in g.keys("node"):
        dg.ndata[k.split(".", 1)[1]] = g.fields[k]
    for k in g.keys("edge"):
        dg.edata[k.split(".", 1)[1]] = g.fields[k]
    if g.num_graphs > 1:
        dg.set_batch_num_nodes(torch.bincount(g.batch, minlength=g.num_graphs))
        dg.set_batch_num_edges(torch.bincount(g.edge_batch, minlength=g.num_graphs))
    if with_graph_fields:
        return dg, {k: g.fields[k] for k in gkeys}
    return dg
