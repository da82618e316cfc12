"""``lowering: dgl``: graphdl's blocks with their message passing on DGL's builtin kernels.

A block with ``lowering: dgl`` keeps its parameters (the same module, the same state dict,
so a checkpoint loads under either lowering) and its arithmetic; what changes is who moves the
data along the edges. Gathers to edges (``u_add_v``, ``v_sub_u``, ``copy_u``), fused
message + reduce (``copy_u_sum``, ``u_mul_e_sum``, ``copy_e_max`` ...; DGL's ``gspmm``), edge
softmax and per-graph segment reductions are ``dgl.ops`` calls on a ``DGLGraph`` of the batch,
made once per batch and cached on it (:func:`graphdl.interop.dgl.dgl_graph`), with the edge ids
of the batch. Graph-only coefficients (GCN's normalisation, mean weights, MoNet's degree
pseudo-coordinates, GAT's self-loop structure) are graphdl's, cached as for ``auto``.

Each lowering below mirrors the block's own ``forward``; ``tests/interop/test_dgl_lowering.py``
checks that the two agree to float64 round-off, values and gradients. Where DGL's kernel
needs a fix-up to mean what graphdl means it says so (``copy_*_max`` leaves ``-inf`` at a node
without in-edges; graphdl's aggregate there is 0).

Functional ``dgl.ops`` calls, not ``graph.ndata[...]`` + ``update_all``: the same kernels, without
string-keyed state on a graph shared by every layer.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from graphdl.errors import KernelUnavailableError
from graphdl.interop.dgl import dgl_graph, load_dgl

__all__ = ["dgl_note", "edge_network_conv", "forward"]


def _ops():
    return load_dgl().ops


def _looped_graph(g):
    """The DGLGraph of GAT's attention edges: ``g``'s edges plus one loop per node (cached)."""
    hit = g._cache.get("dgl_graph.looped")
    if hit is None:
        from graphdl.nn.attention import looped_edges

        le = looped_edges(g)
        dgl = load_dgl()
        idtype = torch.int32 if le.src.numel() < 2**31 - 1 else torch.int64
        hit = dgl.graph((le.src.to(idtype), le.dst.to(idtype)), num_nodes=g.num_nodes, idtype=idtype,
                        device=g.device)
        hit.create_formats_()
        g._cache["dgl_graph.looped"] = hit
    return hit


def _has_in_edges(g) -> Tensor:
    """``(N, 1)`` True where a node has in-edges (cached): ``copy_*_max`` gives ``-inf`` elsewhere."""
    hit = g._cache.get("has_in_edges")
    if hit is None:
        hit = g._cache["has_in_edges"] = (g.in_degree() > 0).unsqueeze(-1)
    return hit


def _max_to_zero(g, out: Tensor) -> Tensor:
    mask = _has_in_edges(g)
    return out.masked_fill(~mask.reshape(mask.shape + (1,) * (out.dim() - 2)), 0.0)


def _copy_max(g, dg, x: Tensor, side: str) -> Tensor:
    """``max_{j->i}`` of source rows (``side="u"``) or edge rows (``"e"``); 0 without in-edges.

    A graph without edges skips DGL (whose max backward indexes an empty argmax)."""
    if g.num_edges == 0:
        return x.new_zeros((g.num_nodes,) + tuple(x.shape[1:])) + 0 * x.sum()
    fn = _ops().copy_u_max if side == "u" else _ops().copy_e_max
    return _max_to_zero(g, fn(dg, x))


def _reduce_e(g, dg, msg: Tensor, reduce: str) -> Tensor:
    """Edge rows reduced into their destinations by DGL (``sum``/``mean``/``max``; 0 without in-edges)."""
    if reduce == "max":
        return _copy_max(g, dg, msg, "e")
    return getattr(_ops(), f"copy_e_{reduce}")(dg, msg)


# ---------------------------------------------------------------------------------- conv
def _gcn(block, g, f):
    from graphdl.nn.conv import GCN

    assert isinstance(block, GCN)
    p, ops, dg = block.p, _ops(), dgl_graph(g)
    x = f[p.input]
    w = f[p.edge_weight].reshape(-1) if p.edge_weight is not None else None
    lin_first = p.out_dim <= x.size(-1)
    h = block.lin(x) if lin_first else x
    if p.normalize and w is None:  # as DGL's GraphConv: node scalings around the unweighted copy_u_sum
        dinv, coef = _gcn_node_norm(block, g, h.dtype)
        out = dinv * ops.copy_u_sum(dg, dinv * h)
        if coef is not None:
            out = torch.addcmul(out, coef, h)
    elif p.normalize:
        values, diag = block.normalization(g, w, h.dtype)
        out = ops.u_mul_e_sum(dg, h, values.unsqueeze(-1))
        if diag is not None:
            out = torch.addcmul(out, diag.unsqueeze(-1), h)
    else:
        out = ops.copy_u_sum(dg, h) if w is None else ops.u_mul_e_sum(dg, h, w.to(h.dtype).unsqueeze(-1))
    if not lin_first:
        out = block.lin(out)
    if block.bias is not None:
        out = out + block.bias
    return {p.out_key: out}


def _gcn_node_norm(block, g, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """``Â`` of :func:`graphdl.nn.conv.gcn_norm` (no edge weights) as node factors: ``(N, 1)`` each.

    ``Â h = dinv ⊙ Σ_{j->i} (dinv ⊙ h)_j + coef ⊙ h``: ``dinv = D̂^-1/2``; ``coef_i = dinv_i² (λ_i − ℓ_i)``
    puts the diagonal ``λ_i`` in (1, or 2 when ``improved``; 1 where the node had loop edges) and
    takes out the ``ℓ_i`` loop edges that the unweighted sum counts but ``gcn_norm`` drops. The
    edge coefficients ``dinv_j dinv_i`` are never materialised, so DGL runs its unweighted
    ``copy_u_sum`` (4x faster than ``u_mul_e_sum`` at 500k edges). Cached on the batch."""
    key = ("dgl_gcn_node_norm", block.p.improved, block._loops, dtype, g.device)
    hit = g._cache.get(key)
    if hit is None:
        from graphdl.nn.conv import gcn_node_factors
        from graphdl.ops.segment import segment_sum

        with torch.no_grad():
            _, lam, dinv = gcn_node_factors(g, None, improved=block.p.improved, add_self_loops=block._loops,
                                            dtype=dtype)
            coef = None
            if lam is not None:
                loops = segment_sum((g.src == g.dst).to(dtype), g.dst, g.num_nodes)
                coef = (dinv * dinv * (lam - loops)).unsqueeze(-1)
            hit = g._cache[key] = (dinv.unsqueeze(-1), coef)
    return hit


def _sage(block, g, f):
    p, ops, dg = block.p, _ops(), dgl_graph(g)
    x = f[p.input]
    xs = torch.relu(block.lin(x)) if block.lin is not None else x
    w_l = block.lin_l.weight
    narrow = False
    if block._reduce == "max":
        agg = _copy_max(g, dg, xs, "u")
    else:
        narrow = p.out_dim < xs.size(-1)
        agg = getattr(ops, f"copy_u_{block._reduce}")(dg, F.linear(xs, w_l) if narrow else xs)
    return {p.out_key: block.combine(x, agg, narrow)}


def _gin(block, g, f):
    p = block.p
    x = f[p.input]
    return {p.out_key: block.mlp(_gin_sum(block, _ops().copy_u_sum(dgl_graph(g), x), x))}


def _gin_sum(block, agg: Tensor, x: Tensor) -> Tensor:
    """``agg + (1 + ε) x``; a fixed ε is read from the spec (exact in float64), as the block does,
    not from its buffer (a float32 copy when the model was built in float32)."""
    if block.p.train_eps:
        return torch.addcmul(agg, 1 + block.eps, x)
    return agg + (1.0 + block.p.eps) * x


def _gine(block, g, f):
    p, ops, dg = block.p, _ops(), dgl_graph(g)
    x, e = f[p.input], f[p.edge_input]
    if block.lin_edge is not None:
        e = block.lin_edge(e)
    agg = ops.copy_e_sum(dg, torch.relu(ops.u_add_e(dg, x, e)))  # DGL's GINEConv message, then a sum
    return {p.out_key: block.mlp(torch.addcmul(agg, 1 + block.eps, x))}


def _gated_gcn(block, g, f):
    p, ops, dg = block.p, _ops(), dgl_graph(g)
    x = f[p.input]
    m = p.out_dim
    w = torch.cat([block.A.weight, block.B.weight, block.V.weight])
    b = None if block.A.bias is None else torch.cat([block.A.bias, block.B.bias, block.V.bias])
    ax, bx, vx = F.linear(x, w, b).split(m, dim=-1)
    e_hat = ops.u_add_v(dg, bx, ax)  # B h_src + A h_dst
    if block.C is not None:
        e_hat = e_hat + block.C(f[p.edge_input])
    gate = torch.sigmoid(e_hat)
    agg = ops.u_mul_e_sum(dg, vx, gate)
    if p.normalize_gates:
        agg = agg / (ops.copy_e_sum(dg, gate) + p.eps)
    h = agg if block.U is None else block.U(x) + agg
    if block.bias is not None:
        h = h + block.bias
    out = {p.out_key: block._post(h, block.bn_h, x)}
    if p.update_edges:
        out[p.edge_out_key] = block._post(e_hat, block.bn_e, f[p.edge_input] if p.skip else None)
    return out


def _monet(block, g, f):
    p, ops, dg = block.p, _ops(), dgl_graph(g)
    x = f[p.input]
    u = block.pseudo_coords(g, f, x.dtype)
    k, m, e = p.kernel_size, p.out_dim, g.num_edges
    if not p.separate_gaussians:
        z = (u.unsqueeze(1) - block.mu).pow(2) / (1e-15 + block.sigma.pow(2))
        w = torch.exp(-0.5 * z.sum(-1)).unsqueeze(-1)  # (E, K, 1)
        xg = (x @ block.g).view(-1, k, m)
        if p.aggr == "max":  # sum the kernels per edge, then the max (graphdl's and PyG's order)
            out = _reduce_e(g, dg, ops.u_mul_e(dg, xg, w).sum(1), "max")
        else:  # linear in the messages: reduce per kernel (DGL's fused u_mul_e), then sum the kernels
            out = getattr(ops, f"u_mul_e_{p.aggr}")(dg, xg, w).sum(1)
    else:
        din = x.size(-1)
        z = (u.view(e, 1, 1, 1, u.size(-1)) - block.mu).pow(2) / (1e-15 + block.sigma.pow(2))
        w = (torch.exp(-0.5 * z.sum(-1)) * block.g.view(din, m, k)).sum(-1)  # (E, F, M)
        msg = (ops.copy_u(dg, x).unsqueeze(-1) * w).sum(1)
        out = _reduce_e(g, dg, msg, p.aggr)
    if block.root is not None:
        out = out + block.root(x)
    if block.bias is not None:
        out = out + block.bias
    return {p.out_key: out}


# ----------------------------------------------------------------------------- attention
def _gat(block, g, f):
    from graphdl.nn.attention import _edge_attr, loop_fill, looped_edges

    p, ops = block.p, _ops()
    H, C = p.heads, p.out_dim
    x = f[p.input]
    n = x.size(0)
    if p.add_self_loops:
        dg, le = _looped_graph(g), looped_edges(g)
        order, old_loop = le.order, le.old_loop
    else:
        dg, order, old_loop = dgl_graph(g), None, None
    e = None
    if p.edge_input is not None:
        e = _edge_attr(f, p.edge_input)
        if order is not None:
            e = torch.cat([e, loop_fill(e, g, p.fill_value)]).index_select(0, order)
    if p.v2:
        x_src = block.lin_l(x).view(n, H, C)
        x_dst = x_src if block.lin_r is None else block.lin_r(x).view(n, H, C)
        z = ops.u_add_v(dg, x_src, x_dst)
        if e is not None:
            z = z + block.lin_edge(e).view(-1, H, C)
        logits = (F.leaky_relu(z, p.negative_slope) * block.att).sum(-1)
    else:
        x_src = block.lin(x).view(n, H, C)
        a_src = (x_src * block.att_src).sum(-1)
        a_dst = (x_src * block.att_dst).sum(-1)
        logits = ops.u_add_v(dg, a_src, a_dst)
        if e is not None:
            w = (block.lin_edge.weight.view(H, C, -1) * block.att_edge.view(H, C, 1)).sum(1)
            logits = logits + e @ w.t()
        logits = F.leaky_relu(logits, p.negative_slope)
    if old_loop is not None:  # the original self-loops: weight exactly 0 (the added loop replaces them)
        logits = logits.masked_fill(old_loop.unsqueeze(-1), float("-inf"))
    alpha = ops.edge_softmax(dg, logits)
    if p.dropout > 0:
        alpha = F.dropout(alpha, p.dropout, block.training)
    out = ops.u_mul_e_sum(dg, x_src, alpha.unsqueeze(-1))  # (N, H, C)
    out = out.reshape(n, H * C) if p.concat else out.mean(1)
    if block.bias is not None:
        out = out + block.bias
    return {p.out_key: out}


# ---------------------------------------------------------------------------------- mpnn
def edge_network_conv(conv, g, x: Tensor, e: Tensor) -> Tensor:
    """:class:`graphdl.nn.mpnn.EdgeNetworkConv` on DGL: ``⊕_j x_j A(e_ij)`` as DGL's NNConv computes
    it, one fused ``u_mul_e`` + reduce of ``x_j`` (N, d_in, 1) by the per-edge matrices (E, d_in, d_out)."""
    ops, dg = _ops(), dgl_graph(g)
    w = conv.nn(e).view(-1, conv.in_dim, conv.out_dim)
    out = getattr(ops, f"u_mul_e_{conv.aggr}")(dg, x.unsqueeze(-1), w).sum(1)
    if conv.lin is not None:
        out = out + conv.lin(x)
    if conv.bias is not None:
        out = out + conv.bias
    return out


# ----------------------------------------------------------------------------- geometric
def _agg_e(g, dg, x: Tensor, how) -> Tensor:
    """graphdl.nn.egnn's ``_agg`` on DGL: sum, mean over in-degree, or sum times a constant."""
    if how == "mean":
        return _ops().copy_e_mean(dg, x)
    s = _ops().copy_e_sum(dg, x)
    return s if how == "sum" else s * float(how)


