"""Inputs of the WL tools: graphdl ``Graph`` objects or networkx graphs, packed into flat arrays.

Private to ``graphdl.wl`` (the project's general converters live in ``graphdl.data``).

Every input is read as a **simple undirected graph**: each edge is seen from both ends,
parallel edges are merged (the first label wins), a self-loop makes a node its own
neighbour once (as ``networkx.Graph.neighbors`` does).

Labels:

* graphdl ``Graph``: ``node_labels=None`` uses the node field ``node.x`` when the graph has
  one (rows compared exactly, so constant ones mean "unlabelled" and one-hot rows are
  labels), else no labels; a string names another node field; ``False`` ignores labels.
  ``edge_labels`` names an edge field (``None``/``False``: no edge labels).
* networkx: ``node_labels`` / ``edge_labels`` name node / edge attributes (``None``: none).

Labels are compared **by value** (:mod:`graphdl.wl._labels`): ``-0.0 == 0.0``, ``1 == 1.0``,
arrays element-wise, NaN refused; the number ``1`` and the string ``"1"`` differ. (networkx's
``weisfeiler_lehman_graph_hash`` compares ``str(value)`` instead; the two agree whenever
``str`` is one-to-one on the labels present, e.g. strings or integers.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from graphdl.data.graph import Graph
from graphdl.errors import DataError
from graphdl.wl._labels import field_rows, label_ids, label_key, rows_common


@dataclass
class Packed:
    """A batch of graphs as flat arrays (numpy, int64)."""

    num_nodes: int
    num_graphs: int
    sizes: np.ndarray  # (B,) nodes per graph
    batch: np.ndarray  # (N,) graph of each node
    src: np.ndarray  # (E,) both directions, deduplicated, sorted by (src, dst)
    dst: np.ndarray
    node_label: np.ndarray  # (N,) ids in [0, num_node_labels)
    num_node_labels: int
    edge_label: np.ndarray | None  # (E,) ids in [0, num_edge_labels), or None
    num_edge_labels: int

    @property
    def ptr(self) -> np.ndarray:
        out = np.zeros(self.num_graphs + 1, dtype=np.int64)
        np.cumsum(self.sizes, out=out[1:])
        return out


def _is_nx(g: Any) -> bool:
    return hasattr(g, "adj") and hasattr(g, "nodes") and not isinstance(g, Graph)


def as_graph_list(graphs: Any) -> list:
    """One graph, a ``Graph`` batch, or a sequence of graphs -> a list of inputs."""
    if isinstance(graphs, Graph) or _is_nx(graphs):
        return [graphs]
    try:
        out = list(graphs)
    except TypeError:
        raise DataError(
            f"expected a graphdl Graph, a networkx graph or a list of them, found {type(graphs).__name__}"
        ) from None
    for i, g in enumerate(out):
        if not (isinstance(g, Graph) or _is_nx(g)):
            raise DataError(f"graph {i} is a {type(g).__name__}; expected a graphdl Graph or a networkx graph")
    return out


def _field_rows(g: Graph, key: str, space: str) -> np.ndarray:
    if key not in g.fields:
        have = ", ".join(g.keys(space)) or "none"
        raise DataError(f"graph has no {space} field `{key}` to use as WL labels ({space} fields: {have})")
    return field_rows(g.fields[key], f"{space} field `{key}`")


def _nx_label(data: dict, where, attr: str, what: str) -> tuple:
    try:
        value = data[attr]
    except KeyError:
        raise DataError(f"{what} {where!r} has no attribute `{attr}` to use as a WL label") from None
    return label_key(value, f"{what} {where!r} attribute `{attr}`")


def pack(
    graphs: Any,
    node_labels: str | bool | None = None,
    edge_labels: str | bool | None = None,
) -> Packed:
    """Pack graphs into one disjoint union with joint label ids (see the module docstring)."""
    items = as_graph_list(graphs)
    sizes, batches, srcs, dsts = [], [], [], []
    node_rows: list[np.ndarray | list] = []
    edge_rows: list[np.ndarray | list] = []
    kinds = set()
    offset, gid = 0, 0
    use_nodes = node_labels is not False
    use_edges = edge_labels not in (None, False)
    for g in items:
        if isinstance(g, Graph):
            n = g.num_nodes
            ei = g.edge_index.detach().cpu().numpy().astype(np.int64)
            b = g.batch.detach().cpu().numpy().astype(np.int64) if g.num_graphs > 1 else np.zeros(n, np.int64)
            counts = np.bincount(b, minlength=g.num_graphs)
            sizes.extend(counts.tolist())
            batches.append(b + gid)
            gid += g.num_graphs
            srcs.append(ei[0] + offset)
            dsts.append(ei[1] + offset)
            key = node_labels if isinstance(node_labels, str) else ("node.x" if node_labels is None else None)
            if use_nodes and key is not None and (key in g.fields or isinstance(node_labels, str)):
                kinds.add("graph")
                node_rows.append(_field_rows(g, key, "node"))
            else:
                node_rows.append(np.zeros((n, 0)))
            if use_edges:
                kinds.add("graph")
                edge_rows.append(_field_rows(g, str(edge_labels), "edge"))
        else:
            import networkx as nx

            G = nx.Graph(g) if (g.is_directed() or g.is_multigraph()) else g
            nodes = list(G.nodes)
            n = len(nodes)
            index = {u: i for i, u in enumerate(nodes)}
            edges = list(G.edges(data=True))
            e = np.array([(index[u], index[v]) for u, v, _ in edges], dtype=np.int64).reshape(-1, 2)
            sizes.append(n)
            batches.append(np.full(n, gid, dtype=np.int64))
            gid += 1
            srcs.append(e[:, 0] + offset)
            dsts.append(e[:, 1] + offset)
            if use_nodes and isinstance(node_labels, str):
                kinds.add("nx")
                node_rows.append([_nx_label(G.nodes[u], u, node_labels, "node") for u in nodes])
            else:
                node_rows.append(np.zeros((n, 0)))
            if use_edges:
                kinds.add("nx")
                edge_rows.append([_nx_label(d, (u, v), str(edge_labels), "edge") for u, v, d in edges])
        offset += n
    if len(kinds) > 1:
        raise DataError(
            "cannot compare labels of graphdl Graphs with labels of networkx graphs in one call; "
            "convert them to one kind first"
        )
    N = offset
    batch = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    src = np.concatenate(srcs) if srcs else np.zeros(0, np.int64)
    dst = np.concatenate(dsts) if dsts else np.zeros(0, np.int64)

    node_label, n_node = _label_ids(node_rows, "node")
    edge_label, n_edge = (None, 0)
    if use_edges:
        edge_label, n_edge = _label_ids(edge_rows, "edge")

    # both directions, parallel edges merged (first occurrence wins), one copy of each loop
    s2 = np.concatenate([src, dst])
    d2 = np.concatenate([dst, src])
    key = s2 * max(N, 1) + d2
    _, first = np.unique(key, return_index=True)
    src, dst = s2[first], d2[first]
    if edge_label is not None:
        edge_label = np.concatenate([edge_label, edge_label])[first]
    return Packed(
        num_nodes=N, num_graphs=len(sizes), sizes=np.asarray(sizes, dtype=np.int64), batch=batch,
        src=src, dst=dst, node_label=node_label, num_node_labels=n_node,
        edge_label=edge_label, num_edge_labels=n_edge,
    )


def _label_ids(rows: list, what: str) -> tuple[np.ndarray, int]:
    if not rows:
        return np.zeros(0, np.int64), 1
    if any(isinstance(r, list) for r in rows):  # networkx: canonical label keys
        flat = [x for r in rows for x in r]
        if not flat:
            return np.zeros(0, np.int64), 1
        return label_ids(flat)
    widths = {r.shape[1] for r in rows if len(r)}
    if len(widths) > 1:
        raise DataError(
            f"{what} labels have different widths across graphs ({sorted(widths)}); "
            f"graphs compared by WL need the same {what} label field layout"
        )
    width = widths.pop() if widths else 0
    rows = rows_common(rows, f"{what} labels")
    mat = np.concatenate([r.reshape(len(r), width) for r in rows]) if rows else np.zeros((0, 0))
    if mat.shape[1] == 0 or len(mat) == 0:
        return np.zeros(len(mat), np.int64), 1
    uniq, inv = np.unique(mat, axis=0, return_inverse=True)
    return inv.astype(np.int64).reshape(-1), len(uniq)


# --------------------------------------------------------------- Graph <-> networkx
def graph_from_networkx(G, vocab: Sequence | None = None, attr: str = "label") -> Graph:
    """A graphdl ``Graph`` (edges both ways, ``node.x``) from an undirected networkx graph.

    ``node.x`` is ``(N, 1)`` ones without ``vocab``, else the one-hot of each node's ``attr``
    in ``vocab``. Nodes are numbered in ``G.nodes`` order.
    """
    nodes = list(G.nodes)
    index = {u: i for i, u in enumerate(nodes)}
    pairs = [(index[u], index[v]) for u, v in G.edges()]
    e = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    loops = e[:, 0] == e[:, 1]
    ei = np.concatenate([e, e[~loops][:, ::-1]]).T
    if vocab is None:
        x = torch.ones(len(nodes), 1)
    else:
        pos = {label_key(v, "a vocabulary entry"): i for i, v in enumerate(vocab)}
        ids = []
        for u in nodes:
            lab = G.nodes[u].get(attr, "")
            key = label_key(lab, f"node {u!r} attribute `{attr}`")
            if key not in pos:
                raise DataError(f"node {u!r} has label {lab!r} outside the vocabulary {list(vocab)}")
            ids.append(pos[key])
        x = torch.nn.functional.one_hot(torch.tensor(ids, dtype=torch.long), len(vocab)).float()
        x = x.reshape(len(nodes), len(vocab))
    return Graph(torch.from_numpy(np.ascontiguousarray(ei)), len(nodes), {"node.x": x})


def graph_to_networkx(g: Graph, attr: str = "label"):
    """An undirected networkx graph of a single ``Graph``; ``attr`` = row id of ``node.x``."""
    import networkx as nx

    G = nx.Graph()
    G.add_nodes_from(range(g.num_nodes))
    if "node.x" in g.fields and g.num_nodes:
        rows = field_rows(g.fields["node.x"], "node field `node.x`")
        _, inv = np.unique(rows, axis=0, return_inverse=True)
        nx.set_node_attributes(G, {i: int(c) for i, c in enumerate(inv.reshape(-1))}, attr)
    G.add_edges_from(g.edge_index.t().tolist())
    return G
