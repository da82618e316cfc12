"""``multihead_attention`` / ``transformer_encoder_layer`` against torch's own modules.

Weights are copied with ``load_state_dict`` (our parameter names are torch's), everything runs
in float64 in eval mode, and sequences of different lengths share one batch: torch gets them
padded with ``src_key_padding_mask`` (and ``is_causal`` with the square subsequent mask), we get
one graph per sequence on the ``complete`` / ``causal`` graph with self-loops. Only valid
positions are compared. Tolerance 1e-10 (the issue's bar): both sides compute the same sums of
O(1) terms in another order, so the differences are float64 round-off (measured ~1e-15).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphdl.compile import compile_spec
from graphdl.data.graph import Graph, collate
from graphdl.errors import InferenceError
from graphdl.nn.base import BuildContext
from graphdl.nn.transformer import MultiheadAttention, TransformerEncoderLayer
from graphdl.ops.neighbors import build_graph
from graphdl.spec.model import GraphSpec

DT = torch.float64
TOL = 1e-10
D, H, FF = 16, 4, 24
LENGTHS = [5, 1, 7, 3]


def _sequences(lengths=LENGTHS, d=D, seed=0):
    """Padded ``(B, L, d)`` inputs with torch's key-padding mask, and the same as a graph batch."""
    gen = torch.Generator().manual_seed(seed)
    b, m = len(lengths), max(lengths)
    x = torch.randn(b, m, d, generator=gen, dtype=DT)
    pad = torch.arange(m).view(1, m) >= torch.tensor(lengths).view(b, 1)
    x = x.masked_fill(pad.unsqueeze(-1), 0.0)
    batch = collate([Graph(None, n, {"node.h": x[i, :n]}) for i, n in enumerate(lengths)])
    return x, pad, batch


def _graph(batch, kind, self_loops=True):
    g = build_graph(batch, GraphSpec(kind=kind))
    return g.add_self_loops() if self_loops else g


def _valid(y, lengths=LENGTHS):
    return torch.cat([y[i, :n] for i, n in enumerate(lengths)])


def _torch_layer(ref, x, pad, kind):
    """torch's layer or stack on padded sequences (a float padding mask, as the causal mask is float)."""
    if kind == "causal":
        mask = nn.Transformer.generate_square_subsequent_mask(x.size(1), dtype=DT)
        key = "mask" if isinstance(ref, nn.TransformerEncoder) else "src_mask"
        return ref(x, **{key: mask}, is_causal=True, src_key_padding_mask=pad.to(DT).masked_fill(pad, float("-inf")))
    return ref(x, src_key_padding_mask=pad)


@pytest.mark.parametrize("lowering", ["dense", "sparse"])
@pytest.mark.parametrize("kind", ["complete", "causal"])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_encoder_layer_equals_torch(act, norm_first, kind, lowering):
    torch.manual_seed(1)
    ref = nn.TransformerEncoderLayer(D, H, FF, dropout=0.1, activation=act, norm_first=norm_first,
                                     batch_first=True).to(DT).eval()
    ours = TransformerEncoderLayer.build(
        {"heads": H, "ff_dim": FF, "activation": act, "norm_first": norm_first, "lowering": lowering},
        {"node.h": D}, BuildContext(graph_kind=kind, self_loops=True)).to(DT).eval()
    ours.load_state_dict(ref.state_dict())  # same names, same shapes: torch's layer loads as is
    x, pad, batch = _sequences()
    g = _graph(batch, kind)
    with torch.no_grad():
        want = _valid(_torch_layer(ref, x, pad, kind))
        got = ours(g, {"node.h": g["node.h"]})["node.h"]
    assert (got - want).abs().max().item() <= TOL


@pytest.mark.parametrize("kind", ["complete", "causal"])
def test_four_layer_spec_equals_nn_transformer_encoder(kind):
    """A compiled spec (``repeat: 4``) against ``nn.TransformerEncoder`` (4 clones + final norm)."""
    spec = {"graphdl": 1, "inputs": {"node.h": D}, "graph": {"kind": kind, "self_loops": True},
            "model": {"layers": [
                {"type": "transformer_encoder_layer", "repeat": 4, "heads": H, "ff_dim": FF, "activation": "gelu"},
                {"type": "layer_norm", "input": "node.h"}]}}
    model = compile_spec(spec, dtype=DT).eval()
    torch.manual_seed(2)
    layer = nn.TransformerEncoderLayer(D, H, FF, activation="gelu", batch_first=True)
    ref = nn.TransformerEncoder(layer, 4, norm=nn.LayerNorm(D), enable_nested_tensor=False).to(DT).eval()
    with torch.no_grad():  # the clones of nn.TransformerEncoder start equal: make them differ
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sd = {}
    for i in range(4):
        sd.update({f"blocks.{i}.{k}": v for k, v in ref.layers[i].state_dict().items()})
    sd.update({f"blocks.4.norm.{k}": v for k, v in ref.norm.state_dict().items()})
    model.load_state_dict(sd)
    x, pad, batch = _sequences()
    with torch.no_grad():
        want = _valid(_torch_layer(ref, x, pad, kind))
        got = model(batch)["node.h"]
    assert (got - want).abs().max().item() <= TOL


