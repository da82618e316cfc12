"""The generic ``message_passing`` block and Battaglia's ``graph_network`` against dense references."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from graphdl.compile import compile_spec
from graphdl.data.graph import Graph, collate
from graphdl.errors import InferenceError, SpecError
from graphdl.nn.generic import GraphNetwork, MessagePassing
from graphdl.spec.model import parse_spec_text

ROOT = Path(__file__).resolve().parents[2]
D, DE = 6, 6
DT = torch.float64
# Dense references in float64: outputs |y| ≤ 10 through ≤ 3 matmuls of width ≤ 18 and sums of ≤ 8
# messages carry ≤ ~50·eps·|y| ≈ 1e-13 (measured ≤ 9e-16): atol 1e-12, and 1e-10 after a 3-layer
# spec; either fails a float32 step (≈ 1e-7).


def _graph(seed: int = 0) -> Graph:
    """Two graphs in one batch: multi-edges, a self-loop, an isolated node, a node without in-edges."""
    gen = torch.Generator().manual_seed(seed)
    g1 = Graph(torch.tensor([[0, 1, 2, 2, 3, 0, 1, 1], [1, 2, 0, 0, 0, 3, 1, 3]]), 5,
               {"node.h": torch.randn(5, D, generator=gen, dtype=DT),
                "edge.e": torch.randn(8, DE, generator=gen, dtype=DT),
                "graph.u": torch.randn(1, 3, generator=gen, dtype=DT)})
    g2 = Graph(torch.tensor([[0, 1, 2, 3], [1, 0, 1, 1]]), 4,
               {"node.h": torch.randn(4, D, generator=gen, dtype=DT),
                "edge.e": torch.randn(4, DE, generator=gen, dtype=DT),
                "graph.u": torch.randn(1, 3, generator=gen, dtype=DT)})
    return collate([g1, g2])


def _build(params: dict, fields=None) -> MessagePassing:
    return MessagePassing.build(params, fields or {"node.h": D, "edge.e": DE}).to(DT)


# ---------------------------------------------------------------- dense references
def _incidence(g: Graph) -> torch.Tensor:
    """(N, E) with 1 where edge e ends at node i: the dense form of every aggregation."""
    m = torch.zeros(g.num_nodes, g.num_edges, dtype=DT)
    m[g.dst, torch.arange(g.num_edges)] = 1
    return m


def _dense_aggregate(g: Graph, msgs: torch.Tensor, op: str) -> torch.Tensor:
    inc = _incidence(g)
    if op in ("sum", "mean"):
        out = inc @ msgs
        return out / inc.sum(1, keepdim=True).clamp(min=1) if op == "mean" else out
    if msgs.size(0) == 0:
        return msgs.new_zeros(g.num_nodes, msgs.size(1))
    mask = inc.bool()[:, :, None]
    fill = float("-inf") if op == "max" else float("inf")
    full = torch.where(mask, msgs[None], torch.full_like(msgs[None], fill))
    red = full.amax(1) if op == "max" else full.amin(1)
    return torch.where(mask.any(1), red, torch.zeros_like(red))


def _dense_softmax(g: Graph, logits: torch.Tensor) -> torch.Tensor:
    """(E, H) softmax of each edge's logit among the edges into the same node, densely."""
    inc = _incidence(g).bool()
    full = torch.where(inc[:, :, None], logits[None], torch.full_like(logits[None], float("-inf")))
    w = torch.softmax(full, dim=1).nan_to_num(0.0)  # (N, E, H); rows of empty nodes are NaN -> 0
    return (w * inc[:, :, None]).sum(0)


# ------------------------------------------------------------------ aggregations
@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
def test_copy_message_each_aggregation_matches_dense(op):
    g = _graph()
    x = g["node.h"]
    for lowering in ("auto", "gather"):
        block = _build({"aggregate": op, "lowering": lowering})
        out = block(g, g.fields)["node.h"]
        ref = _dense_aggregate(g, x[g.src], op)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    # isolated node 4 and node 4's graph-mate without in-edges get 0, not -inf/NaN
    assert torch.all(out[4] == 0)


