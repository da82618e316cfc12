"""Own graphs that are not molecules: CSV tables (graph_csv) and files of graphs (graph_file)."""

from __future__ import annotations

import io
import textwrap

import networkx as nx
import pytest
import torch

from graphdl.data.convert import from_networkx
from graphdl.data.tables import GraphCSV, save_graphs
from graphdl.errors import DataError, SpecError
from graphdl.train.progress import Progress
from graphdl.train.runner import run

NODES = """\
graph_id,node_id,x,y
g0,a,0.5,1.0
g0,b,1.5,0.0
g0,c,2.0,1.0
g1,a,0.0,0.0
g1,b,1.0,1.0
"""
EDGES = """\
graph_id,src_id,dst_id,w
g0,a,b,1.0
g0,b,c,2.0
g1,a,b,0.5
"""
GRAPHS = """\
graph_id,label
g1,3.0
g0,7.0
"""


def _tables(tmp_path, nodes=NODES, edges=EDGES, graphs=GRAPHS):
    for name, text in (("nodes.csv", nodes), ("edges.csv", edges), ("graphs.csv", graphs)):
        (tmp_path / name).write_text(text)


def _load(tmp_path, **kw):
    p = GraphCSV.Params(type="graph_csv", nodes="nodes.csv", edges="edges.csv", graphs="graphs.csv",
                        node_fields={"node.h": ["x", "y"]}, edge_fields={"edge.w": ["w"]},
                        graph_fields={"graph.y": ["label"]}, **kw)
    return GraphCSV.load(p, base_dir=str(tmp_path))


def test_graph_csv_reads_graphs_in_the_graphs_table_order(tmp_path):
    _tables(tmp_path)
    ds = _load(tmp_path, undirected=True)
    assert ds.meta["graph_ids"] == ["g1", "g0"] and ds.fields["node.h"].size == 2
    g1, g0 = ds.graphs
    assert g1.num_nodes == 2 and g0.num_nodes == 3
    assert g0["graph.y"].tolist() == [[7.0]] and g1["graph.y"].tolist() == [[3.0]]
    assert torch.equal(g0["node.h"], torch.tensor([[0.5, 1.0], [1.5, 0.0], [2.0, 1.0]]))
    # undirected: a -> b, b -> c and their reverses, each reverse with the same weight (sorted by destination)
    pairs = {(int(s), int(d)): float(w) for (s, d), w in zip(g0.edge_index.t(), g0["edge.w"][:, 0])}
    assert pairs == {(0, 1): 1.0, (1, 0): 1.0, (1, 2): 2.0, (2, 1): 2.0}


@pytest.mark.parametrize("nodes, edges, message", [
    (NODES.replace("g0,b,1.5,0.0", "g0,b,1.5,oops"), EDGES,
     r"`.*nodes.csv`, row 1 \(line 3\), column `y`: `oops` is not a number"),
    (NODES.replace("g0,b,1.5,0.0", "g0,b,1.5,nan"), EDGES, r"row 1 \(line 3\), column `y` is nan; give a finite"),
    (NODES, EDGES.replace("g0,b,c,2.0", "g0,b,z,2.0"),
     r"`.*edges.csv`, row 1 \(line 3\), column `dst_id`: node `z` is not a node of graph `g0`"),
    (NODES + "g0,a,9,9\n", EDGES, r"row 5 \(line 7\): node `a` appears twice in graph `g0`"),
])
def test_graph_csv_errors_name_file_row_and_column(tmp_path, nodes, edges, message):
    _tables(tmp_path, nodes, edges)
    with pytest.raises(DataError, match=message):
        _load(tmp_path)


SPEC = """\
graphdl: 1
name: own
inputs: {{node.h: 2, edge.w: 1}}
model:
  layers:
    - {{type: gine, input: node.h, edge_input: edge.w, project_edges: true, hidden: [8], out_dim: 8}}
    - {{type: readout, reduce: sum, input: node.h, output: graph.h}}
    - {{type: linear, input: graph.h, output: graph.y, out_dim: 1}}
task: {{type: regression, target: graph.y, metrics: [mae]}}
dataset:
{dataset}
  split: {{type: random, fractions: [0.5, 0.25, 0.25]}}
train: {{epochs: 2, batch_size: 4, seed: 0}}
"""


