"""``graphdl export``: a trained spec as a plain PyTorch module built from DGL or PyG layers.

What is written (``--out DIR``)
-------------------------------
* ``model.py`` — Python source with no graphdl import: ``class ExportedModel(torch.nn.Module)``
  whose layers are ``dgl.nn.pytorch`` (``--to dgl``) or ``torch_geometric.nn`` (``--to pyg``)
  layers for the blocks that have a counterpart, and ``torch.nn`` modules for the field-wise
  blocks (linear, mlp, dropout, activations, batch / layer norm, concat). A ``load(directory)``
  function builds it and loads the weights.
* ``weights.pt`` — its ``state_dict`` (tensors only: ``torch.load(path, weights_only=True)``).
* ``export.json`` — provenance: spec, checkpoint, target, versions, the block -> layer table and
  the parity check below.

Calling convention (fields keyed as in the spec)::

    net = model.load("DIR")                      # eval mode
    out = net(g, {"node.h": x, "edge.e": e})     # DGL: g a DGLGraph (dgl.batch for several)
    out = net(edge_index, {"node.h": x}, batch)  # PyG: batch vector as in a PyG Batch (None: one graph)
    out["graph.y"]                               # the spec's outputs

The weights are copied from the graphdl blocks into the peer layers, mapping every place where
the two define a layer differently (the mappings of ``tests/interop/test_dgl_parity.py`` and
``tests/nn/test_*_parity.py``); e.g. GCN's normalisation is graphdl's (in-degree at both ends of
``A + I``) passed to ``GraphConv(norm="none")`` as edge weights, since ``GraphConv(norm="both")``
uses the source's out-degree. A block or option without an exact counterpart is refused with a
one-line error naming it (never exported approximately).

Parity: the exported module and the compiled spec run on a sample batch (three generated graphs
with self-loops, parallel edges and isolated nodes, inputs drawn from the spec's declared fields),
both in evaluation mode, in float64 (the check: max |Δ| within 1e-9 of the output scale; both
compute the same arithmetic, so ~1e-15 is expected) and in the checkpoint's float32.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import textwrap
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from graphdl.errors import GraphDLError, SpecError

__all__ = ["ExportResult", "export", "exportable_blocks"]

TARGETS = ("dgl", "pyg")


# ------------------------------------------------------------------------------ emitters
@dataclass
class Emit:
    """What one block contributes: constructor lines, forward lines, and the weight copy."""

    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    copy: Callable[[nn.Module], None] | None = None
    layer: str = ""  # the peer layer, for the table


class Refused(GraphDLError):
    """A block (or one of its options) has no exact counterpart in the target library."""


def _f(key: str) -> str:
    return f'f["{key}"]'


ACT_CODE = {"relu": "nn.ReLU()", "elu": "nn.ELU()", "gelu": "nn.GELU()", "silu": "nn.SiLU()", "swish": "nn.SiLU()",
            "leaky_relu": "nn.LeakyReLU(0.2)", "tanh": "nn.Tanh()", "sigmoid": "nn.Sigmoid()",
            "softplus": "nn.Softplus()", "identity": "nn.Identity()"}


def _module_code(m: nn.Module) -> str:
    """Constructor source of a torch.nn building block of graphdl's MLPs."""
    if isinstance(m, nn.Linear):
        return f"nn.Linear({m.in_features}, {m.out_features}, bias={m.bias is not None})"
    if isinstance(m, nn.BatchNorm1d):
        return f"nn.BatchNorm1d({m.num_features}, eps={m.eps!r}, momentum={m.momentum!r})"
    if isinstance(m, nn.LayerNorm):
        return f"nn.LayerNorm({m.normalized_shape[0]}, eps={m.eps!r})"
    if isinstance(m, nn.Dropout):
        return f"nn.Dropout({m.p!r})"
    if isinstance(m, nn.LeakyReLU):
        return f"nn.LeakyReLU({m.negative_slope!r})"
    for cls in (nn.ReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Identity):
        if type(m) is cls:
            return f"nn.{cls.__name__}()"
    raise Refused(f"module {type(m).__name__} has no export")


def _seq_code(seq: nn.Sequential) -> str:
    return "nn.Sequential(" + ", ".join(_module_code(m) for m in seq) + ")"


def _load(dst: nn.Module, src: nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


def _refuse(block, why: str, target: str) -> Refused:
    lib = {"dgl": "dgl.nn", "pyg": "torch_geometric.nn"}[target]
    return Refused(f"`{type(block).name}` {why}: no exact {lib} counterpart; export refused (graphdl would not "
                   f"ship an approximation)")


# field-wise blocks: the same code for both targets
def _emit_fieldwise(block, name: str, target: str) -> Emit | None:
    kind = type(block).name
    p = block.p
    from graphdl.nn.mlp import ACTIVATIONS

    if kind in ACTIVATIONS:
        return Emit([f"self.{name} = {ACT_CODE[kind]}"], [f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)})}}"],
                    None, f"nn {kind}")
    if kind == "dropout":
        return Emit([f"self.{name} = nn.Dropout({p.p!r})"], [f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)})}}"],
                    None, "nn.Dropout")
    if kind == "linear":
        return Emit([f"self.{name} = {_module_code(block.lin)}"],
                    [f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)})}}"],
                    lambda m: _load(getattr(m, name), block.lin), "nn.Linear")
    if kind == "mlp":
        return Emit([f"self.{name} = {_seq_code(block.mlp)}"],
                    [f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)})}}"],
                    lambda m: _load(getattr(m, name), block.mlp), "nn.Sequential (MLP)")
    if kind == "batch_norm":
        return Emit([f"self.{name} = {_module_code(block.norm)}"],
                    [f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)})}}"],
                    lambda m: _load(getattr(m, name), block.norm), "nn.BatchNorm1d")
    if kind == "layer_norm":
        return Emit([f"self.{name} = {_module_code(block.norm)}"],
                    [f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)})}}"],
                    lambda m: _load(getattr(m, name), block.norm), "nn.LayerNorm")
    if kind == "concat":
        parts = ", ".join(_f(k) for k in p.inputs)
        return Emit([], [f"w = {{\"{p.output}\": torch.cat([{parts}], -1)}}"], None, "torch.cat")
    return None