def _egnn(block, g, f):
    from graphdl.ops.geometry import safe_sqrt

    p, ops, dg = block.p, _ops(), dgl_graph(g)
    h, x = f[p.input], f[p.pos]
    r = ops.v_sub_u(dg, x, x)  # x_dst − x_src
    d2 = (r * r).sum(-1, keepdim=True)
    parts = [ops.copy_v(dg, h), ops.copy_u(dg, h), torch.log1p(d2) if p.distance_feature == "log1p" else d2]
    if p.edge_input is not None:
        parts.append(f[p.edge_input])
    m = block.phi_e(torch.cat(parts, -1))
    if p.attention:
        m = m * block.att(m)
    out = block.phi_h(torch.cat([h, _agg_e(g, dg, m, p.aggr)], -1))
    if block.res:
        out = out + h
    writes = {p.output or p.input: out}
    if p.update_pos:
        if p.normalize:
            r = r / (safe_sqrt(d2, p.eps) + p.norm_constant)
        w = block.phi_x(m)
        if p.tanh:
            w = torch.tanh(w) * p.coords_range
        x_new = x + _agg_e(g, dg, r * w, p.coords_agg)
        if p.vel is not None:
            x_new = x_new + block.phi_v(h) * f[p.vel]
        writes[p.pos_output or p.pos] = x_new
    return writes


