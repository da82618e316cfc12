"""``train.steps_per_epoch``: epochs of k batches cut from endless shuffled passes, resumable."""

from __future__ import annotations

import pytest
import torch

from graphdl.data.graph import Graph
from graphdl.data.loader import GraphLoader, StepLoader
from graphdl.errors import DataError


def _ids(batches) -> list[list[int]]:
    return [b["graph.id"].reshape(-1).tolist() for b in batches]


def test_epochs_continue_the_stream_of_passes():
    graphs = [Graph(None, 1, {"graph.id": torch.tensor([[i]])}) for i in range(7)]
    base = GraphLoader(graphs, 2, shuffle=True, seed=3)  # 4 batches per pass
    stream = [b for p in range(3) for b in base.batch_indices(p)]
    steps = StepLoader(GraphLoader(graphs, 2, shuffle=True, seed=3), 3)
    assert len(steps) == 3
    got = _ids(steps) + _ids(steps) + _ids(steps)  # epochs 0, 1, 2
    assert got == stream[:9]
    steps.set_epoch(1)  # a resumed run re-reads epoch 1 exactly
    assert _ids(steps) == stream[3:6]
    with pytest.raises(DataError, match="steps per epoch must be a positive integer"):
        StepLoader(base, 0)
