"""GraphLoader: coverage, determinism per seed, equality with a manual collate."""

from __future__ import annotations

import pytest
import torch

from graphdl.data.graph import Graph, collate
from graphdl.data.loader import GraphLoader
from graphdl.data.registry import Dataset
from graphdl.errors import DataError
from graphdl.testing.graph_cases import random_graph
from graphdl.types import Scalar


def make_graphs(n: int = 23) -> list[Graph]:
    out = []
    for i in range(n):
        n, e = 1 + i % 5, i % 7 if i % 5 else 0
        g = random_graph(n, e, 4, 2, seed=i, isolated=i % 3 == 0 or e < n)
        g["graph.id"] = torch.tensor([i])
        out.append(g)
    return out


GRAPHS = make_graphs()


def ids(loader) -> list[list[int]]:
    return [b["graph.id"].tolist() for b in loader]


def assert_same_graph(a: Graph, b: Graph) -> None:
    assert (a.num_nodes, a.num_graphs) == (b.num_nodes, b.num_graphs)
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.batch, b.batch)
    assert sorted(a.fields) == sorted(b.fields)
    for k in a.fields:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_cover_every_graph_once(shuffle, drop_last):
    loader = GraphLoader(GRAPHS, batch_size=5, shuffle=shuffle, seed=0, drop_last=drop_last)
    batches = ids(loader)
    assert len(batches) == len(loader) == (4 if drop_last else 5)
    assert all(len(b) == 5 for b in batches[:4])
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == (20 if drop_last else 23)  # each graph at most once
    assert set(flat) <= set(range(23))
    if not shuffle:
        assert flat == list(range(len(flat)))


def test_shuffle_is_deterministic_per_seed_and_changes_per_epoch():
    a = GraphLoader(GRAPHS, 4, shuffle=True, seed=11)
    b = GraphLoader(GRAPHS, 4, shuffle=True, seed=11)
    c = GraphLoader(GRAPHS, 4, shuffle=True, seed=12)
    ea0, ea1 = ids(a), ids(a)
    assert ea0 == ids(b) and ea1 == ids(b)
    assert ea0 != ea1 and ea0 != ids(c)
    assert ea0 != [list(range(i, min(i + 4, 23))) for i in range(0, 23, 4)]
    torch.manual_seed(123)  # a global RNG draw in between changes nothing
    a.set_epoch(0)
    assert ids(a) == ea0
    assert a.batch_indices(1) == ea1
    # without a seed, torch's global seed decides
    torch.manual_seed(5)
    d = GraphLoader(GRAPHS, 4, shuffle=True)
    torch.manual_seed(5)
    assert ids(d) == ids(GraphLoader(GRAPHS, 4, shuffle=True))


def test_loader_batch_equals_manual_collate():
    loader = GraphLoader(GRAPHS, 6, shuffle=True, seed=3)
    idx = loader.batch_indices()
    for b, ix in zip(loader, idx):
        assert_same_graph(b, collate([GRAPHS[i] for i in ix]))
        # and splitting the batch gives the graphs back
        for g, i in zip(b.graphs(), ix):
            assert_same_graph(g, GRAPHS[i])


def test_dataset_objects_and_workers():
    ds = Dataset(graphs=GRAPHS, fields={"node.h": Scalar(4), "edge.e": Scalar(2)})
    loader = GraphLoader(ds, 10, shuffle=True, seed=1)
    assert len(loader) == 3
    assert sorted(i for b in ids(loader) for i in b) == list(range(23))
    loader.set_epoch(0)
    with_workers = GraphLoader(ds, 10, shuffle=True, seed=1, num_workers=1)
    for a, b in zip(loader, with_workers):
        assert_same_graph(a, b)


def test_empty_input_and_bad_arguments():
    assert list(GraphLoader([], 4)) == [] and len(GraphLoader([], 4)) == 0
    assert len(GraphLoader(GRAPHS[:3], 4, drop_last=True)) == 0
    for bad in [0, -1, 2.5, True]:
        with pytest.raises(DataError, match="batch_size must be a positive integer"):
            GraphLoader(GRAPHS, bad)
    with pytest.raises(DataError, match="num_workers"):
        GraphLoader(GRAPHS, 2, num_workers=-1)