# ----------------------------------------------------------------------------------- DGL
def _dgl_gcn(block, name):
    p = block.p
    if p.edge_weight is not None:
        raise _refuse(block, "with `edge_weight`", "dgl")
    d_in, d_out = block.lin.in_features, block.lin.out_features
    bias = block.bias is not None
    init = [f"self.{name} = dglnn.GraphConv({d_in}, {d_out}, norm=\"none\", bias={bias}, allow_zero_in_degree=True)"]
    if p.normalize:
        loops = block._loops
        fill = 2.0 if p.improved else 1.0
        fwd = [f"gg, ww = gcn_graph(g, cache, loops={loops}, fill={fill!r}, x={_f(p.input)})",
               f"w = {{\"{p.out_key}\": self.{name}(gg, {_f(p.input)}, edge_weight=ww)}}"]
        layer = "GraphConv(norm='none') on A+I with graphdl's symmetric normalisation as edge weights"
    else:
        fwd = [f"w = {{\"{p.out_key}\": self.{name}(g, {_f(p.input)})}}"]
        layer = "GraphConv(norm='none')"

    def copy(m):
        conv = getattr(m, name)
        conv.weight.data.copy_(block.lin.weight.t())
        if bias:
            conv.bias.data.copy_(block.bias)

    return Emit(init, fwd, copy, layer)


def _dgl_sage(block, name):
    p = block.p
    if p.aggr not in ("mean", "max_pool") and not (p.aggr == "max" and p.project):
        raise _refuse(block, f"with `aggr: {p.aggr}`" + ("" if p.project else " (SAGEConv has mean, gcn, pool, lstm)"),
                      "dgl")
    if p.aggr == "mean" and p.project:
        raise _refuse(block, "with `project: true` and `aggr: mean`", "dgl")
    if not p.root_weight:
        raise _refuse(block, "with `root_weight: false` (SAGEConv always has fc_self)", "dgl")
    d_in, d_out = block.lin_l.in_features, block.lin_l.out_features
    agg = "mean" if p.aggr == "mean" else "pool"
    norm = ", norm=lambda x: F.normalize(x, p=2.0, dim=-1)" if p.normalize else ""
    init = [f"self.{name} = dglnn.SAGEConv({d_in}, {d_out}, \"{agg}\", bias={block.lin_l.bias is not None}{norm})"]

    def copy(m):
        conv = getattr(m, name)
        conv.fc_neigh.weight.data.copy_(block.lin_l.weight)
        conv.fc_self.weight.data.copy_(block.lin_r.weight)
        if block.lin_l.bias is not None:
            conv.fc_self.bias.data.copy_(block.lin_l.bias)
        if block.lin is not None:
            _load(conv.fc_pool, block.lin)

    return Emit(init, [f"w = {{\"{p.out_key}\": self.{name}(g, {_f(p.input)})}}"], copy, f"SAGEConv('{agg}')")


def _gin_eps(block) -> str:
    return f"init_eps={float(block.eps.detach().reshape(-1)[0]) if block.p.train_eps else block.p.eps!r}, " \
           f"learn_eps={block.p.train_eps}"


def _copy_gin(block, name, attr="apply_func"):
    def copy(m):
        conv = getattr(m, name)
        _load(getattr(conv, attr), block.mlp)
        conv.eps.data.copy_(block.eps.detach().reshape(conv.eps.shape).to(conv.eps.dtype)
                            if block.p.train_eps else torch.full_like(conv.eps, block.p.eps))
    return copy


def _dgl_gin(block, name):
    p = block.p
    init = [f"self.{name} = dglnn.GINConv({_seq_code(block.mlp)}, \"sum\", {_gin_eps(block)})"]
    return Emit(init, [f"w = {{\"{p.out_key}\": self.{name}(g, {_f(p.input)})}}"], _copy_gin(block, name), "GINConv")


def _dgl_gine(block, name):
    p = block.p
    init = [f"self.{name} = dglnn.GINEConv({_seq_code(block.mlp)}, {_gin_eps(block)})"]
    e = _f(p.edge_input)
    if block.lin_edge is not None:
        init.append(f"self.{name}_edge = {_module_code(block.lin_edge)}")
        e = f"self.{name}_edge({e})"
    copy = _copy_gin(block, name)

    def copy_all(m):
        copy(m)
        if block.lin_edge is not None:
            _load(getattr(m, f"{name}_edge"), block.lin_edge)

    return Emit(init, [f"w = {{\"{p.out_key}\": self.{name}(g, {_f(p.input)}, {e})}}"], copy_all,
                "GINEConv" + (" + nn.Linear on edges" if block.lin_edge is not None else ""))


_ACT_FN = {"relu": "F.relu", "elu": "F.elu", "gelu": "F.gelu", "silu": "F.silu", "swish": "F.silu",
           "leaky_relu": "lambda x: F.leaky_relu(x, 0.2)", "tanh": "torch.tanh", "sigmoid": "torch.sigmoid",
           "softplus": "F.softplus", "identity": "None"}


def _dgl_gated_gcn(block, name):
    p = block.p
    bad = [k for k, want in (("edge_gates", True), ("normalize_gates", True), ("update_edges", True),
                             ("root_weight", True), ("bias", True)) if getattr(p, k) != want]
    if bad or p.eps != 1e-6:
        why = ", ".join(f"`{k}: {str(getattr(p, k)).lower()}`" for k in bad) or f"`eps: {p.eps}` (DGL fixes 1e-6)"
        raise _refuse(block, f"with {why} (GatedGCNConv is the full edge-gated layer)", "dgl")
    d_in, d_e, d_out = block.A.in_features, block.C.in_features, p.out_dim
    init = [f"self.{name} = dglnn.GatedGCNConv({d_in}, {d_e}, {d_out}, dropout={p.dropout!r}, "
            f"batch_norm={p.batch_norm}, residual={p.skip}, activation={_ACT_FN[p.act]})"]
    fwd = [f"h, e = self.{name}(g, {_f(p.input)}, {_f(p.edge_input)})",
           f"w = {{\"{p.out_key}\": h, \"{p.edge_out_key}\": e}}"]

    def copy(m):
        conv = getattr(m, name)
        # DGL: gate D h_src + E h_dst + C e, value B h_src, root A h_dst (+ bias)
        for ours, theirs in (("A", "E"), ("B", "D"), ("V", "B"), ("C", "C")):
            _load(getattr(conv, theirs), getattr(block, ours))
        conv.A.weight.data.copy_(block.U.weight)
        conv.A.bias.data.copy_(block.bias)
        if block.bn_h is not None:
            _load(conv.bn_node, block.bn_h)
            _load(conv.bn_edge, block.bn_e)

    return Emit(init, fwd, copy, "GatedGCNConv")


def _pseudo_lines(block, name) -> tuple[list[str], list[str], str]:
    p = block.p
    init, fwd = [], []
    u = f"degree_pseudo(g_src, g_dst, {_f(p.input)})" if p.pseudo == "degree" else _f(p.pseudo)
    if block.pseudo_proj is not None:
        init.append(f"self.{name}_pseudo = {_module_code(block.pseudo_proj)}")
        u = f"torch.tanh(self.{name}_pseudo({u}))"
    return init, fwd, u