def _schnet(block, g, f):
    from graphdl.nn.egnn import cosine_cutoff, gaussian_rbf
    from graphdl.ops.geometry import safe_sqrt

    p, ops, dg = block.p, _ops(), dgl_graph(g)
    h, x = f[p.input], f[p.pos]
    r = ops.v_sub_u(dg, x, x)
    d = safe_sqrt((r * r).sum(-1, keepdim=True))
    w = block.filter(gaussian_rbf(d, p.num_rbf, p.cutoff)) * cosine_cutoff(d, p.cutoff)
    m = ops.u_mul_e_sum(dg, block.lin_in(h), w)  # CFConv's fused message + sum
    return {p.output or p.input: h + block.lin_out(m)}


# ------------------------------------------------------------------------------- readout
def _seglen(g, space: str) -> Tensor:
    """Rows per graph of a node (``node``) or edge (``edge``) field (cached)."""
    key = ("dgl_seglen", space)
    hit = g._cache.get(key)
    if hit is None:
        index = g.batch if space == "node" else g.edge_batch
        hit = g._cache[key] = torch.bincount(index, minlength=g.num_graphs)
    return hit


def _readout(block, g, f):
    p = block.p
    ops = _ops()
    x = f[p.input]
    if x.dim() == 1:
        x = x.unsqueeze(-1)
    seglen = _seglen(g, block.space)
    if p.reduce in ("sum", "mean", "max"):
        # an empty graph (an edge readout of a graph without edges) gives 0, as graphdl's; DGL's
        # mean divides 0 by 0 there and its max may leave it unset
        empty = (seglen == 0).reshape((-1,) + (1,) * (x.dim() - 1))
        if p.reduce == "mean":
            count = seglen.clamp(min=1).to(x.dtype).reshape(empty.shape)
            out = ops.segment_reduce(seglen, x, "sum") / count
        else:
            out = ops.segment_reduce(seglen, x, p.reduce)
            if p.reduce == "max":
                out = out.masked_fill(empty, 0.0)
    elif p.reduce == "attention":
        gate = ops.segment_softmax(seglen, block.gate_nn(x))
        val = block.nn(x) if block.nn is not None else x
        out = ops.segment_reduce(seglen, gate * val, "sum")
    else:
        index = g.batch if block.space == "node" else g.edge_batch
        b, d = g.num_graphs, x.size(-1)
        state = (x.new_zeros(b, d), x.new_zeros(b, d))
        q_star = x.new_zeros(b, 2 * d)
        for _ in range(p.steps):  # over processing steps, not graphs
            state = block.lstm(q_star, state)  # LSTMStep: one step of nn.LSTM's cell
            q = state[0]
            a = ops.segment_softmax(seglen, (x * q.index_select(0, index)).sum(-1, keepdim=True))
            q_star = torch.cat([q, ops.segment_reduce(seglen, a * x, "sum")], -1)
        out = q_star
    return {p.out_key: out}


