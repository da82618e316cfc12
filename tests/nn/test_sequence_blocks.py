"""Sequences as graphs: token sequences (``categorical(V)`` + ``embedding``), positional
encodings and the ``causal`` graph kind (and ``complete`` with loops placed in order)."""

from __future__ import annotations

import math

import pytest
import torch

from graphdl.compile import compile_spec
from graphdl.data.graph import Graph, collate
from graphdl.errors import DataError, InferenceError
from graphdl.nn.sequence import LearnedPE, SinusoidalPE, node_positions, sinusoidal_encoding
from graphdl.ops.neighbors import build_graph, causal_graph, complete_graph
from graphdl.spec.model import GraphSpec


def _seqs(lengths, vocab=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return collate([Graph(None, n, {"node.tok": torch.randint(0, vocab, (n,), generator=gen)}) for n in lengths])


def _lm_spec(vocab=7, dim=8):
    return {"graphdl": 1, "inputs": {"node.tok": f"categorical({vocab})"},
            "graph": {"kind": "causal", "self_loops": True},
            "model": {"layers": [{"type": "embedding", "input": "node.tok", "output": "node.h", "out_dim": dim},
                                 {"type": "sinusoidal_pe", "add_to": "node.h"},
                                 {"type": "transformer_encoder_layer", "heads": 2, "ff_dim": 16},
                                 {"type": "linear", "input": "node.h", "output": "node.logits", "out_dim": vocab}]}}


def test_token_sequences_run_and_bad_tokens_are_one_line():
    model = compile_spec(_lm_spec())
    assert model(_seqs([4, 2]))["node.logits"].shape == (6, 7)
    with pytest.raises(DataError, match="input field `node.tok` holds class 7, outside 0..6 of `node.tok: categorical"):
        model(Graph(None, 3, {"node.tok": torch.tensor([0, 7, 2])}))


# ------------------------------------------------------------------------ positional codes
def test_positions_restart_in_every_graph():
    g = _seqs([3, 1, 2])
    assert node_positions(g).tolist() == [0, 1, 2, 0, 0, 1]


def test_sinusoidal_encoding_is_the_paper_formula():
    pos, d = torch.arange(50), 6
    pe = sinusoidal_encoding(pos, d, dtype=torch.float64)
    for i in range(d // 2):
        w = 10000.0 ** (-2 * i / d)
        assert torch.allclose(pe[:, 2 * i], torch.sin(pos * w).double(), atol=1e-12)
        assert torch.allclose(pe[:, 2 * i + 1], torch.cos(pos * w).double(), atol=1e-12)
    assert sinusoidal_encoding(pos, 5).shape == (50, 5)  # odd width ends with a sine column


def test_sinusoidal_pe_adds_per_graph_positions_and_follows_the_dtype():
    g = _seqs([2, 3])
    block = SinusoidalPE.build({"add_to": "node.h"}, {"node.h": 4}).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    out = block(g, {"node.h": x})["node.h"]
    pe = sinusoidal_encoding(torch.tensor([0, 1, 0, 1, 2]), 4, dtype=torch.float64)
    assert out.dtype == torch.float64 and torch.equal(out, x + pe)
    alone = SinusoidalPE.build({"output": "node.pe", "dim": 4}, {}).double()
    assert torch.equal(alone(g, {})["node.pe"], pe)
    with pytest.raises(InferenceError, match="needs `dim`"):
        SinusoidalPE.build({}, {})
    with pytest.raises(InferenceError, match="adds a 3-channel encoding to `node.h`, which has 4 channels"):
        SinusoidalPE.build({"add_to": "node.h", "dim": 3}, {"node.h": 4})


def test_learned_pe_indexes_positions_and_refuses_long_graphs():
    block = LearnedPE.build({"output": "node.pe", "dim": 3, "max_len": 4}, {})
    g = _seqs([4, 2])
    out = block(g, {})["node.pe"]
    assert torch.equal(out, block.weight[[0, 1, 2, 3, 0, 1]])
    with pytest.raises(DataError, match="positions 0..3 \\(`max_len: 4`\\), but the batch holds a graph of 5 nodes"):
        block(_seqs([5]), {})


# ---------------------------------------------------------------------------- graph kinds
def _brute(lengths, keep):
    edges, start = [], 0
    for n in lengths:
        edges += [(start + j, start + i) for i in range(n) for j in range(n) if keep(i, j)]
        start += n
    return sorted(edges, key=lambda e: (e[1], e[0]))


@pytest.mark.parametrize("lengths", [[1], [4], [3, 1, 5, 2]])
def test_causal_and_complete_graphs_match_brute_force(lengths):
    batch = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    cases = {
        (causal_graph, False): lambda i, j: j < i, (causal_graph, True): lambda i, j: j <= i,
        (complete_graph, False): lambda i, j: j != i, (complete_graph, True): lambda i, j: True,
    }
    for (fn, loops), keep in cases.items():
        ei = fn(batch, len(lengths), self_loops=loops)
        assert list(map(tuple, ei.t().tolist())) == _brute(lengths, keep), (fn.__name__, loops)


def test_loops_placed_in_order_equal_loops_added_afterwards():
    """``build_graph(..., self_loops=True)`` (what ``prepare`` uses for complete/causal graphs)
    gives the edges and edge fields of ``build_graph(...).add_self_loops()``: a given loop's
    features are dropped, new loops are zero."""
    a = Graph(torch.tensor([[0, 1, 2], [1, 0, 2]]), 3, {"edge.e": torch.tensor([[1.0], [2.0], [9.0]])})
    b = Graph(torch.tensor([[0], [1]]), 2, {"edge.e": torch.tensor([[5.0]])})
    g = collate([a, b])
    for kind in ("complete", "causal"):
        fast = build_graph(g, GraphSpec(kind=kind), self_loops=True)
        slow = build_graph(g, GraphSpec(kind=kind)).add_self_loops()
        assert torch.equal(fast.edge_index, slow.edge_index) and torch.equal(fast["edge.e"], slow["edge.e"])
    with pytest.raises(ValueError, match="only for complete and causal"):
        build_graph(g, GraphSpec(kind="knn", k=1), self_loops=True)


def test_causal_spec_model_is_causal():
    """Changing a later token never changes an earlier position's output."""
    model = compile_spec(_lm_spec()).eval()
    g = _seqs([6])
    h = g["node.tok"].clone()
    h[4] = (h[4] + 1) % 7
    with torch.no_grad():
        a = model(g)["node.logits"]
        b = model(Graph(None, 6, {"node.tok": h}))["node.logits"]
    assert torch.equal(a[:4], b[:4]) and not torch.equal(a[4:], b[4:])
    assert math.isfinite(float(a.sum()))


@pytest.mark.parametrize("kind", ["complete", "causal"])
def test_dense_models_never_build_the_edge_list(kind):
    """A complete/causal graph without edge fields is made lazily: the dense lowering reads only
    ``ptr``, so no edge list exists after a forward pass; the sparse lowering builds it, and the
    two models agree (float64 round-off)."""
    spec = _lm_spec()
    spec["graph"]["kind"] = kind
    dense = compile_spec(spec, dtype=torch.float64).eval()
    spec["model"]["layers"][2]["lowering"] = "sparse"
    sparse = compile_spec(spec, dtype=torch.float64).eval()
    sparse.load_state_dict(dense.state_dict())
    g = _seqs([5, 1, 3])
    with torch.no_grad():
        a = dense(g)["node.logits"]
        prepared = dense.prepare(g)
        assert prepared._edges is None
        b = sparse(_seqs([5, 1, 3]))["node.logits"]
    assert (a - b).abs().max() <= 1e-12
    n = {"complete": 25 + 1 + 9, "causal": 15 + 1 + 6}[kind]
    assert prepared.num_edges == n and prepared._edges is not None  # built on demand