def _dgl_monet(block, name):
    p = block.p
    if p.separate_gaussians or p.aggr == "max":
        raise _refuse(block, "with `separate_gaussians: true`" if p.separate_gaussians else
                      "with `aggr: max` (GMMConv takes the max per kernel, graphdl per edge after the kernel sum)",
                      "dgl")
    d_in, d_out, k = block.g.size(0), p.out_dim, p.kernel_size
    dp = block.mu.size(-1)
    init, fwd, u = _pseudo_lines(block, name)
    init.insert(0, f"self.{name} = dglnn.GMMConv({d_in}, {d_out}, {dp}, {k}, \"{p.aggr}\", residual=False, "
                   f"bias={block.bias is not None}, allow_zero_in_degree=True)")
    out = f"self.{name}(g, {_f(p.input)}, {u})"
    if block.root is not None:
        init.append(f"self.{name}_root = {_module_code(block.root)}")
        out += f" + self.{name}_root({_f(p.input)})"
    if p.pseudo == "degree":
        fwd.append("g_src, g_dst = g.edges(order=\"eid\")")
    fwd.append(f"w = {{\"{p.out_key}\": {out}}}")

    def copy(m):
        conv = getattr(m, name)
        conv.fc.weight.data.copy_(block.g.t())
        conv.mu.data.copy_(block.mu)
        # GMMConv multiplies by inv_sigma², graphdl divides by 1e-15 + σ² (PyG's guard): the same number
        conv.inv_sigma.data.copy_((1e-15 + block.sigma.pow(2)).rsqrt())
        if block.bias is not None:
            conv.bias.data.copy_(block.bias)
        if block.root is not None:
            _load(getattr(m, f"{name}_root"), block.root)
        if block.pseudo_proj is not None:
            _load(getattr(m, f"{name}_pseudo"), block.pseudo_proj)

    return Emit(init, fwd, copy, "GMMConv (inv_sigma = (1e-15 + sigma²)^-1/2) + nn.Linear root")


def _dgl_gat(block, name):
    p = block.p
    if p.edge_input is not None:
        raise _refuse(block, "with `edge_input` (DGL's GATConv/GATv2Conv read no edge features)", "dgl")
    H, C = p.heads, p.out_dim
    d_in = (block.lin_l if p.v2 else block.lin).in_features
    gg = "looped(g, cache)" if p.add_self_loops else "g"
    bias = block.bias is not None
    if p.v2:
        init = [f"self.{name} = dglnn.GATv2Conv({d_in}, {C}, {H}, attn_drop={p.dropout!r}, "
                f"negative_slope={p.negative_slope!r}, allow_zero_in_degree=True, bias={bias}, "
                f"share_weights={p.share_src_dst})"]
        if bias:
            init.append(f"self.{name}_bias = nn.Parameter(torch.zeros({H * C if p.concat else C}))")
    else:
        init = [f"self.{name} = dglnn.GATConv({d_in}, {C}, {H}, attn_drop={p.dropout!r}, "
                f"negative_slope={p.negative_slope!r}, allow_zero_in_degree=True, bias={bias})"]
    heads = f"self.{name}({gg}, {_f(p.input)})"
    out = f"{heads}.flatten(1)" if p.concat else f"{heads}.mean(1)"
    if p.v2 and bias:
        out += f" + self.{name}_bias"
    fwd = [f"w = {{\"{p.out_key}\": {out}}}"]

    def copy(m):
        conv = getattr(m, name)
        if p.v2:
            _load(conv.fc_src, block.lin_l)
            if block.lin_r is not None:
                _load(conv.fc_dst, block.lin_r)
            conv.attn.data.copy_(block.att)
            if bias:
                getattr(m, f"{name}_bias").data.copy_(block.bias)
        else:
            conv.fc.weight.data.copy_(block.lin.weight)
            conv.attn_l.data.copy_(block.att_src)
            conv.attn_r.data.copy_(block.att_dst)
            if bias:  # a per-head bias; with concat: false every head gets graphdl's, so their mean is it
                conv.bias.data.copy_(block.bias if p.concat else block.bias.repeat(H))

    kind = "GATv2Conv" if p.v2 else "GATConv"
    return Emit(init, fwd, copy, kind + (" on add_self_loop(remove_self_loop(g))" if p.add_self_loops else ""))


def _edge_net_code(conv, name, target):
    """NNConv for EdgeNetworkConv: the edge network copied, graphdl's root term as nn.Linear."""
    init = []
    aggr = {"sum": "sum" if target == "dgl" else "add", "mean": "mean"}[conv.aggr]
    if target == "dgl":
        init.append(f"self.{name} = dglnn.NNConv({conv.in_dim}, {conv.out_dim}, {_seq_code(conv.nn)}, \"{aggr}\", "
                    f"residual=False, bias={conv.bias is not None})")
    else:
        init.append(f"self.{name} = pygnn.NNConv({conv.in_dim}, {conv.out_dim}, {_seq_code(conv.nn)}, "
                    f"aggr=\"{aggr}\", root_weight={conv.lin is not None}, bias={conv.bias is not None})")
    if target == "dgl" and conv.lin is not None:
        init.append(f"self.{name}_root = {_module_code(conv.lin)}")

    def copy(m):
        peer = getattr(m, name)
        if target == "dgl":
            _load(peer.edge_func, conv.nn)
            if conv.lin is not None:
                _load(getattr(m, f"{name}_root"), conv.lin)
        else:
            _load(peer.nn, conv.nn)
            if conv.lin is not None:
                peer.lin.weight.data.copy_(conv.lin.weight)
        if conv.bias is not None:
            peer.bias.data.copy_(conv.bias)

    return init, copy


def _dgl_nnconv(block, name):
    p = block.p
    init, copy = _edge_net_code(block.conv, name, "dgl")
    out = f"self.{name}(g, {_f(p.input)}, {_edges(p.edge_input)})"
    if block.conv.lin is not None:
        out += f" + self.{name}_root({_f(p.input)})"
    return Emit(init, [f"w = {{\"{p.out_key}\": {out}}}"], copy, "NNConv + nn.Linear root")


def _edges(key: str) -> str:
    return f"as2d({_f(key)})"


def _mpnn(block, name, target):
    p = block.p
    init, copy = _edge_net_code(block.conv, name, target)
    init.append(f"self.{name}_act = {ACT_CODE[p.act]}")
    init.append(f"self.{name}_gru = nn.GRUCell({block.gru.input_size}, {block.gru.hidden_size})")
    if target == "dgl":
        msg = f"self.{name}(g, {_f(p.input)}, {_edges(p.edge_input)})"
        if block.conv.lin is not None:
            msg += f" + self.{name}_root({_f(p.input)})"
    else:
        msg = f"self.{name}({_f(p.input)}, edge_index, {_edges(p.edge_input)})"
    fwd = [f"m = self.{name}_act({msg})", f"w = {{\"{p.out_key}\": self.{name}_gru(m, {_f(p.input)})}}"]

    def copy_all(m):
        copy(m)
        _load(getattr(m, f"{name}_gru"), block.gru)

    return Emit(init, fwd, copy_all, "NNConv + act + nn.GRUCell")


