"""Your own graphs that are not molecules: CSV tables of nodes and edges, or a file of graphs.

``graph_csv`` reads the layout of DGL's ``CSVDataset`` (one table of nodes, one of edges, an
optional one of graphs), with the columns a spec should read named in the spec::

    dataset:
      type: graph_csv
      nodes: nodes.csv            # graph_id (optional), node_id, feature columns
      edges: edges.csv            # graph_id (optional), src_id, dst_id, feature columns
      graphs: graphs.csv          # optional: graph_id and graph-level columns (labels)
      node_fields: {node.h: [x, y, z]}     # a field from columns; its width is their number
      edge_fields: {edge.w: [weight]}
      graph_fields: {graph.y: [label]}
      undirected: true            # each edge row also gives the reverse edge (as PyG/DGL do)

Without a ``graph_id`` column the tables hold one graph (a citation or social network: node
tasks with a ``node_mask`` or ``node_random`` split). Node ids may be any text; they are
numbered in the order the nodes table lists them, per graph. Paths are relative to the file
that names them. Every problem is one line naming the file, the row and the column.

``graph_file`` reads graphs saved with :func:`save_graphs` — the way in from networkx
(:func:`graphdl.data.convert.from_networkx`), PyG ``Data`` objects
(:func:`graphdl.data.convert.from_pyg`) or anything else a Python script can build::

    graphs = [from_networkx(G, node_attrs={"x": "node.h"}, graph_attrs={"y": "graph.y"}) for G in mine]
    save_graphs(graphs, "mine.pt")          # dataset: {type: graph_file, path: mine.pt}

The file holds tensors and plain data only and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Literal

import torch
from pydantic import Field, field_validator

from graphdl.data.cache import atomic_write, sha256_file
from graphdl.data.graph import Graph
from graphdl.data.registry import Dataset, DatasetParams, DatasetType, register_dataset
from graphdl.errors import DataError, did_you_mean
from graphdl.types import FieldType, Scalar, parse_type, split_key


def _fields_validator(space: str):
    def check(cls, v: dict[str, list[str]]):
        for k, cols in v.items():
            if split_key(k)[0] != space:
                raise ValueError(f"`{k}` must be a {space} field (`{space}.<name>`)")
            if not cols:
                raise ValueError(f"`{k}` needs at least one column")
        return v

    return field_validator(f"{space}_fields")(classmethod(check))


class GraphCSVParams(DatasetParams):
    """See the module docstring. ``*_id`` options rename the id columns."""

    type: Literal["graph_csv"] = "graph_csv"
    nodes: str
    edges: str
    graphs: str | None = None
    node_fields: dict[str, list[str]] = Field(default_factory=dict)
    edge_fields: dict[str, list[str]] = Field(default_factory=dict)
    graph_fields: dict[str, list[str]] = Field(default_factory=dict)
    undirected: bool = False
    graph_id: str = "graph_id"
    node_id: str = "node_id"
    src_id: str = "src_id"
    dst_id: str = "dst_id"
    delimiter: str = ","

    _vn = _fields_validator("node")
    _ve = _fields_validator("edge")
    _vg = _fields_validator("graph")


def _read(path: str, what: str, delimiter: str) -> tuple[list[str], list[list[str]]]:
    if not os.path.exists(path):
        raise DataError(f"graph_csv: {what} table `{path}` not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise DataError(f"graph_csv: `{path}` is empty; expected a header line with column names")
        rows = [row for row in reader if row]
    for r, row in enumerate(rows):
        if len(row) != len(header):
            raise DataError(f"graph_csv: `{path}`, row {r} (line {r + 2}) has {len(row)} fields, the header has "
                            f"{len(header)}")
    return [h.strip() for h in header], rows


def _column(header: list[str], name: str, path: str) -> int:
    if name not in header:
        raise DataError(f"graph_csv: `{path}` has no column `{name}`{did_you_mean(name, header)} "
                        f"(columns: {', '.join(header)})")
    return header.index(name)


def _numbers(rows: list[list[str]], cols: list[int], names: list[str], path: str) -> torch.Tensor:
    out = torch.empty(len(rows), len(cols), dtype=torch.float32)
    for r, row in enumerate(rows):
        for j, c in enumerate(cols):
            try:
                v = float(row[c])
            except ValueError:
                raise DataError(f"graph_csv: `{path}`, row {r} (line {r + 2}), column `{names[j]}`: `{row[c]}` is "
                                f"not a number") from None
            if not math.isfinite(v):
                raise DataError(f"graph_csv: `{path}`, row {r} (line {r + 2}), column `{names[j]}` is {row[c]}; "
                                f"give a finite number (graphdl never trains on NaN silently)")
            out[r, j] = v
    return out


@register_dataset("graph_csv")
class GraphCSV(DatasetType):
    """Graphs from CSV tables of nodes, edges and (optionally) graphs; see the module docstring."""

    Params = GraphCSVParams

    @classmethod
    def fields(cls, p) -> dict[str, FieldType]:
        return {k: Scalar(len(c)) for f in (p.node_fields, p.edge_fields, p.graph_fields) for k, c in f.items()}

    @classmethod
    def field_docs(cls, p) -> dict[str, str]:
        out = {}
        for table, fields in ((p.nodes, p.node_fields), (p.edges, p.edge_fields), (p.graphs, p.graph_fields)):
            for k, cols in fields.items():
                out[k] = f"columns {', '.join(cols)} of {table}"
        return out

    @classmethod
    def load(cls, p, *, cache_dir: str | None = None, base_dir: str = ".") -> Dataset:
        def where(x: str) -> str:
            return x if os.path.isabs(x) else os.path.join(base_dir, x)

        npath, epath = where(p.nodes), where(p.edges)
        nh, nrows = _read(npath, "nodes", p.delimiter)
        eh, erows = _read(epath, "edges", p.delimiter)
        multi = p.graph_id in nh
        if multi != (p.graph_id in eh):
            raise DataError(f"graph_csv: `{p.graph_id}` must be a column of both tables or of neither "
                            f"(nodes: {'yes' if p.graph_id in nh else 'no'}, edges: {'yes' if p.graph_id in eh else 'no'})")
        ni, si, di = _column(nh, p.node_id, npath), _column(eh, p.src_id, epath), _column(eh, p.dst_id, epath)
        ngi = nh.index(p.graph_id) if multi else None
        egi = eh.index(p.graph_id) if multi else None

        # graph ids in the order of the graphs table (or of first appearance in the nodes table)
        gh, grows, gpath = None, [], None
        if p.graphs is not None:
            gpath = where(p.graphs)
            gh, grows = _read(gpath, "graphs", p.delimiter)
            gi = _column(gh, p.graph_id, gpath)
            order = [row[gi] for row in grows]
        elif p.graph_fields:
            raise DataError("graph_csv: `graph_fields` need a `graphs:` table holding those columns")
        else:
            order = list(dict.fromkeys(row[ngi] for row in nrows)) if multi else ["0"]
        gpos = {g: i for i, g in enumerate(order)}
        if len(gpos) != len(order):
            raise DataError(f"graph_csv: `{gpath}` lists a graph id twice")

        # nodes: per graph, ids numbered in table order
        local: list[dict[str, int]] = [{} for _ in order]
        node_rows: list[list[int]] = [[] for _ in order]
        for r, row in enumerate(nrows):
            g = row[ngi] if multi else "0"
            if g not in gpos:
                raise DataError(f"graph_csv: `{npath}`, row {r} (line {r + 2}): graph `{g}` is not in `{gpath}`")
            k = gpos[g]
            if row[ni] in local[k]:
                raise DataError(f"graph_csv: `{npath}`, row {r} (line {r + 2}): node `{row[ni]}` appears twice in "
                                f"graph `{g}`")
            local[k][row[ni]] = len(local[k])
            node_rows[k].append(r)
        for k, g in enumerate(order):
            if not local[k]:
                raise DataError(f"graph_csv: graph `{g}` has no nodes in `{npath}`; drop it or add its nodes")
        node_feats = {f: _numbers(nrows, [_column(nh, c, npath) for c in cols], cols, npath)
                      for f, cols in p.node_fields.items()}
        edge_feats = {f: _numbers(erows, [_column(eh, c, epath) for c in cols], cols, epath)
                      for f, cols in p.edge_fields.items()}
        graph_feats = {f: _numbers(grows, [_column(gh, c, gpath) for c in cols], cols, gpath)
                       for f, cols in p.graph_fields.items()} if gh is not None else {}

        edge_rows: list[list[int]] = [[] for _ in order]
        ends: list[list[tuple[int, int]]] = [[] for _ in order]
        for r, row in enumerate(erows):
            g = row[egi] if multi else "0"
            if g not in gpos:
                raise DataError(f"graph_csv: `{epath}`, row {r} (line {r + 2}): graph `{g}` has no nodes")
            k = gpos[g]
            for col, name in ((si, p.src_id), (di, p.dst_id)):
                if row[col] not in local[k]:
                    raise DataError(f"graph_csv: `{epath}`, row {r} (line {r + 2}), column `{name}`: node "
                                    f"`{row[col]}` is not a node of graph `{g}` in `{npath}`")
            edge_rows[k].append(r)
            ends[k].append((local[k][row[si]], local[k][row[di]]))

        graphs = []
        for k in range(len(order)):
            ei = torch.tensor(ends[k], dtype=torch.long).reshape(-1, 2).t()
            er = torch.tensor(edge_rows[k], dtype=torch.long)
            fields = {f: v[torch.tensor(node_rows[k])] for f, v in node_feats.items()}
            efields = {f: v[er] for f, v in edge_feats.items()}
            if p.undirected:
                loops = ei[0] == ei[1]
                rev = ei[:, ~loops].flip(0)
                ei = torch.cat([ei, rev], 1)
                efields = {f: torch.cat([v, v[~loops]]) for f, v in efields.items()}
            fields.update(efields)
            fields.update({f: v[k:k + 1] for f, v in graph_feats.items()})
            graphs.append(Graph(ei, len(local[k]), fields))
        digest = {os.path.basename(x): sha256_file(x) for x in (npath, epath, gpath) if x is not None}
        meta = {"source": {"nodes": npath, "edges": epath, "graphs": gpath}, "sha256": digest,
                "graph_ids": order, "num_rows": len(order)}
        targets = list(p.graph_fields)
        return Dataset(graphs, cls.fields(p), targets, None, meta)


# ---------------------------------------------------------------------------- graph_file
FORMAT = "graphdl.graphs"


def save_graphs(graphs: list[Graph], path: str | os.PathLike, fields: dict[str, str] | None = None) -> None:
    """Write ``graphs`` to ``path`` for ``dataset: {type: graph_file, path: ...}`` (atomically).

    ``fields``: the type of each field (``{"node.h": "16", "node.pos": "1o"}``); by default a
    field of shape ``(rows, d)`` is ``d`` scalars and ``(rows,)`` one. Every graph must carry the
    same fields. Raises :class:`DataError` naming the graph that differs.
    """
    if not graphs:
        raise DataError("save_graphs: no graphs to save")
    keys = sorted(graphs[0].fields)
    types = dict(fields or {})
    for k in keys:
        if k not in types:
            v = graphs[0].fields[k]
            types[k] = str(1 if v.dim() == 1 else int(torch.tensor(v.shape[1:]).prod()))
    items = []
    for i, g in enumerate(graphs):
        if sorted(g.fields) != keys:
            raise DataError(f"save_graphs: graph {i} has fields {sorted(g.fields)}, graph 0 has {keys}; every graph "
                            f"must carry the same fields")
        items.append({"num_nodes": g.num_nodes, "edge_index": g.edge_index.cpu(),
                      "fields": {k: v.detach().cpu() for k, v in g.fields.items()}})
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, "version": 1, "fields": types, "graphs": items}, f)


class GraphFileParams(DatasetParams):
    """``path``: a file written by :func:`save_graphs` (relative to the spec that names it);
    ``targets``: which of its fields are targets (for the record; tasks name theirs)."""

    type: Literal["graph_file"] = "graph_file"
    path: str
    targets: list[str] = Field(default_factory=list)


@register_dataset("graph_file")
class GraphFile(DatasetType):
    """Graphs saved by :func:`save_graphs` (from networkx, PyG or your own code)."""

    Params = GraphFileParams

    @classmethod
    def load(cls, p, *, cache_dir: str | None = None, base_dir: str = ".") -> Dataset:
        path = p.path if os.path.isabs(p.path) else os.path.join(base_dir, p.path)
        if not os.path.exists(path):
            raise DataError(f"graph_file: `{p.path}` not found (looked at {os.path.relpath(path)}); write it with "
                            f"graphdl.data.tables.save_graphs(graphs, path)")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # not a torch file, or pickled objects
            raise DataError(f"graph_file: cannot read `{p.path}` ({type(e).__name__}); write it with save_graphs") \
                from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"graph_file: `{p.path}` was not written by graphdl's save_graphs")
        types = {k: parse_type(v) for k, v in data["fields"].items()}
        graphs = [Graph(d["edge_index"], d["num_nodes"], d["fields"]) for d in data["graphs"]]
        meta = {"source": path, "sha256": sha256_file(path), "num_rows": len(graphs)}
        return Dataset(graphs, types, list(p.targets), None, meta)


__all__ = ["GraphCSV", "GraphCSVParams", "GraphFile", "GraphFileParams", "save_graphs"]