def _bias_graph(kind, self_loops, lengths=LENGTHS, seed=3):
    x, pad, batch = _sequences(lengths, seed=seed)
    g = _graph(batch, kind, self_loops)
    gen = torch.Generator().manual_seed(seed + 1)
    g["edge.b"] = torch.randn(g.num_edges, H, generator=gen, dtype=DT)
    g["edge.c"] = torch.randn(g.num_edges, 1, generator=gen, dtype=DT)
    return x, pad, g


def test_multihead_attention_with_edge_bias_equals_torch_float_mask():
    """``attn_bias`` is torch's 3-D additive ``attn_mask`` (B·H, L, L), read per edge and head."""
    torch.manual_seed(4)
    ref = nn.MultiheadAttention(D, H, batch_first=True).to(DT).eval()
    x, pad, g = _bias_graph("complete", True)
    b, m = x.shape[:2]
    dense = torch.zeros(b, H, m, m, dtype=DT)
    pos = torch.arange(g.num_nodes) - g.ptr[g.batch]
    gb = g.batch[g.dst]
    dense[gb, :, pos[g.dst], pos[g.src]] = g["edge.b"] + g["edge.c"]
    for lowering in ("dense", "sparse"):
        ours = MultiheadAttention.build({"heads": H, "attn_bias": ["edge.b", "edge.c"], "lowering": lowering},
                                        {"node.h": D, "edge.b": H, "edge.c": 1},
                                        BuildContext(graph_kind="complete", self_loops=True)).to(DT).eval()
        ours.load_state_dict(ref.state_dict())
        with torch.no_grad():
            want = _valid(ref(x, x, x, key_padding_mask=pad.to(DT).masked_fill(pad, float("-inf")),
                              attn_mask=dense.reshape(b * H, m, m),
                              need_weights=False)[0])
            got = ours(g, dict(g.fields))["node.h"]
        assert (got - want).abs().max().item() <= TOL, lowering


CONFIGS = [("complete", True), ("complete", False), ("causal", True), ("causal", False)]


@pytest.mark.parametrize("kind, self_loops", CONFIGS)
@pytest.mark.parametrize("bias", [False, True])
def test_dense_and_sparse_lowerings_agree_in_values_and_gradients(kind, self_loops, bias):
    """Every option of the graph (kind, loops), with and without a bias field, ragged batch with a
    one-node graph: outputs and the gradients of inputs, weights and bias agree to round-off
    (sums of ≤ 8 O(1) terms in float64: ~1e-15; 1e-12 leaves room for the softmax's exp)."""
    _, _, g = _bias_graph(kind, self_loops)
    ctx = BuildContext(graph_kind=kind, self_loops=self_loops)
    params = {"heads": H, "ff_dim": FF, "dropout": 0.3, "norm_first": True,
              "attn_bias": ["edge.b", "edge.c"] if bias else []}
    fields = {"node.h": D, "edge.b": H, "edge.c": 1}
    dense = TransformerEncoderLayer.build({**params, "lowering": "dense"}, fields, ctx).to(DT).eval()
    sparse = TransformerEncoderLayer.build({**params, "lowering": "sparse"}, fields, ctx).to(DT).eval()
    sparse.load_state_dict(dense.state_dict())
    results = []
    for block in (dense, sparse):
        f = {k: v.clone().requires_grad_() for k, v in g.fields.items()}
        out = block(g, f)["node.h"]
        (out * torch.linspace(-1, 1, out.numel(), dtype=DT).view_as(out)).sum().backward()
        results.append((out.detach(), {k: v.grad for k, v in f.items()}, [p.grad for p in block.parameters()]))
    (a, fa, pa), (b, fb, pb) = results
    assert torch.isfinite(a).all()
    assert (a - b).abs().max().item() <= 1e-12
    for k in fa:
        assert (fa[k] is None) == (fb[k] is None), k
        if fa[k] is None:
            continue
        assert torch.isfinite(fa[k]).all()
        assert (fa[k] - fb[k]).abs().max().item() <= 1e-12, k
    for x, y in zip(pa, pb):
        assert (x - y).abs().max().item() <= 1e-12