def _readout(block, name, target):
    p = block.p
    x = f"as2d({_f(p.input)})"
    if block.space == "edge":
        if p.reduce not in ("sum", "mean", "max"):
            raise _refuse(block, f"with `reduce: {p.reduce}` on edges", target)
        if target == "dgl":
            fn = {"sum": "sum", "mean": "mean", "max": "max"}[p.reduce]
            return Emit([], [f"w = {{\"{p.out_key}\": edge_pool(g, {x}, \"{fn}\")}}"], None,
                        "dgl.ops.segment_reduce over edges")
        fn = {"sum": "add", "mean": "mean", "max": "max"}[p.reduce]
        return Emit([], [f"w = {{\"{p.out_key}\": pygnn.global_{fn}_pool({x}, batch[edge_index[1]], num_graphs)}}"],
                    None, f"global_{fn}_pool over edges")
    if p.reduce in ("sum", "mean", "max"):
        if target == "dgl":
            cls = {"sum": "SumPooling", "mean": "AvgPooling", "max": "MaxPooling"}[p.reduce]
            return Emit([f"self.{name} = dglnn.{cls}()"], [f"w = {{\"{p.out_key}\": self.{name}(g, {x})}}"], None, cls)
        fn = {"sum": "add", "mean": "mean", "max": "max"}[p.reduce]
        return Emit([], [f"w = {{\"{p.out_key}\": pygnn.global_{fn}_pool({x}, batch, num_graphs)}}"], None,
                    f"global_{fn}_pool")
    if p.reduce == "set2set":
        d = block.lstm.hidden_size
        if target == "dgl":
            init = [f"self.{name} = dglnn.Set2Set({d}, {p.steps}, 1)"]
            fwd = [f"w = {{\"{p.out_key}\": self.{name}(g, {x})}}"]
        else:
            init = [f"self.{name} = pygnn.aggr.Set2Set({d}, {p.steps})"]
            fwd = [f"w = {{\"{p.out_key}\": self.{name}({x}, batch, dim_size=num_graphs)}}"]
        return Emit(init, fwd, lambda m: _load(getattr(m, name).lstm, block.lstm), "Set2Set")
    gate, val = _seq_code(block.gate_nn), (_seq_code(block.nn) if block.nn is not None else "None")
    if target == "dgl":
        init = [f"self.{name} = dglnn.GlobalAttentionPooling({gate}, {val})"]
        fwd = [f"w = {{\"{p.out_key}\": self.{name}(g, {x})}}"]
        gate_attr, val_attr = "gate_nn", "feat_nn"
    else:
        init = [f"self.{name} = pygnn.aggr.AttentionalAggregation({gate}, {val})"]
        fwd = [f"w = {{\"{p.out_key}\": self.{name}({x}, batch, dim_size=num_graphs)}}"]
        gate_attr, val_attr = "gate_nn", "nn"

    def copy(m):
        peer = getattr(m, name)
        _load(getattr(peer, gate_attr), block.gate_nn)
        if block.nn is not None:
            _load(getattr(peer, val_attr), block.nn)

    return Emit(init, fwd, copy, "attention pooling")


def _dgl_egnn(block, name):
    p = block.p
    want = {"distance_feature": "squared", "normalize": True, "norm_constant": 0.0, "tanh": False, "skip": False,
            "attention": False, "aggr": "sum", "coords_agg": "mean", "act": "silu", "update_pos": True, "vel": None}
    bad = [k for k, v in want.items() if getattr(p, k) != v]
    if bad:
        raise _refuse(block, "with " + ", ".join(f"`{k}: {getattr(p, k)}`" for k in bad) + " (EGNNConv is the "
                      "paper's layer: distance_feature squared, normalize with norm_constant 0, no tanh, no skip, "
                      "no attention, sum/mean aggregation, silu, no velocity)", "dgl")
    d, hid, out = block.phi_h[0].in_features - p.hidden, p.hidden, block.phi_h[2].out_features
    de = block.phi_e[0].in_features - 2 * d - 1
    e = _f(p.edge_input) if p.edge_input is not None else "None"
    init = [f"self.{name} = dglnn.EGNNConv({d}, {hid}, {out}, {de})"]
    fwd = [f"h, x = self.{name}(g, {_f(p.input)}, {_f(p.pos)}, {e})",
           f"w = {{\"{p.output or p.input}\": h, \"{p.pos_output or p.pos}\": x}}"]

    def copy(m):
        conv = getattr(m, name)
        w0 = block.phi_e[0].weight.data  # graphdl reads [h_dst | h_src | r² | e], DGL [h_src | h_dst | r² | e]
        conv.edge_mlp[0].weight.data.copy_(torch.cat([w0[:, d:2 * d], w0[:, :d], w0[:, 2 * d:]], 1))
        conv.edge_mlp[0].bias.data.copy_(block.phi_e[0].bias)
        _load(conv.edge_mlp[2], block.phi_e[2])
        _load(conv.node_mlp[0], block.phi_h[0])
        _load(conv.node_mlp[2], block.phi_h[2])
        _load(conv.coord_mlp[0], block.phi_x[0])
        conv.coord_mlp[2].weight.data.copy_(-block.phi_x[2].weight)  # DGL moves along x_src − x_dst

    return Emit(init, fwd, copy, "EGNNConv (edge-MLP columns permuted, coordinate weight negated)")


# ----------------------------------------------------------------------------------- PyG
def _pyg_gcn(block, name):
    p = block.p
    d_in, d_out = block.lin.in_features, block.lin.out_features
    init = [f"self.{name} = pygnn.GCNConv({d_in}, {d_out}, improved={p.improved}, add_self_loops={block._loops}, "
            f"normalize={p.normalize}, bias={block.bias is not None})"]
    ew = f", {_f(p.edge_weight)}.reshape(-1)" if p.edge_weight is not None else ""

    def copy(m):
        conv = getattr(m, name)
        conv.lin.weight.data.copy_(block.lin.weight)
        if block.bias is not None:
            conv.bias.data.copy_(block.bias)

    return Emit(init, [f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)}, edge_index{ew})}}"], copy, "GCNConv")