def test_a_spec_trains_on_csv_tables(tmp_path):
    nodes = "graph_id,node_id,x,y\n" + "".join(f"{g},{i},{g % 3},{i}\n" for g in range(12) for i in range(3))
    edges = "graph_id,src_id,dst_id,w\n" + "".join(f"{g},0,1,1\n{g},1,2,{g}\n" for g in range(12))
    graphs = "graph_id,label\n" + "".join(f"{g},{g}\n" for g in range(12))
    _tables(tmp_path, nodes, edges, graphs)
    (tmp_path / "s.yaml").write_text(SPEC.format(dataset=textwrap.indent(textwrap.dedent("""\
        type: graph_csv
        nodes: nodes.csv
        edges: edges.csv
        graphs: graphs.csv
        node_fields: {node.h: [x, y]}
        edge_fields: {edge.w: [w]}
        graph_fields: {graph.y: [label]}
        undirected: true"""), "  ")))
    m = run(str(tmp_path / "s.yaml"), out=str(tmp_path / "r"), progress=Progress(io.StringIO()))
    assert m["dataset"]["graphs"] == 12 and m["split"]["sizes"] == {"train": 6, "val": 3, "test": 3}
    from graphdl.cli import main

    assert main(["check", str(tmp_path / "s.yaml")]) == 0  # the fields are known from the spec alone
    bad = (tmp_path / "s.yaml").read_text().replace("node.h: 2,", "node.h: 3,")
    (tmp_path / "bad.yaml").write_text(bad)
    with pytest.raises(SpecError, match=r"declares `node.h: 3` but dataset `graph_csv` gives `node.h: 2`"):
        run(str(tmp_path / "bad.yaml"), out=str(tmp_path / "r2"), progress=Progress(io.StringIO()))


def test_networkx_graphs_through_save_graphs_train(tmp_path):
    graphs = []
    for k in range(12):
        G = nx.cycle_graph(3 + k % 4)
        nx.set_node_attributes(G, {v: [float(v), 1.0] for v in G}, "x")
        nx.set_edge_attributes(G, 1.0, "w")
        G.graph["y"] = float(len(G))
        graphs.append(from_networkx(G, node_attrs={"x": "node.h"}, edge_attrs={"w": "edge.w"},
                                    graph_attrs={"y": "graph.y"}))
    save_graphs(graphs, tmp_path / "mine.pt")
    (tmp_path / "s.yaml").write_text(SPEC.format(dataset="  type: graph_file\n  path: mine.pt"))
    m = run(str(tmp_path / "s.yaml"), out=str(tmp_path / "r"), progress=Progress(io.StringIO()))
    assert m["dataset"]["graphs"] == 12
    with pytest.raises(DataError, match="every graph must carry the same fields"):
        save_graphs([graphs[0], graphs[1].replace(node__extra=torch.zeros(graphs[1].num_nodes, 1))],
                    tmp_path / "x.pt")


def test_describe_dataset_lists_fields_with_widths_and_meaning(capsys):
    from pathlib import Path

    from graphdl.cli import main

    root = Path(__file__).resolve().parents[2]
    assert main(["describe", "--dataset", str(root / "datasets" / "freesolv.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("dataset type `freesolv`: ")
    assert out[1].startswith("  node.h: 72  RDKit atom features per heavy atom: atomic_num [0:38], degree [38:45]")
    assert out[2].startswith("  edge.e: 14  RDKit bond features, both directions of every bond: bond_type [0:5]")
    assert out[3] == "  graph.y: 1  targets: expt"
    assert main(["describe", "--dataset", "--json", str(root / "specs" / "molecular" / "dmpnn_freesolv.yaml")]) == 0
    import json

    d = json.loads(capsys.readouterr().out)
    assert d["type"] == "freesolv" and d["fields"]["node.h"]["type"] == "72"