@pytest.mark.parametrize("lowering", ["dense", "sparse"])
def test_node_without_incoming_edge_gets_zero_attention_not_nan(lowering):
    """Strict causal graph: the first node of each sequence has no key. Its attention output is
    ``out_proj(0) = out_proj.bias``; a one-node complete graph without loops likewise."""
    for kind, lengths in (("causal", [4, 2, 1]), ("complete", [1, 3])):
        _, _, batch = _sequences(lengths)
        g = _graph(batch, kind, self_loops=False)
        block = MultiheadAttention.build({"heads": H, "lowering": lowering}, {"node.h": D},
                                         BuildContext(graph_kind=kind, self_loops=False)).to(DT)
        with torch.no_grad():
            block.out_proj.bias.normal_()
        f = {"node.h": g["node.h"].clone().requires_grad_()}
        out = block(g, f)["node.h"]
        out.sum().backward()
        lonely = (g.ptr[:-1] if kind == "causal" else g.ptr[:1])
        assert torch.equal(out[lonely].detach(), block.out_proj.bias.detach().expand(len(lonely), D))
        assert torch.isfinite(out).all() and torch.isfinite(f["node.h"].grad).all()


def test_padded_positions_never_leak_nan():
    """The dense lowering pads short graphs to the longest; a NaN planted in a padded slot's
    source would show up if padding were attended to. Here it cannot be planted (padding is
    zeros made inside), so check the stronger property: outputs of a graph do not depend on the
    other graphs of the batch (batched = one by one)."""
    ctx = BuildContext(graph_kind="complete", self_loops=True)
    block = TransformerEncoderLayer.build({"heads": H, "ff_dim": FF}, {"node.h": D}, ctx).to(DT).eval()
    _, _, batch = _sequences([6, 1, 3])
    g = _graph(batch, "complete")
    with torch.no_grad():
        together = block(g, {"node.h": g["node.h"]})["node.h"]
        alone = torch.cat([block(h, {"node.h": h["node.h"]})["node.h"]
                           for h in (_graph(x, "complete") for x in batch.graphs())])
    assert torch.isfinite(together).all()
    assert (together - alone).abs().max().item() <= 1e-12


def test_attention_dropout_is_unbiased_and_training_only():
    """Eval ignores dropout; in training the mean over many draws approaches the eval output
    (dropout rescales kept weights by 1/(1-p)): |mean − eval| within 5 standard errors. The
    draws are 2000 copies of one graph in one batch (each copy draws its own masks)."""
    copies = 2000
    _, _, one = _sequences([5])
    batch = collate([one] * copies)
    block = MultiheadAttention.build({"heads": H, "dropout": 0.5, "lowering": "sparse"}, {"node.h": D},
                                     BuildContext(graph_kind="complete", self_loops=True)).to(DT)
    g1, g = _graph(one, "complete"), _graph(batch, "complete")
    with torch.no_grad():
        ref = block.eval()(g1, {"node.h": g1["node.h"]})["node.h"]
        assert (block(g, {"node.h": g["node.h"]})["node.h"][:5] - ref).abs().max() <= 1e-12  # batching: round-off
        torch.manual_seed(0)
        draws = block.train()(g, {"node.h": g["node.h"]})["node.h"].view(copies, 5, D)
    assert not torch.equal(draws[0], ref)
    se = draws.std(0) / copies ** 0.5
    assert ((draws.mean(0) - ref).abs() <= 5 * se + 1e-12).all()


def test_permutation_equivariance_and_pooled_invariance_on_complete_graphs():
    """Without positional encodings an encoder on the complete graph is a set function:
    relabelling the nodes of each graph permutes the outputs, and a pooled output is unchanged."""
    spec = {"graphdl": 1, "inputs": {"node.h": D}, "graph": {"kind": "complete", "self_loops": True},
            "model": {"layers": [
                {"type": "transformer_encoder_layer", "repeat": 2, "heads": H, "ff_dim": FF, "label": "enc"},
                {"type": "readout", "input": "node.h", "output": "graph.h", "reduce": "sum"}],
                "outputs": ["node.h", "graph.h"]}}
    model = compile_spec(spec, dtype=DT).eval()
    _, _, batch = _sequences()
    gen = torch.Generator().manual_seed(7)
    key = batch.batch.to(DT) * 2 + torch.rand(batch.num_nodes, generator=gen, dtype=DT)
    perm = torch.argsort(key)  # within-graph shuffle: new node a is old node perm[a]
    permuted = Graph(None, batch.num_nodes, {"node.h": batch["node.h"][perm]}, batch=batch.batch,
                     num_graphs=batch.num_graphs)
    with torch.no_grad():
        a, b = model(batch), model(permuted)
    assert not torch.equal(perm, torch.arange(batch.num_nodes))
    assert (a["node.h"][perm] - b["node.h"]).abs().max().item() <= 1e-12  # reordered sums: round-off
    assert (a["graph.h"] - b["graph.h"]).abs().max().item() <= 1e-12