def _pyg_sage(block, name):
    p = block.p
    d_in, d_out = block.lin_l.in_features, block.lin_l.out_features
    aggr = {"mean": "mean", "sum": "sum", "max": "max", "max_pool": "max"}[p.aggr]
    init = [f"self.{name} = pygnn.SAGEConv({d_in}, {d_out}, aggr=\"{aggr}\", normalize={p.normalize}, "
            f"root_weight={p.root_weight}, project={block.lin is not None}, bias={block.lin_l.bias is not None})"]

    def copy(m):
        conv = getattr(m, name)
        _load(conv.lin_l, block.lin_l)
        if block.lin_r is not None:
            _load(conv.lin_r, block.lin_r)
        if block.lin is not None:
            _load(conv.lin, block.lin)

    return Emit(init, [f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)}, edge_index)}}"], copy,
                f"SAGEConv(aggr='{aggr}')")


def _pyg_eps(block) -> str:
    eps = float(block.eps.detach().reshape(-1)[0]) if block.p.train_eps else block.p.eps
    return f"eps={eps!r}, train_eps={block.p.train_eps}"


def _pyg_gin(block, name):
    p = block.p
    init = [f"self.{name} = pygnn.GINConv({_seq_code(block.mlp)}, {_pyg_eps(block)})"]
    return Emit(init, [f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)}, edge_index)}}"],
                _copy_gin(block, name, "nn"), "GINConv")


def _pyg_gine(block, name):
    p = block.p
    de = f", edge_dim={block.lin_edge.in_features}" if block.lin_edge is not None else ""
    init = [f"self.{name} = pygnn.GINEConv({_seq_code(block.mlp)}, {_pyg_eps(block)}{de})"]
    copy = _copy_gin(block, name, "nn")

    def copy_all(m):
        copy(m)
        if block.lin_edge is not None:
            _load(getattr(m, name).lin, block.lin_edge)

    return Emit(init, [f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)}, edge_index, {_edges(p.edge_input)})}}"],
                copy_all, "GINEConv")


def _pyg_gated_gcn(block, name):
    p = block.p
    core = {"edge_gates": False, "normalize_gates": False, "update_edges": False, "batch_norm": False,
            "skip": False, "act": "identity", "dropout": 0.0}
    bad = [k for k, v in core.items() if getattr(p, k) != v]
    if bad:
        raise _refuse(block, "with " + ", ".join(f"`{k}: {getattr(p, k)}`" for k in bad) + " (PyG's "
                      "ResGatedGraphConv is the core without edge gates, normalisation, batch norm or skip; "
                      "try --to dgl)", "pyg")
    d_in = block.A.in_features
    init = [f"self.{name} = pygnn.ResGatedGraphConv({d_in}, {p.out_dim}, root_weight={p.root_weight}, "
            f"bias={p.bias})"]

    def copy(m):
        conv = getattr(m, name)
        for ours, theirs in (("A", "lin_key"), ("B", "lin_query"), ("V", "lin_value")):
            getattr(conv, theirs).weight.data.copy_(getattr(block, ours).weight)
            b = getattr(block, ours).bias
            getattr(conv, theirs).bias.data.copy_(b if b is not None else torch.zeros_like(getattr(conv, theirs).bias))
        if block.U is not None:
            conv.lin_skip.weight.data.copy_(block.U.weight)
        if block.bias is not None:
            conv.bias.data.copy_(block.bias)

    return Emit(init, [f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)}, edge_index)}}"], copy,
                "ResGatedGraphConv")


def _pyg_monet(block, name):
    p = block.p
    d_in, k = block.g.size(0), p.kernel_size
    dp = block.mu.size(-1)
    init, fwd, u = _pseudo_lines(block, name)
    aggr = {"sum": "add", "mean": "mean", "max": "max"}[p.aggr]
    init.insert(0, f"self.{name} = pygnn.GMMConv({d_in}, {p.out_dim}, dim={dp}, kernel_size={k}, "
                   f"separate_gaussians={p.separate_gaussians}, aggr=\"{aggr}\", root_weight={block.root is not None}, "
                   f"bias={block.bias is not None})")
    if p.pseudo == "degree":
        fwd.append("g_src, g_dst = edge_index")
    fwd.append(f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)}, edge_index, {u})}}")

    def copy(m):
        conv = getattr(m, name)
        for a in ("g", "mu", "sigma"):
            getattr(conv, a).data.copy_(getattr(block, a))
        if block.root is not None:
            conv.root.weight.data.copy_(block.root.weight)
        if block.bias is not None:
            conv.bias.data.copy_(block.bias)
        if block.pseudo_proj is not None:
            _load(getattr(m, f"{name}_pseudo"), block.pseudo_proj)

    if block.root is None:
        init.append(f"self.{name}.root = None  # PyG 2.8 reads `root` but never sets it without root_weight")
    return Emit(init, fwd, copy, "GMMConv")


def _pyg_gat(block, name):
    p = block.p
    H, C = p.heads, p.out_dim
    d_in = (block.lin_l if p.v2 else block.lin).in_features
    de = f", edge_dim={block.lin_edge.in_features}" if block.lin_edge is not None else ""
    fill = f"\"{p.fill_value}\"" if isinstance(p.fill_value, str) else repr(p.fill_value)
    kind = "GATv2Conv" if p.v2 else "GATConv"
    share = f", share_weights={p.share_src_dst}" if p.v2 else ""
    init = [f"self.{name} = pygnn.{kind}({d_in}, {C}, heads={H}, concat={p.concat}, negative_slope={p.negative_slope!r}, "
            f"dropout={p.dropout!r}, add_self_loops={p.add_self_loops}, fill_value={fill}, bias={block.bias is not None}"
            f"{de}{share})"]
    e = f", {_edges(p.edge_input)}" if p.edge_input is not None else ""

    def copy(m):
        conv = getattr(m, name)
        mine = block.state_dict()
        state = conv.state_dict()
        for k in state:
            src = k if k in mine else ("lin_l." + k[6:] if k.startswith("lin_r.") else k)
            state[k] = mine[src]
        conv.load_state_dict(state)

    return Emit(init, [f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)}, edge_index{e})}}"], copy, kind)


def _pyg_nnconv(block, name):
    p = block.p
    init, copy = _edge_net_code(block.conv, name, "pyg")
    return Emit(init, [f"w = {{\"{p.out_key}\": self.{name}({_f(p.input)}, edge_index, {_edges(p.edge_input)})}}"],
                copy, "NNConv")


DGL_EXPORTERS = {"gcn": _dgl_gcn, "sage": _dgl_sage, "gin": _dgl_gin, "gine": _dgl_gine, "gated_gcn": _dgl_gated_gcn,
                 "monet": _dgl_monet, "gat": _dgl_gat, "gatv2": _dgl_gat, "nnconv": _dgl_nnconv,
                 "mpnn": lambda b, n: _mpnn(b, n, "dgl"), "egnn": _dgl_egnn,
                 "readout": lambda b, n: _readout(b, n, "dgl"), "edge_readout": lambda b, n: _readout(b, n, "dgl")}
