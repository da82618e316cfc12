"""Inputs that used to fail deep inside torch get one line naming the field (GraphModel.check_inputs)."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

import graphdl
from graphdl.data.convert import from_networkx
from graphdl.errors import DataError


def model(inputs=None, layer=None):
    return graphdl.compile_spec({
        "graphdl": 1, "inputs": inputs or {"node.x": 1},
        "model": {"layers": [layer or {"type": "gcn", "input": "node.x", "out_dim": 4}], "outputs": ["node.x"]},
    })


def path_graph(values):
    G = nx.path_graph(len(values))
    nx.set_node_attributes(G, dict(enumerate(values)), "x")
    return from_networkx(G, node_attrs=["x"])


def test_a_one_dimensional_scalar_attribute_is_read_as_one_channel():
    g = path_graph([0.0, 1.0, 2.0, 3.0])
    assert g["node.x"].shape == (4,)  # what from_networkx gives for a scalar attribute
    m = model()
    out = m(g)["node.x"]
    ref = m(g.replace(node__x=g["node.x"][:, None]))["node.x"]
    assert out.shape == (4, 4)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)  # the same tensor, viewed (N, 1)


def test_float64_features_into_a_float32_model_name_the_field_and_the_fix():
    g = path_graph([0.0, 1.0, 2.0]).to(torch.float64)
    assert g.edge_index.dtype == torch.long  # Graph.to(dtype) converts floating fields only
    with pytest.raises(DataError) as info:
        model()(g)
    assert str(info.value) == ("input field `node.x` is float64 but the model's parameters are float32; convert the "
                               "batch with `batch.to(torch.float32)`, or the model with `model.to(torch.float64)`")
    assert model().double()(g)["node.x"].dtype == torch.float64
    assert model()(g.to(torch.float32))["node.x"].dtype == torch.float32


def test_integer_features_are_refused_with_the_conversion():
    g = path_graph([0, 1, 2])
    assert g["node.x"].dtype == torch.int64
    with pytest.raises(DataError) as info:
        model()(g)
    assert str(info.value) == ("input field `node.x` holds int64 values, but `node.x: 1` is a real-valued feature; "
                               "convert it with `.float()` (or declare it as the model's dtype)")


def test_a_wider_field_than_declared_is_still_refused():
    g = path_graph([0.0, 1.0]).replace(node__x=torch.zeros(2, 3))
    with pytest.raises(DataError, match=r"input field `node.x` has trailing shape \(3,\), the spec declares 1"):
        model()(g)