def test_causal_graph_sees_order():
    """The causal graph is not permutation equivariant: swapping two positions changes outputs."""
    ctx = BuildContext(graph_kind="causal", self_loops=True)
    block = MultiheadAttention.build({"heads": H}, {"node.h": D}, ctx).to(DT)
    _, _, batch = _sequences([4])
    x = batch["node.h"]
    swapped = Graph(None, 4, {"node.h": x[[1, 0, 2, 3]]})
    with torch.no_grad():
        a = block(_graph(batch, "causal"), {"node.h": x})["node.h"]
        b = block(_graph(swapped, "causal"), {"node.h": swapped["node.h"]})["node.h"]
    assert (a[0] - b[1]).abs().max() > 1e-3  # node 0 alone vs. node 0 after node 1
    assert (a[2:] - b[2:]).abs().max() <= 1e-12  # later positions see the same set


def test_block_errors_are_one_line():
    fields = {"node.h": 10, "edge.b": 3}
    with pytest.raises(InferenceError, match="4 heads cannot split evenly"):
        MultiheadAttention.build({"heads": 4}, fields)
    with pytest.raises(InferenceError, match="needs one per head"):
        MultiheadAttention.build({"heads": 2, "attn_bias": "edge.b"}, fields)
    with pytest.raises(InferenceError, match="is not an edge field"):
        MultiheadAttention.build({"heads": 2, "attn_bias": ["node.h"]}, fields)
    with pytest.raises(InferenceError, match="complete or causal"):
        TransformerEncoderLayer.build({"heads": 2, "ff_dim": 8, "lowering": "dense"}, fields)


@pytest.mark.parametrize("kind, self_loops, bias, words", [
    ("complete", True, False, "dense SDPA over padded per-graph blocks (complete graph + self-loops"),
    ("causal", True, False, "dense SDPA is_causal"),
    ("causal", True, True, "causal mask j <= i; edge bias as additive mask"),
    ("given", False, False, "sparse: edge logits + segment softmax + CSR product (graph kind `given`"),
])
def test_describe_names_the_lowering_and_why(kind, self_loops, bias, words):
    spec = {"graphdl": 1, "inputs": {"node.h": D, "edge.b": H}, "graph": {"kind": kind, "self_loops": self_loops},
            "model": {"layers": [{"type": "transformer_encoder_layer", "heads": H, "ff_dim": FF,
                                  "attn_bias": ["edge.b"] if bias else []}]}}
    text = compile_spec(spec).describe()
    assert words in text


@pytest.mark.parametrize("self_loops", [True, False])
def test_graph_transformer_block_lowers_causal_graphs_too(self_loops):
    """The TransformerConv-style ``transformer`` block shares the dense lowering: on a causal
    graph its dense and sparse paths agree (values and input gradients) to round-off."""
    from graphdl.nn.attention import GraphTransformer

    _, _, batch = _sequences()
    g = _graph(batch, "causal", self_loops)
    ctx = BuildContext(graph_kind="causal", self_loops=self_loops)
    dense = GraphTransformer.build({"out_dim": 4, "heads": 2}, {"node.h": D}, ctx).to(DT)
    sparse = GraphTransformer.build({"out_dim": 4, "heads": 2, "lowering": "sparse"}, {"node.h": D}, ctx).to(DT)
    sparse.load_state_dict(dense.state_dict())
    assert dense.dense and not sparse.dense
    outs = []
    for block in (dense, sparse):
        x = g["node.h"].clone().requires_grad_()
        out = block(g, {"node.h": x})["node.h"]
        out.pow(2).sum().backward()
        outs.append((out.detach(), x.grad))
    assert (outs[0][0] - outs[1][0]).abs().max() <= 1e-12
    assert (outs[0][1] - outs[1][1]).abs().max() <= 1e-12


def test_transformer_conv_is_the_legacy_transformer_block_under_pyg_name():
    """``transformer_conv`` and the first name ``transformer`` build one layer: specs with either
    compile, a state dict moves between them unchanged, and the outputs are bit-identical."""
    def spec(t):
        return {"graphdl": 1, "inputs": {"node.h": D}, "graph": {"kind": "complete"},
                "model": {"layers": [{"type": t, "input": "node.h", "out_dim": 4, "heads": 2}]}}

    old, new = compile_spec(spec("transformer"), dtype=DT), compile_spec(spec("transformer_conv"), dtype=DT)
    new.load_state_dict(old.state_dict())
    _, _, batch = _sequences()
    with torch.no_grad():
        assert torch.equal(old(batch)["node.h"], new(batch)["node.h"])
    assert "transformer_conv" in new.describe() and "dense SDPA" in new.describe()