PYG_EXPORTERS = {"gcn": _pyg_gcn, "sage": _pyg_sage, "gin": _pyg_gin, "gine": _pyg_gine,
                 "gated_gcn": _pyg_gated_gcn, "monet": _pyg_monet, "gat": _pyg_gat, "gatv2": _pyg_gat,
                 "nnconv": _pyg_nnconv, "mpnn": lambda b, n: _mpnn(b, n, "pyg"),
                 "readout": lambda b, n: _readout(b, n, "pyg"), "edge_readout": lambda b, n: _readout(b, n, "pyg")}
FIELDWISE = ("linear", "mlp", "dropout", "batch_norm", "layer_norm", "concat")


def exportable_blocks(target: str) -> list[str]:
    """Blocks ``graphdl export --to TARGET`` turns into peer (or torch.nn) layers."""
    from graphdl.nn.mlp import ACTIVATIONS

    table = DGL_EXPORTERS if target == "dgl" else PYG_EXPORTERS
    return sorted(set(table) | set(FIELDWISE) | (set(ACTIVATIONS) - {"identity"}))


# --------------------------------------------------------------------------- generated file
DGL_HELPERS = '''
def looped(g, cache):
    """g's edges without its self-loops, plus one loop per node (graphdl's and PyG's GAT/GCN loops)."""
    if "looped" not in cache:
        cache["looped"] = dgl.add_self_loop(dgl.remove_self_loop(g))
    return cache["looped"]


def gcn_graph(g, cache, loops, fill, x):
    """(graph, edge weights) of Kipf & Welling's D^-1/2 (A + fill I) D^-1/2, D the in-degree of A + fill I
    (graphdl's and PyG's gcn_norm; GraphConv(norm="both") would use the source's out-degree instead),
    in the dtype of the features x."""
    key = ("gcn", loops, fill, x.dtype)
    if key not in cache:
        gg = looped(g, cache) if loops else g
        src, dst = gg.edges(order="eid")
        w = torch.ones(gg.num_edges(), dtype=x.dtype, device=src.device)
        if loops:
            w = torch.where(src == dst, torch.full_like(w, fill), w)
        deg = torch.zeros(gg.num_nodes(), dtype=w.dtype, device=w.device).index_add_(0, dst, w)
        inv = deg.pow(-0.5).masked_fill(deg == 0, 0.0)
        cache[key] = (gg, (inv[src] * w * inv[dst]).unsqueeze(-1))
    gg, w = cache[key]
    return gg, w


def with_self_loops(g, f):
    """g plus one self-loop per node, kept a valid batch (edges grouped by graph), and the edge
    fields of f extended with zeros for the loops in the same order."""
    n = g.num_nodes()
    src, dst = g.edges(order="eid")
    loops = torch.arange(n, device=src.device)
    src, dst = torch.cat([src, loops]), torch.cat([dst, loops])
    node_graph = torch.repeat_interleave(torch.arange(g.batch_size, device=src.device), g.batch_num_nodes())
    order = torch.sort(node_graph[dst], stable=True).indices
    gg = dgl.graph((src[order], dst[order]), num_nodes=n)
    gg.set_batch_num_nodes(g.batch_num_nodes())
    gg.set_batch_num_edges(g.batch_num_edges() + g.batch_num_nodes())
    f = {k: torch.cat([v, v.new_zeros((n,) + v.shape[1:])])[order] if k.startswith("edge.") else v
         for k, v in f.items()}
    return gg, f


def edge_pool(g, x, reduce):
    """Per-graph reduction of edge rows (an edge belongs to its graph in dgl.batch order)."""
    seglen = g.batch_num_edges()
    if reduce == "mean":
        return dgl.ops.segment_reduce(seglen, x, "sum") / seglen.clamp(min=1).to(x.dtype).unsqueeze(-1)
    out = dgl.ops.segment_reduce(seglen, x, reduce)
    return out.masked_fill((seglen == 0).unsqueeze(-1), 0.0)
'''

COMMON_HELPERS = '''
def as2d(x):
    """(N,) -> (N, 1): one-channel fields may come without their channel axis."""
    return x.unsqueeze(-1) if x.dim() == 1 else x


def degree_pseudo(src, dst, x):
    """MoNet's degree pseudo-coordinates (1/sqrt(d_j + 1), 1/sqrt(d_i + 1)) of edge j -> i, d the in-degree,
    in the dtype of the node features x."""
    deg = torch.bincount(dst, minlength=x.size(0)).to(x.dtype)
    inv = (deg + 1.0).rsqrt()
    return torch.stack([inv[src], inv[dst]], -1)
'''


def _source(target: str, header: str, init: list[str], forward: list[str], inputs: dict, outputs: list[str],
            graph_lines: list[str]) -> str:
    if target == "dgl":
        imports = ("import dgl\nimport torch\nimport torch.nn.functional as F\nfrom dgl.nn import pytorch as dglnn\n"
                   "from torch import nn\n")
        sig = "def forward(self, g, fields=None):"
        doc = ('"""g: a dgl.DGLGraph (dgl.batch of several); fields: {"node.h": (N, d), "edge.e": (E, d), ...}\n'
               '        (default: g.ndata / g.edata as node.<name> / edge.<name>). Returns the spec\'s outputs."""')
        pre = ["if fields is None:",
               "    fields = {**{\"node.\" + k: v for k, v in g.ndata.items()},",
               "              **{\"edge.\" + k: v for k, v in g.edata.items()}}",
               "cache = {}"]
        helpers = DGL_HELPERS + COMMON_HELPERS
    else:
        imports = ("import torch\nimport torch.nn.functional as F\nimport torch_geometric.nn as pygnn\n"
                   "from torch import nn\n")
        sig = "def forward(self, edge_index, fields, batch=None, num_graphs=None):"
        doc = ('"""edge_index (2, E) (row 0 sources); fields: {"node.h": (N, d), "edge.e": (E, d), ...};\n'
               '        batch (N,): graph of each node (None: one graph). Returns the spec\'s outputs."""')
        first = next((k for k in inputs if k.startswith("node.")), None)
        n = f'fields["{first}"].size(0)' if first else "int(edge_index.max()) + 1"
        pre = ["if batch is None:",
               f"    batch = torch.zeros({n}, dtype=torch.long, device=edge_index.device)",
               "if num_graphs is None:",
               "    num_graphs = int(batch.max()) + 1 if batch.numel() else 1"]
        helpers = COMMON_HELPERS
    body = ["f = dict(fields)"]
    for k, t in inputs.items():
        if t == 1:
            body.append(f"f[\"{k}\"] = as2d(f[\"{k}\"])")
    body += graph_lines + forward
    body.append("return {" + ", ".join(f'"{k}": f["{k}"]' for k in outputs) + "}")
    init_src = textwrap.indent("\n".join(["super().__init__()"] + init), " " * 8)
    fwd_src = textwrap.indent("\n".join(pre + body), " " * 8)
    return f'''{header}
{imports}

{helpers}

class ExportedModel(nn.Module):
    def __init__(self):
{init_src}

    {sig}
        {doc}
{fwd_src}


def load(directory=None, map_location="cpu"):
    """ExportedModel with the exported weights (weights.pt beside this file), in evaluation mode."""
    import os

    directory = directory or os.path.dirname(os.path.abspath(__file__))
    model = ExportedModel()
    state = torch.load(os.path.join(directory, "weights.pt"), map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    return model.eval()
'''