# -------------------------------------------------------------------------------- table
LOWERINGS: dict[str, tuple[Callable, str]] = {
    "gcn": (_gcn, "copy_u_sum between D^-1/2 node scalings + diag self-loops (u_mul_e_sum with edge weights)"),
    "sage": (_sage, "copy_u_{reduce}"),
    "gin": (_gin, "copy_u_sum"),
    "gine": (_gine, "u_add_e + copy_e_sum"),
    "gated_gcn": (_gated_gcn, "u_add_v + u_mul_e_sum + copy_e_sum"),
    "monet": (_monet, "u_mul_e_{aggr} per kernel"),
    "gat": (_gat, "u_add_v + edge_softmax + u_mul_e_sum"),
    "gatv2": (_gat, "u_add_v + edge_softmax + u_mul_e_sum"),
    "nnconv": (None, "u_mul_e_{aggr} (edge network)"),
    "mpnn": (None, "u_mul_e_{aggr} (edge network)"),
    "egnn": (_egnn, "v_sub_u + copy_u/copy_v + copy_e_{aggr}"),
    "schnet": (_schnet, "v_sub_u + u_mul_e_sum"),
    "readout": (_readout, "segment_reduce/segment_softmax"),
    "edge_readout": (_readout, "segment_reduce/segment_softmax"),
}
"""Block name -> (its DGL forward, what it calls); nnconv/mpnn lower inside EdgeNetworkConv."""


def forward(block, g, f: dict[str, Tensor]) -> dict[str, Tensor]:
    """``block.forward(g, f)`` with the message passing on DGL (see the module docstring)."""
    fn = LOWERINGS.get(type(block).name, (None, ""))[0]
    if fn is None:
        raise KernelUnavailableError(f"block `{type(block).name}` has no DGL lowering in graphdl.interop.dgl_lowering")
    return fn(block, g, f)


def dgl_note(block) -> str:
    """``describe``'s note for a block under ``lowering: dgl`` (the DGL kernels it calls)."""
    note = LOWERINGS.get(type(block).name, (None, "?"))[1]
    reduce = getattr(block, "_reduce", None)  # sage: max_pool reduces with max
    aggr = getattr(block.p, "aggr", None)
    note = note.replace("{reduce}", str(reduce)).replace("{aggr}", str(aggr))
    return f"dgl: {note}"
