"""D-MPNN block: chemprop parity with copied weights, reverse edges, symmetry, batching."""

import pytest
import torch

from graphdl.data.featurize import smiles_to_graph
from graphdl.data.graph import Graph, collate
from graphdl.nn.dmpnn import DMPNN, reverse_edges

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "[Na+].[Cl-]", "C"]


def batch(dtype=torch.float64):
    return collate([smiles_to_graph(s, dtype=dtype) for s in SMILES])


def test_reverse_edges_of_a_molecule_batch():
    g = batch()
    rev, ok = reverse_edges(g)
    assert bool(ok.all())
    assert torch.equal(g.src[rev], g.dst) and torch.equal(g.dst[rev], g.src)
    assert torch.equal(rev[rev], torch.arange(g.num_edges))


def test_reverse_edges_of_a_directed_graph():
    g = Graph([[0, 1, 2], [1, 0, 0]], 3)  # 2 -> 0 has no reverse
    rev, ok = reverse_edges(g)
    src, dst = g.src.tolist(), g.dst.tolist()
    for e in range(3):
        if (dst[e], src[e]) in zip(src, dst):
            assert ok[e] and (src[rev[e]], dst[rev[e]]) == (dst[e], src[e])
        else:
            assert not ok[e]


@pytest.mark.parametrize("depth", [1, 3])
def test_matches_chemprop_bond_message_passing(depth):
    chemprop_mp = pytest.importorskip("chemprop.nn.message_passing")
    from chemprop.data import BatchMolGraph, MolGraph

    torch.manual_seed(0)
    graphs = [smiles_to_graph(s, dtype=torch.float64) for s in SMILES]
    ours = DMPNN.build({"hidden": 24, "depth": depth}, {"node.h": 72, "edge.e": 14}).double().eval()
    theirs = chemprop_mp.BondMessagePassing(d_v=72, d_e=14, d_h=24, depth=depth).double().eval()
    for name in ("W_i", "W_h", "W_o"):
        getattr(theirs, name).load_state_dict(getattr(ours, name).state_dict())
    mgs = []
    for g in graphs:
        rev, _ = reverse_edges(g)
        mgs.append(MolGraph(g["node.h"].numpy(), g["edge.e"].numpy(), g.edge_index.numpy(), rev.numpy()))
    bmg = BatchMolGraph(mgs)
    g = collate(graphs)
    bmg.V, bmg.E = g["node.h"], g["edge.e"]  # chemprop batches in float32; keep float64
    want = theirs(bmg)
    got = ours(g, dict(g.fields))["node.h"]
    assert got.shape == (g.num_nodes, 24)
    # float64 on both sides, |h| ≤ ~1 after 3 message steps of width 24: ≤ ~100·eps ≈ 2e-14; 1e-12 fails a
    # float32 step (chemprop's own batching dtype)
    assert (got - want).abs().max().item() <= 1e-12


def test_permuting_atoms_permutes_outputs():
    torch.manual_seed(1)
    block = DMPNN.build({"hidden": 8, "depth": 3}, {"node.h": 72, "edge.e": 14}).double().eval()
    g = smiles_to_graph("CC(=O)Nc1ccc(O)cc1", dtype=torch.float64)
    perm = torch.randperm(g.num_nodes)
    inv = torch.argsort(perm)
    h = g["node.h"][perm]
    edge_index = inv[g.edge_index]
    g2 = Graph(edge_index, g.num_nodes, {"node.h": h, "edge.e": g["edge.e"]})
    a = block(g, dict(g.fields))["node.h"]
    b = block(g2, dict(g2.fields))["node.h"]
    # float64, |h| ≤ 0.4, the same sums in another order: measured 6e-17 (rtol 0: the default 1e-5 would
    # pass a float32 step)
    assert torch.allclose(b, a[perm], atol=1e-12, rtol=0)


def test_batched_equals_one_by_one():
    torch.manual_seed(2)
    block = DMPNN.build({"hidden": 8, "depth": 2}, {"node.h": 72, "edge.e": 14}).double().eval()
    graphs = [smiles_to_graph(s, dtype=torch.float64) for s in SMILES]
    g = collate(graphs)
    together = block(g, dict(g.fields))["node.h"]
    alone = torch.cat([block(x, dict(x.fields))["node.h"] for x in graphs])
    assert torch.allclose(together, alone, atol=1e-12, rtol=0)  # as above (measured 0)


def test_gradients_flow_to_every_weight():
    block = DMPNN.build({"hidden": 8, "depth": 3}, {"node.h": 72, "edge.e": 14})
    g = batch(torch.float32)
    block(g, dict(g.fields))["node.h"].sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_wrong_fields_are_refused():
    from graphdl.errors import InferenceError

    with pytest.raises(InferenceError, match=r"needs field `edge.e`"):
        DMPNN.build({}, {"node.h": 72})
    with pytest.raises(InferenceError, match=r"`edge_input` must be an edge field, found `node.e`"):
        DMPNN.build({"edge_input": "node.e"}, {"node.h": 72, "node.e": 3})