# ---------------------------------------------------------------------------------- driver
@dataclass
class ExportResult:
    """What :func:`export` wrote and measured."""

    directory: str
    target: str
    layers: list[tuple[str, str, str]]  # (layer path, block, peer layer)
    parity: dict[str, Any]

    def summary(self) -> str:
        width = max(len(p) for p, _, _ in self.layers)
        rows = [f"  {p.ljust(width)}  {b:<12} -> {layer}" for p, b, layer in self.layers]
        par = self.parity
        lines = [f"exported to {self.directory} (model.py, weights.pt, export.json), target {self.target}:"] + rows
        lines.append(f"parity on a sample batch ({par['graphs']} graphs, {par['nodes']} nodes, {par['edges']} edges), "
                     f"exported module vs the compiled spec, evaluation mode:")
        for k, v in par["outputs"].items():
            lines.append(f"  {k}: float64 max |Δ| = {v['float64']:.2e}, float32 max |Δ| = {v['float32']:.2e} "
                         f"(output scale {v['scale']:.3g})")
        lines.append("parity: ok" if par["ok"] else
                     f"parity: MISMATCH (float64 max |Δ| above {par['bound']:.1e} of the output scale)")
        return "\n".join(lines)


def _import_file(path: str):
    name = f"graphdl_export_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(name, None)
    return mod


def _sample_batch(inputs: dict, dtype: torch.dtype, seed: int = 0):
    """Three graphs (9 nodes with self-loops, parallel edges, an isolated node; 1 node; 12 nodes)
    carrying every declared input, drawn from N(0, 1) (positions too)."""
    from graphdl.data.graph import Graph, collate
    from graphdl.testing.graph_cases import random_graph
    from graphdl.types import Scalar

    gen = torch.Generator().manual_seed(seed)
    parts = []
    for n, e in ((9, 30), (1, 0), (12, 40)):
        skel = random_graph(n, e, 1, 1, seed=seed + n)
        fields = {}
        for k, t in inputs.items():
            space = k.split(".", 1)[0]
            rows = {"node": n, "edge": e, "graph": 1}[space]
            if not isinstance(t, Scalar) and tuple(t.shape()) != (3,):
                raise SpecError(f"export: input `{k}: {t}` is not a scalar or 1o field; no peer layer reads it")
            fields[k] = torch.randn((rows,) + tuple(t.shape()), generator=gen, dtype=torch.float64).to(dtype)
        parts.append(Graph(skel.edge_index, n, fields))
    return collate(parts)


def export(spec_path: str, *, to: str, checkpoint: str | None = None, out: str | None = None,
           trust: bool | None = None) -> ExportResult:
    """Write ``model.py`` + ``weights.pt`` + ``export.json`` for ``spec_path`` (see the module docstring).

    Args:
        spec_path: the model spec (the one the checkpoint was trained from).
        to: ``dgl`` or ``pyg``.
        checkpoint: a graphdl checkpoint (``best.pt``/``last.pt``) whose ``model`` weights are
            exported; None exports the spec's initial weights (seed 0).
        out: output directory (default ``<checkpoint dir or cwd>/export_<to>``).

    Raises:
        SpecError: a block (or an option of one) without an exact counterpart, at its layer;
            a graph kind other than ``given`` (the exported module takes the graph as given).
        CheckpointError: the checkpoint does not load into the spec's model.
        MissingDependencyError: the target library does not import.
    """
    from graphdl.compile import compile_spec
    from graphdl.errors import CheckpointError

    if to not in TARGETS:
        raise SpecError(f"export --to must be one of {', '.join(TARGETS)}, found `{to}`")
    if to == "dgl":
        from graphdl.interop.dgl import load_dgl

        load_dgl()
    else:
        from graphdl.data.convert import _require

        _require("torch_geometric", "torch_geometric", "export --to pyg")
    if trust is not None:
        from graphdl.spec.loader import trusted_imports

        with trusted_imports(trust):
            return export(spec_path, to=to, checkpoint=checkpoint, out=out)
    torch.manual_seed(0)  # the initial weights, when no checkpoint is given
    model = compile_spec(spec_path)
    plan = model.plan
    doc = plan.spec.doc
    gs = plan.spec.graph
    if gs.kind != "given":
        raise doc.error(("graph",), f"export takes `graph.kind: given` (the exported module reads the graph it is "
                                    f"given); this spec builds a `{gs.kind}` graph")
    if plan.forces is not None:
        raise doc.error(("model", "forces"), "export does not write `forces: autograd` (differentiate the exported "
                                             "module's energy yourself)")
    source = "initial weights (seed 0)"
    if checkpoint is not None:
        from graphdl.train import checkpoint as C

        ck = C.load(checkpoint)
        try:
            model.load_state_dict(ck["model"])
        except (RuntimeError, KeyError) as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"checkpoint `{checkpoint}` does not fit the model of `{spec_path}` ({first}); "
                                  f"export the spec it was trained with (its run directory keeps it as spec.yaml)") \
                from None
        source = f"checkpoint {checkpoint}"
    model.eval()
    init, fwd, copies, layers = _emit_all(model, to)
    graph_lines: list[str] = []
    if gs.self_loops:
        edge_out = [k for k in plan.outputs if k.startswith("edge.")]
        if edge_out:
            raise doc.error(("graph", "self_loops"), f"export of edge outputs ({', '.join(edge_out)}) with "
                                                     f"`self_loops: true`: graphdl re-sorts the looped edges by "
                                                     f"destination, the exported module cannot promise that order")
        if to == "dgl":
            graph_lines = ["g, f = with_self_loops(g, f)  # graph.self_loops: one loop per node, edge fields 0"]
        else:
            graph_lines = ["n_loops = batch.numel()",
                           "loops = torch.arange(n_loops, device=edge_index.device).repeat(2, 1)",
                           "edge_index = torch.cat([edge_index, loops], 1)  # graph.self_loops",
                           "f.update({k: torch.cat([v, v.new_zeros((n_loops,) + v.shape[1:])]) "
                           "for k, v in f.items() if k.startswith(\"edge.\")})"]
    import graphdl

    lib = "dgl.nn (DGL)" if to == "dgl" else "torch_geometric.nn (PyTorch Geometric)"
    header = (f'"""Exported by graphdl {graphdl.__version__} from {os.path.basename(plan.spec.file)} '
              f"({plan.spec.name or 'unnamed'}), {source}, to {lib}.\n\n"
              "Plain PyTorch: no graphdl import. Load with `load(directory)` (weights.pt beside this file,\n"
              "torch.load(..., weights_only=True)). Inputs: "
              + ", ".join(f"{k}: {t}" for k, t in plan.inputs.items())
              + ". Outputs: " + ", ".join(f"{k}: {t}" for k, t in plan.outputs.items()) + ".\n"
              + ("With a torch release DGL ships no graphbolt library for, import DGL through\n"
                 "graphdl.interop.dgl.load_dgl() before this file (see its docstring).\n" if to == "dgl" else "")
              + '"""')
    inputs = {k: (t.size if hasattr(t, "size") else None) for k, t in plan.inputs.items()}
    text = _source(to, header, init, fwd, inputs, list(plan.outputs), graph_lines)
    out = out or os.path.join(os.path.dirname(os.path.abspath(checkpoint)) if checkpoint else os.getcwd(),
                              f"export_{to}")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.py")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    mod = _import_file(path)
    params = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = params.dtype if params is not None else torch.float32
    peer = _peer(mod, model, to, dtype)
    torch.save(peer.state_dict(), os.path.join(out, "weights.pt"))
    parity = _parity(model, mod, plan, to, dtype)
    result = ExportResult(out, to, layers, parity)
    with open(os.path.join(out, "export.json"), "w", encoding="utf-8") as fh:
        json.dump({"format": "graphdl.export", "version": 1, "spec": os.path.abspath(plan.spec.file),
                   "checkpoint": os.path.abspath(checkpoint) if checkpoint else None, "target": to,
                   "graphdl": graphdl.__version__, "torch": torch.__version__,
                   "layers": [{"layer": p, "block": b, "exported_as": x} for p, b, x in layers],
                   "parity": parity}, fh, indent=2)
    return result