@pytest.mark.parametrize("op", ["sum", "mean"])
def test_csr_lowering_equals_gather_path_values_and_grads(op):
    g = _graph(1)
    csr = _build({"aggregate": op})
    gat = _build({"aggregate": op, "lowering": "gather"})
    assert csr.describe_extra() == f"csr spmm ({op})"
    assert gat.describe_extra() == f"gather + segment_{op}"
    x1 = g["node.h"].clone().requires_grad_()
    x2 = g["node.h"].clone().requires_grad_()
    y1 = csr(g, {"node.h": x1})["node.h"]
    y2 = gat(g, {"node.h": x2})["node.h"]
    assert (y1 - y2).abs().max() <= 1e-10
    w = torch.randn_like(y1)
    (y1 * w).sum().backward()
    (y2 * w).sum().backward()
    assert (x1.grad - x2.grad).abs().max() <= 1e-10


def test_csr_lowering_refused_for_edge_messages():
    with pytest.raises(InferenceError, match=r"`lowering: csr` needs a `copy` message from `src`"):
        _build({"message": "product", "edge_input": "edge.e", "lowering": "csr"})
    with pytest.raises(InferenceError, match=r"`lowering: csr`"):
        _build({"aggregate": "max", "lowering": "csr"})


@pytest.mark.parametrize("heads", [1, 2, 3])
def test_softmax_attention_matches_dense(heads):
    g = _graph(2)
    block = _build({"message": {"op": "linear", "inputs": ["src"], "out_dim": 6},
                    "aggregate": {"op": "softmax_attention", "heads": heads, "inputs": ["dst", "src", "edge"]},
                    "edge_input": "edge.e"})
    x, e = g["node.h"], g["edge.e"]
    out = block(g, g.fields)["node.h"]
    msgs = block.msg_lin(x[g.src])
    logits = F.leaky_relu(block.att(torch.cat([x[g.dst], x[g.src], e], -1)), 0.2)
    alpha = _dense_softmax(g, logits)
    # weights into each node sum to 1 per head (nodes with in-edges)
    sums = _incidence(g) @ alpha
    has_in = _incidence(g).sum(1) > 0
    torch.testing.assert_close(sums[has_in], torch.ones_like(sums[has_in]), rtol=0, atol=1e-12)
    weighted = (msgs.view(-1, heads, 6 // heads) * alpha[:, :, None]).reshape(-1, 6)
    torch.testing.assert_close(out, _incidence(g) @ weighted, rtol=0, atol=1e-12)
    assert block.describe_extra().startswith(f"gather + segment_softmax ({heads} head")


def test_attention_heads_must_divide_message_width():
    with pytest.raises(InferenceError, match=r"splits the message \(6 channels\) into 4 heads"):
        _build({"aggregate": {"op": "softmax_attention", "heads": 4}})


# ---------------------------------------------------------------------- messages
def test_linear_and_mlp_messages_over_src_dst_edge():
    g = _graph(3)
    x, e = g["node.h"], g["edge.e"]
    lin = _build({"message": {"op": "linear", "inputs": ["edge", "dst", "src"], "out_dim": 4},
                  "edge_input": "edge.e"})
    ref = _incidence(g) @ lin.msg_lin(torch.cat([e, x[g.dst], x[g.src]], -1))
    torch.testing.assert_close(lin(g, g.fields)["node.h"], ref, rtol=0, atol=1e-12)

    mlp = _build({"message": {"op": "mlp", "inputs": ["src", "dst", "edge"], "hidden": [7, 5], "out_dim": 4},
                  "aggregate": "mean", "edge_input": "edge.e"})
    msgs = mlp.msg_mlp(torch.cat([x[g.src], x[g.dst], e], -1))
    torch.testing.assert_close(mlp(g, g.fields)["node.h"], _dense_aggregate(g, msgs, "mean"), rtol=0, atol=1e-12)


def test_product_add_and_copy_edge_messages():
    g = _graph(4)
    x, e = g["node.h"], g["edge.e"]
    prod = _build({"message": "product", "edge_input": "edge.e"})
    torch.testing.assert_close(prod(g, g.fields)["node.h"], _incidence(g) @ (x[g.src] * e), rtol=0, atol=1e-12)
    add = _build({"message": {"op": "add", "act": "relu"}, "edge_input": "edge.e", "aggregate": "max"})
    torch.testing.assert_close(add(g, g.fields)["node.h"],
                               _dense_aggregate(g, torch.relu(x[g.src] + e), "max"), rtol=0, atol=1e-12)
    ce = _build({"message": {"op": "copy", "from": "edge"}, "edge_input": "edge.e", "output": "node.m"})
    out = ce(g, g.fields)
    assert list(out) == ["node.m"]
    torch.testing.assert_close(out["node.m"], _incidence(g) @ e, rtol=0, atol=1e-12)


def test_edge_matrix_message_is_nnconv():
    g = _graph(5)
    x, e = g["node.h"], g["edge.e"]
    block = _build({"message": {"op": "edge_matrix", "hidden": [8], "out_dim": 3}, "edge_input": "edge.e"})
    a = block.edge_net(e).view(-1, D, 3)  # A(e_ij): (E, d_in, out)
    msgs = torch.einsum("ed,edo->eo", x[g.src], a)
    torch.testing.assert_close(block(g, g.fields)["node.h"], _incidence(g) @ msgs, rtol=0, atol=1e-12)
    assert block.sig.writes["node.h"].dim == 3


# ----------------------------------------------------------------------- updates
def test_updates_gru_sum_linear_mlp():
    g = _graph(6)
    x = g["node.h"]
    agg = _incidence(g) @ x[g.src]

    gru = _build({"update": "gru"})
    torch.testing.assert_close(gru(g, g.fields)["node.h"], gru.gru(agg, x), rtol=0, atol=1e-12)
    # GRUCell by hand: r, z, n gates (PyTorch's order) on input agg, hidden x
    wi, wh, bi, bh = gru.gru.weight_ih, gru.gru.weight_hh, gru.gru.bias_ih, gru.gru.bias_hh
    gi, gh = agg @ wi.T + bi, x @ wh.T + bh
    r = torch.sigmoid(gi[:, :D] + gh[:, :D])
    z = torch.sigmoid(gi[:, D:2 * D] + gh[:, D:2 * D])
    n = torch.tanh(gi[:, 2 * D:] + r * gh[:, 2 * D:])
    torch.testing.assert_close(gru(g, g.fields)["node.h"], (1 - z) * n + z * x, rtol=0, atol=1e-12)

    s = _build({"update": {"op": "sum", "eps": 0.25}})
    torch.testing.assert_close(s(g, g.fields)["node.h"], 1.25 * x + agg, rtol=0, atol=1e-12)
    assert sum(p.numel() for p in s.parameters()) == 0
    s2 = _build({"update": {"op": "sum", "train_eps": True}})
    assert [n for n, _ in s2.named_parameters()] == ["eps"]

    lin = _build({"update": {"op": "linear", "inputs": ["agg", "self"]}, "out_dim": 4})
    torch.testing.assert_close(lin(g, g.fields)["node.h"], lin.upd_lin(torch.cat([agg, x], -1)), rtol=0, atol=1e-12)
    mlp = _build({"update": {"op": "mlp", "inputs": ["self"], "hidden": [5], "out_dim": 2}, "act": "tanh"})
    torch.testing.assert_close(mlp(g, g.fields)["node.h"], torch.tanh(mlp.upd_mlp(x)), rtol=0, atol=1e-12)


def test_generic_gin_equals_gin_block_and_reference():
    """specs/generic_gin.yaml with the weights of the dedicated `gin` block gives its outputs."""
    text = (ROOT / "specs" / "generic_gin.yaml").read_text()
    generic = compile_spec(parse_spec_text(text, "generic_gin.yaml"), dtype=DT).eval()
    layers = [b for b in generic.blocks]
    assert all(isinstance(b, MessagePassing) for b in layers)
    g = _graph(7)
    g = Graph(g.edge_index, g.num_nodes, {"node.h": torch.randn(g.num_nodes, 9, dtype=DT)},
              batch=g.batch, num_graphs=g.num_graphs)
    # hand-written reference: h' = MLP((1 + eps) h + A h), A the (dst, src) adjacency with multi-edges
    adj = torch.zeros(g.num_nodes, g.num_nodes, dtype=DT)
    adj.index_put_((g.dst, g.src), torch.ones(g.num_edges, dtype=DT), accumulate=True)
    h = g["node.h"]
    assert len(layers) == 3  # gin-in, then `repeat: 2` unshared with residuals
    for i, b in enumerate(layers):
        new = b.upd_mlp((1 + b.eps) * h + adj @ h)
        h = new if i == 0 else h + new
    out = generic(g)
    torch.testing.assert_close(out["node.h"], h, rtol=0, atol=1e-10)

    gin_spec = text.replace("type: message_passing", "type: gin")
    gin_spec = _to_gin_params(gin_spec)
    gin = compile_spec(parse_spec_text(gin_spec, "gin.yaml"), dtype=DT).eval()
    for b_gin, b_gen in zip(gin.blocks, layers):
        b_gin.mlp.load_state_dict(b_gen.upd_mlp.state_dict())
        b_gin.eps.data.copy_(b_gen.eps.data)
    torch.testing.assert_close(gin(g)["node.h"], out["node.h"], rtol=0, atol=1e-10)


def _to_gin_params(text: str) -> str:
    """Rewrite each generic layer of generic_gin.yaml into the `gin` block's parameters."""
    import yaml

    data = yaml.safe_load(text)
    layers = []
    for layer in data["model"]["layers"]:
        mlp = layer["update"]["mlp"]
        new = {"type": "gin", "out_dim": mlp["out_dim"], "hidden": mlp["hidden"], "norm": mlp.get("norm"),
               "eps": layer["update"].get("eps", 0.0), "train_eps": layer["update"].get("train_eps", False)}
        layers.append({**{k: v for k, v in layer.items() if k in ("repeat", "residual", "label")}, **new})
    data["model"]["layers"] = layers
    return yaml.safe_dump(data)


# ------------------------------------------------------------------------ errors
def test_message_passing_inference_errors():
    with pytest.raises(InferenceError, match=r"message `product` reads edge features, but the block has no "
                                             r"`edge_input:`; add e\.g\. `edge_input: edge\.e`"):
        _build({"message": "product"})
    with pytest.raises(InferenceError, match=r"`edge_input: edge\.e` is given but nothing reads `edge`"):
        _build({"edge_input": "edge.e"})
    with pytest.raises(InferenceError, match=r"combines `node\.h` \(6\) and `edge\.e` \(4\) channel by channel"):
        _build({"message": "product", "edge_input": "edge.e"}, {"node.h": D, "edge.e": 4})
    with pytest.raises(InferenceError, match=r"message `linear` needs `out_dim`"):
        _build({"message": "linear"})
    with pytest.raises(InferenceError, match=r"update `sum` adds the input \(6\) to the aggregated message \(4\)"):
        _build({"message": {"op": "linear", "out_dim": 4}, "update": "sum"})
    with pytest.raises(InferenceError, match=r"`out_dim: 5` but the update `gru` gives 6 channels"):
        _build({"message": "mlp", "update": "gru", "out_dim": 5, "edge_input": "edge.e"})
    with pytest.raises(InferenceError, match=r"needs field `node\.x`"):
        _build({"input": "node.x"})


def _spec(layer: str) -> str:
    return f"graphdl: 1\ninputs: {{node.h: 8, edge.e: 4}}\nmodel:\n  layers:\n    - type: message_passing\n      {layer}\n"


@pytest.mark.parametrize("layer, message", [
    ("aggregate: summ", (r"<s>:6:18: model\.layers\[0\]\.aggregate: expected 'sum', 'mean', 'max', 'min' or "
                         r"'softmax_attention', found `summ` \(text\); did you mean `sum`\?")),
    ("message: {op: lineer}", r"<s>:6:21: model\.layers\[0\]\.message\.op: unknown op `lineer`; did you mean `linear`\?"),
    ("message: {op: linear, outdim: 3}", (r"<s>:6:29: model\.layers\[0\]\.message\.outdim: unknown key `outdim` "
                                          r"in block `message_passing`; did you mean `out_dim`\?")),
    ("message: {inputs: [src]}", r"model\.layers\[0\]\.message: missing key `op` \(one of `copy`, `linear`, `mlp`"),
    ("message: {op: mlp, inputs: [source]}", (r"message\.inputs\[0\]: expected 'src', 'dst' or 'edge', found "
                                              r"`source` \(text\); did you mean `src`\?")),
    ("message: {op: mlp, inputs: [src, src]}", r"message\.inputs: `inputs` lists an entry twice"),
    ("update: {op: mlp, out_dim: -3}", r"update\.out_dim: expected greater than 0, found `-3`"),
    ("update: {op: sum, mlp: {out_dim: 3, hiden: [3]}}", r"update\.mlp\.hiden: unknown key `hiden`.*did you mean `hidden`"),
    ("aggregate: {op: softmax_attention, heads: 0}", r"aggregate\.heads: expected greater than 0, found `0`"),
    ("input: edge.e", r"message_passing reads a node field; `input: edge\.e` is not one"),
    ("message: product", r"<s>:5:7: model\.layers\[0\]: message_passing: the message `product` reads edge features"),
])
def test_message_passing_spec_errors(layer, message):
    with pytest.raises(SpecError, match=message):
        from graphdl.compile import plan_spec

        plan_spec(parse_spec_text(_spec(layer), "<s>"))


# ------------------------------------------------------------------ graph network
GN = {"edge_input": "edge.e", "global_input": "graph.u",
      "edge_model": {"hidden": [8], "out_dim": 5},
      "node_model": {"hidden": [8], "out_dim": 4},
      "global_model": {"hidden": [8], "out_dim": 2}}


def _gn(params: dict) -> GraphNetwork:
    return GraphNetwork.build(params, {"node.h": D, "edge.e": DE, "graph.u": 3}).to(DT)


def _red(xs: torch.Tensor, op: str, width: int) -> torch.Tensor:
    if xs.size(0) == 0:
        return torch.zeros(width, dtype=DT)
    return {"sum": xs.sum(0), "mean": xs.mean(0), "max": xs.amax(0), "min": xs.amin(0)}[op]


def _gn_reference(block: GraphNetwork, g: Graph, aggs=("sum", "sum", "sum")) -> dict:
    """Graph by graph, node by node: Battaglia et al.'s algorithm 1 written out with loops."""
    outs = {"edge.e": [], "node.h": [], "graph.u": []}
    for one in g.graphs():
        v, e, u = one["node.h"], one["edge.e"], one["graph.u"][0]
        src, dst = one.src.tolist(), one.dst.tolist()
        if block.edge_mlp is not None:
            e = torch.stack([block.edge_mlp(torch.cat([e[k], v[src[k]], v[dst[k]], u]))
                             for k in range(len(src))]) if src else e.new_zeros(0, 5)
        if block.node_mlp is not None:
            rows = []
            for i in range(one.num_nodes):
                into = e[[k for k in range(len(dst)) if dst[k] == i]]
                rows.append(block.node_mlp(torch.cat([_red(into, aggs[0], e.size(1)), v[i], u])))
            v = torch.stack(rows)
        if block.global_mlp is not None:
            u = block.global_mlp(torch.cat([_red(e, aggs[1], e.size(1)), _red(v, aggs[2], v.size(1)), u]))
        outs["edge.e"].append(e)
        outs["node.h"].append(v)
        outs["graph.u"].append(u[None])
    return {k: torch.cat(v) for k, v in outs.items()}


@pytest.mark.parametrize("aggs", [("sum", "sum", "sum"), ("mean", "max", "mean"), ("max", "mean", "min")])
def test_graph_network_matches_per_graph_reference(aggs):
    block = _gn({**GN, "edge_to_node": aggs[0], "edge_to_global": aggs[1], "node_to_global": aggs[2]})
    g = _graph(8)
    out = block(g, g.fields)
    assert set(out) == {"edge.e", "node.h", "graph.u"}
    assert out["edge.e"].shape == (12, 5) and out["node.h"].shape == (9, 4) and out["graph.u"].shape == (2, 2)
    ref = _gn_reference(block, g, aggs)
    for k in out:
        torch.testing.assert_close(out[k], ref[k], rtol=0, atol=1e-12)


def test_graph_network_slots_off_and_inputs():
    g = _graph(9)
    # node model only: aggregates the *input* edges; writes the node field only
    block = _gn({"edge_input": "edge.e", "edge_model": False, "node_model": {"out_dim": 4}})
    out = block(g, g.fields)
    assert set(out) == {"node.h"}
    ref = block.node_mlp(torch.cat([_incidence(g) @ g["edge.e"], g["node.h"]], -1))
    torch.testing.assert_close(out["node.h"], ref, rtol=0, atol=1e-12)
    # edge model only, reading just the endpoints; writes a new edge field
    block = _gn({"edge_model": {"out_dim": 3, "inputs": ["src", "dst"]}, "edge_output": "edge.m"})
    out = block(g, g.fields)
    assert set(out) == {"edge.m"} and block.sig.reads.keys() == {"node.h"}
    x = g["node.h"]
    torch.testing.assert_close(out["edge.m"], block.edge_mlp(torch.cat([x[g.src], x[g.dst]], -1)), rtol=0, atol=1e-12)
    # global model only (a DeepSets-style readout): graph field from nodes
    block = _gn({"global_model": {"out_dim": 2, "inputs": ["nodes"]}, "global_output": "graph.y",
                 "node_to_global": "mean"})
    out = block(g, g.fields)
    means = torch.stack([x[:5].mean(0), x[5:].mean(0)])
    torch.testing.assert_close(out["graph.y"], block.global_mlp(means), rtol=0, atol=1e-12)


def test_graph_network_errors():
    with pytest.raises(InferenceError, match=r"`node_model\.inputs` lists `global`, which this block does not have; "
                                             r"give it `global_input:`"):
        _gn({"node_model": {"out_dim": 3, "inputs": ["node", "global"]}})
    with pytest.raises(InferenceError, match=r"`node_model\.inputs` lists `agg`"):
        _gn({"node_model": {"out_dim": 3, "inputs": ["agg", "node"]}})
    with pytest.raises(InferenceError, match=r"no `global_output:` \(or `global_input:`\)"):
        _gn({"global_model": {"out_dim": 3}})
    with pytest.raises(InferenceError, match=r"the edge model writes edges but there is no `edge_output:`"):
        _gn({"edge_model": {"out_dim": 3}})
    spec = "graphdl: 1\ninputs: {node.h: 4}\nmodel:\n  layers:\n    - type: graph_network\n      @\n"
    from graphdl.compile import plan_spec

    with pytest.raises(SpecError, match=r"<s>:5:7: model\.layers\[0\]: graph_network has every slot off"):
        plan_spec(parse_spec_text(spec.replace("@", "edge_model: off"), "<s>"))
    with pytest.raises(SpecError, match=r"`node_output: edge\.h` must be a node field"):
        plan_spec(parse_spec_text(spec.replace("@", "node_model: {out_dim: 2}\n      node_output: edge.h"), "<s>"))
    with pytest.raises(SpecError, match=r"node_model\.outdim: unknown key `outdim`.*did you mean `out_dim`\?"):
        plan_spec(parse_spec_text(spec.replace("@", "node_model: {outdim: 2}"), "<s>"))


def test_graph_network_permutation_equivariance():
    """Relabel nodes and reorder edges: node and edge outputs follow, the global output is unchanged."""
    block = _gn({**GN, "edge_to_node": "mean", "node_to_global": "max"})
    g = _graph(10)
    gen = torch.Generator().manual_seed(3)
    # permute nodes within each graph (the batch vector must stay grouped)
    perm = torch.cat([torch.randperm(5, generator=gen), 5 + torch.randperm(4, generator=gen)])
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(9)
    eid = torch.arange(g.num_edges, dtype=DT)[:, None]
    fields = {"node.h": g["node.h"][perm], "edge.e": g["edge.e"], "graph.u": g["graph.u"], "edge.id": eid}
    gp = Graph(inv[g.edge_index], 9, fields, batch=g.batch, num_graphs=2)  # re-sorted by dst
    out, outp = block(g, g.fields), block(gp, gp.fields)
    order = gp["edge.id"][:, 0].long()
    torch.testing.assert_close(outp["node.h"], out["node.h"][perm], rtol=0, atol=1e-12)
    torch.testing.assert_close(outp["edge.e"], out["edge.e"][order], rtol=0, atol=1e-12)
    torch.testing.assert_close(outp["graph.u"], out["graph.u"], rtol=0, atol=1e-12)


def test_graph_network_spec_compiles_and_runs():
    model = compile_spec(str(ROOT / "specs" / "graph_network.yaml"))
    n = model.plan.inputs
    g = Graph(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3,
              {k: torch.randn(3 if k.startswith(("node", "edge")) else 1, t.dim) for k, t in n.items()})
    out = model(g)
    assert set(out) == set(model.output_fields)
    assert all(torch.isfinite(v).all() for v in out.values())


# ------------------------------------------------------------ awkward graphs, batching
def _mp_reference(block: MessagePassing, g: Graph) -> torch.Tensor:
    """The whole layer from the block's own modules, densely: concatenated edge features, incidence
    matrix aggregation, then the update."""
    p, x = block.p, g["node.h"]
    e = g["edge.e"] if p.edge_input else None
    part = {"src": x[g.src], "dst": x[g.dst], "edge": e}
    msg = p.message
    if msg.op == "copy":
        m = part["src"] if msg.from_ == "src" else e
    elif msg.op == "mlp":
        m = block.msg_mlp(torch.cat([part[k] for k in msg.inputs], -1))
    elif msg.op == "linear":
        m = block.msg_lin(torch.cat([part[k] for k in msg.inputs], -1))
    elif msg.op == "edge_matrix":
        m = torch.einsum("ed,edo->eo", part["src"], block.edge_net(e).view(e.size(0), x.size(1), -1)) \
            if e.size(0) else e.new_zeros(0, block.sig.info["msg_dim"])
    else:
        raise AssertionError(msg.op)
    agg = p.aggregate
    if agg.op == "softmax_attention":
        logits = F.leaky_relu(block.att(torch.cat([part[k] for k in agg.inputs], -1)), 0.2)
        alpha = _dense_softmax(g, logits)
        c = m.size(1)
        a = _incidence(g) @ (m.view(m.size(0), agg.heads, c // agg.heads) * alpha[:, :, None]).reshape(m.size(0), c)
    else:
        a = _dense_aggregate(g, m, agg.op)
    upd = p.update
    if upd.op == "replace":
        return a
    if upd.op == "gru":
        return block.gru(a, x)
    if upd.op == "sum":
        return block.upd_mlp((1 + block.eps) * x + a) if upd.mlp else (1 + block.eps) * x + a
    return block.upd_mlp(torch.cat([{"self": x, "agg": a}[k] for k in upd.inputs], -1))


CONFIGS = {
    "copy-sum-csr": {"aggregate": "sum"},
    "copy-mean-csr": {"aggregate": "mean"},
    "copy-max": {"aggregate": "max"},
    "copy-min-gather": {"aggregate": "min", "lowering": "gather"},
    "mlp-attention-gru": {"message": {"op": "mlp", "inputs": ["src", "edge"], "hidden": [5], "out_dim": 6},
                          "aggregate": {"op": "softmax_attention", "heads": 2, "inputs": ["dst", "src", "edge"]},
                          "update": "gru", "edge_input": "edge.e"},
    "edge-matrix-replace": {"message": {"op": "edge_matrix", "out_dim": 4}, "edge_input": "edge.e"},
    "linear-mean-gin": {"message": {"op": "linear", "inputs": ["dst", "src"], "out_dim": 6}, "aggregate": "mean",
                        "update": {"op": "sum", "eps": 0.5, "mlp": {"hidden": [4], "out_dim": 3}}},
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_message_passing_on_awkward_graphs(config):
    """Every catalogue case (no edges, isolated nodes, self-loops, multi-edges, stars, a 0-node graph)."""
    from graphdl.testing.graph_cases import graph_cases

    block = _build(CONFIGS[config], {"node.h": 6, "edge.e": 6})
    for name, g in graph_cases(feat_dim=6, edge_dim=6, include_empty=True):
        out = block(g, g.fields)["node.h"]
        assert out.shape[0] == g.num_nodes, name
        assert torch.isfinite(out).all(), name
        torch.testing.assert_close(out, _mp_reference(block, g), rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_message_passing_batched_equals_one_by_one(config):
    from graphdl.testing.graph_cases import graph_cases

    block = _build(CONFIGS[config], {"node.h": 6, "edge.e": 6})
    (_, g), = graph_cases("batch", feat_dim=6, edge_dim=6)
    assert g.num_graphs == 5
    whole = block(g, g.fields)["node.h"]
    parts = torch.cat([block(one, one.fields)["node.h"] for one in g.graphs()])
    torch.testing.assert_close(whole, parts, rtol=0, atol=1e-12)


def test_graph_network_batched_equals_one_by_one_and_empty_graphs():
    from graphdl.testing.graph_cases import graph_cases

    (_, g), = graph_cases("batch", feat_dim=D, edge_dim=DE)
    g["graph.u"] = torch.randn(g.num_graphs, 3, dtype=DT)
    for aggs in (("sum", "mean", "max"), ("max", "min", "mean")):
        block = _gn({**GN, "edge_to_node": aggs[0], "edge_to_global": aggs[1], "node_to_global": aggs[2]})
        whole = block(g, g.fields)
        parts = [block(one, one.fields) for one in g.graphs()]
        for k in whole:
            torch.testing.assert_close(whole[k], torch.cat([p[k] for p in parts]), rtol=0, atol=1e-12)
        torch.testing.assert_close(whole["graph.u"], _gn_reference(block, g, aggs)["graph.u"], rtol=0, atol=1e-12)


def test_gradients_through_the_generic_blocks():
    """gradcheck (float64) through gather, segment softmax/max and the CSR product."""
    g = _graph(11)
    small = Graph(g.edge_index, g.num_nodes, {"node.h": g["node.h"][:, :3].clone(), "edge.e": g["edge.e"][:, :3].clone(),
                                              "graph.u": g["graph.u"]}, batch=g.batch, num_graphs=2)
    fields = {"node.h": 3, "edge.e": 3, "graph.u": 3}
    for params in ({"aggregate": "sum"},
                   {"message": {"op": "linear", "inputs": ["src", "edge"], "out_dim": 4}, "edge_input": "edge.e",
                    "aggregate": {"op": "softmax_attention", "heads": 2, "inputs": ["dst", "src", "edge"]},
                    "update": {"op": "mlp", "out_dim": 2}},
                   {"message": {"op": "add", "act": "tanh"}, "edge_input": "edge.e", "aggregate": "max"}):
        block = MessagePassing.build(params, fields).to(DT)

        def f(x, e, block=block):
            return block(small, {"node.h": x, "edge.e": e})["node.h"]

        # gradcheck's defaults (atol 1e-5, rtol 1e-3) over O(1) Jacobians: round-off eps/1e-6 ≈ 2e-10 and
        # truncation 1e-12/6·|f‴| (measured ≤ 9e-10)
        assert torch.autograd.gradcheck(f, (small["node.h"].requires_grad_(), small["edge.e"].requires_grad_()))
    gn = GraphNetwork.build({**GN, "edge_to_node": "mean", "node_to_global": "max"}, fields).to(DT)

    def h(x, e, u):
        out = gn(small, {"node.h": x, "edge.e": e, "graph.u": u})
        return out["node.h"].sum() + out["graph.u"].sum() + out["edge.e"].sum()

    assert torch.autograd.gradcheck(h, (small["node.h"].detach().requires_grad_(),
                                        small["edge.e"].detach().requires_grad_(),
                                        small["graph.u"].detach().requires_grad_()))


@pytest.mark.slow
def test_torch_compile_of_a_graph_network_spec():
    """Inductor once failed on the edge -> graph mean (a ptr-less count scatter); the block passes edge offsets."""
    model = compile_spec(str(ROOT / "specs" / "graph_network.yaml")).eval()
    gen = torch.Generator().manual_seed(0)
    g = collate([Graph(torch.randint(0, n, (2, 3 * n), generator=gen), n,
                       {"node.h": torch.randn(n, 8, generator=gen), "edge.e": torch.randn(3 * n, 4, generator=gen),
                        "graph.u": torch.randn(1, 2, generator=gen)}) for n in (7, 12, 5)])
    with torch.no_grad():
        ref = model(g)["graph.y"]
        out = torch.compile(model)(g)["graph.y"]
    # float32, inductor fuses and reorders the sums: measured 6e-8 ≈ 2 eps32·|y| (|y| ≤ 0.3);
    # rtol 1e-5 ≈ 84 eps32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