def _emit_all(model, to: str):
    """(init lines, forward lines, weight copies, layer table) of a compiled model for ``to``."""
    from graphdl.spec.loader import format_path

    plan = model.plan
    doc = plan.spec.doc
    table = DGL_EXPORTERS if to == "dgl" else PYG_EXPORTERS
    init: list[str] = []
    fwd: list[str] = []
    copies: list[Callable] = []
    layers: list[tuple[str, str, str]] = []
    names: dict[int, str] = {}
    for i, (step, idx) in enumerate(zip(plan.steps, model._order)):
        block = model.blocks[idx]
        kind = type(block).name
        if idx in names:
            name = names[idx]
            em = _reuse_forward(block, name, to, table)
        else:
            name = names[idx] = f"l{i}"
            try:
                em = _emit_fieldwise(block, name, to)
                if em is None:
                    if kind not in table:
                        raise Refused(f"`{kind}` has no {'dgl.nn' if to == 'dgl' else 'torch_geometric.nn'} "
                                      f"counterpart; exportable blocks: {', '.join(exportable_blocks(to))}")
                    em = table[kind](block, name)
            except Refused as e:
                raise doc.error(step.entry.path, str(e)) from None
            init += em.init
            if em.copy is not None:
                copies.append(em.copy)
        fwd.append(f"# {step.where} {kind}" + (f" ({step.entry.label})" if step.entry.label else ""))
        fwd += em.forward
        fwd.append("f.update({k: v + f[k] for k, v in w.items()})" if step.entry.residual else "f.update(w)")
        layers.append((format_path(step.entry.path) + (f"#{step.repeat_index}" if step.entry.repeat > 1 else ""),
                       kind, em.layer))
    return init, fwd, copies, layers


def _peer(mod, model, to: str, dtype: torch.dtype) -> nn.Module:
    """A fresh ExportedModel in ``dtype`` with the weights of ``model`` (converted to ``dtype`` first, so
    derived weights such as GMMConv's inverse widths are computed in that precision)."""
    import copy

    src = copy.deepcopy(model).to(dtype).eval()
    peer = mod.ExportedModel().to(dtype)
    with torch.no_grad():
        for c in _emit_all(src, to)[2]:
            c(peer)
    return peer.eval()


def _reuse_forward(block, name: str, to: str, table) -> Emit:
    """A shared repeat: the forward lines of the module already built (no new layer, no copy)."""
    em = _emit_fieldwise(block, name, to)
    if em is None:
        em = table[type(block).name](block, name)
    return Emit([], em.forward, None, em.layer + " (shared)")


def _run_peer(peer, g, to: str):
    if to == "dgl":
        from graphdl.data.convert import to_dgl

        return peer(to_dgl(g, with_graph_fields=True)[0], dict(g.fields))
    return peer(g.edge_index, dict(g.fields), g.batch, g.num_graphs)


def _parity(model, mod, plan, to: str, dtype: torch.dtype) -> dict[str, Any]:
    """Run both on a sample batch, float64 and ``dtype``; the float64 check decides ``ok``: both
    compute the same function, so they differ by round-off (~1e-15 of the output scale), and 1e-9
    leaves room for deep stacks while any mapping error (a wrong sign, a missing loop) is ≥ 1e-3."""
    import copy

    bound = 1e-9
    result: dict[str, Any] = {"outputs": {}, "bound": bound}
    ok = True
    for dt in (torch.float64, dtype):
        g = _sample_batch(plan.inputs, dt)
        m, pr = copy.deepcopy(model).to(dt).eval(), _peer(mod, model, to, dt)
        with torch.no_grad():
            ours, theirs = m(g), _run_peer(pr, g, to)
        result.update(graphs=g.num_graphs, nodes=g.num_nodes, edges=g.num_edges)
        for k in plan.outputs:
            a, b = ours[k], theirs[k]
            if a.shape != b.shape:
                raise GraphDLError(f"export parity: `{k}` has shape {tuple(b.shape)} from the exported module, "
                                   f"{tuple(a.shape)} from graphdl")
            diff = float((a - b).abs().max()) if a.numel() else 0.0
            scale = float(a.abs().max()) if a.numel() else 0.0
            entry = result["outputs"].setdefault(k, {"scale": scale})
            entry["float64" if dt == torch.float64 else "float32"] = diff
            if dt == torch.float64:
                ok &= math.isfinite(diff) and diff <= bound * max(1.0, scale)
    for v in result["outputs"].values():
        v.setdefault("float32", v["float64"])
    result["ok"] = bool(ok)
    return result

