"""AlphaFold2's structure-module blocks: invariant point attention, frames, backbone updates, relative positions.

Source: Jumper et al. 2021, "Highly accurate protein structure prediction with AlphaFold",
supplementary information (https://doi.org/10.1038/s41586-021-03819-2), Algorithms 20–23;
relative position encoding from its section 1.6 (``relpos``).

Blocks:

* ``ipa`` (:class:`InvariantPointAttention`, Algorithm 22);
* ``frames_from_backbone`` (Algorithm 21): frames from N, CA, C coordinates;
* ``backbone_update`` (Algorithm 23): a zero-initialised linear map to a quaternion update and
  a translation, composed onto each frame;
* ``frame_stop_gradient``: ``stop_gradient`` on the rotations (AF2 does this between
  structure-module iterations, Algorithm 20 line 20);
* ``relative_position``: AF2's relative position encoding as an edge field (the pair
  representation ``z_ij`` of a ``complete`` graph with self-loops).

Frames (``frame`` fields, :class:`graphdl.types.Frame`) rotate and translate with the
structure. Only blocks that declare ``frame_equivariant = True`` (these) may read or write
them; the compiler refuses any other block on a frame field, as it refuses a plain MLP on a
``1o`` vector.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, field_validator
from torch import Tensor, nn
from torch.autograd import Function

from graphdl.errors import InferenceError, KernelUnavailableError
from graphdl.nn.attention import dense_index
from graphdl.nn.base import Block, BlockParams, Signature, register_block
from graphdl.nn.basic import _check_key
from graphdl.ops.frames import compose, frame_parts, frames_from_backbone, make_frame, quaternion_to_rotation
from graphdl.ops.segment import segment_softmax, segment_sum
from graphdl.ops.spmm import sddmm, spmm
from graphdl.types import FRAME, Frame, Irreps, Scalar, split_key

# --------------------------------------------------------------------- per-dtype constants
# The attention core (points, squared distances, logits, softmax, weighted sums) runs in
# float64 for a float64 model and in float32 otherwise, also under autocast and in a bf16/fp16
# model: AF2 implementations went NaN in fp16 exactly there (squared distances of Å-scale
# points overflow and cancel). The constants are chosen for that compute dtype:
#   mask value  — added as −value to the logit of a padded or absent key. Finite, so a row
#                 with no valid key (a padded query row) gives a uniform, finite softmax whose
#                 gradient is 0, never 0·NaN; 1e5 as AF2 (exp(−1e5·w_L) is exactly 0 in
#                 float32/64); 1e4 in float16 as AF2's fp16 setting (1e5 overflows fp16).
#   norm ε      — √(‖o‖² + ε) of the value points' norms: 1e-8 as AF2 (√ε = 1e-4 Å floor);
#                 1e-4 in float16, where 1e-8 underflows to 0 (and √0 has an infinite gradient).
_MASK_VALUE = {torch.float16: 1e4}
_NORM_EPS = {torch.float16: 1e-4}
MASK_VALUE_DEFAULT = 1e5
NORM_EPS_DEFAULT = 1e-8


def ipa_constants(dtype: torch.dtype) -> tuple[float, float]:
    """``(mask value, norm ε)`` of the IPA attention core computed in ``dtype`` (see above)."""
    return _MASK_VALUE.get(dtype, MASK_VALUE_DEFAULT), _NORM_EPS.get(dtype, NORM_EPS_DEFAULT)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The attention core's dtype for inputs of ``dtype``: float64 stays, anything else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _keys(*names):
    def check(cls, v):
        return None if v is None else _check_key(v)

    return field_validator(*names)(classmethod(check))


def _need_frame(fields, key: str, block: str) -> None:
    t = fields.need(key, block)
    if not isinstance(t, Frame):
        raise InferenceError(f"{block} needs `{key}` to be a rigid frame field (type `frame`, one rotation and "
                             f"translation per residue), found {t}; declare `{key}: frame` under `inputs:` or make "
                             f"it with `frames_from_backbone`")
    if split_key(key)[0] != "node":
        raise InferenceError(f"{block}: frames live on nodes; `{key}` is not a node field")


def _node(key: str, block: str, what: str) -> None:
    if split_key(key)[0] != "node":
        raise InferenceError(f"{block} {what} `{key}` must be a node field (e.g. `node.{key.split('.')[-1]}`)")


def _first_order_only() -> None:
    """Refuse a backward that builds a graph (``create_graph=True``): the dense kernels' gradients
    are hand-written first derivatives; ``torch.autograd.function.once_differentiable`` would not
    do here, as ``torch.autograd.grad(..., inputs)`` silently drops the branch it poisons."""
    if torch.is_grad_enabled():
        raise KernelUnavailableError(
            "ipa's dense lowering has hand-written first derivatives only, and a second derivative "
            "(create_graph=True: forces by autograd, gradient penalties) was asked for; set `lowering: sparse` "
            "on the ipa layer (its per-edge kernels are twice differentiable)")


class _PairGrad:
    """The gradient of the pair field, shared by the two products that read it (see :class:`_PairBias`)."""

    __slots__ = ("dz", "index", "need")

    def __init__(self, need: bool, index: Tensor | None = None):
        self.dz: Tensor | None = None
        self.index = index  # rows of the dense (B·M·M, c_z) block holding the edges, or None: same order
        self.need = need


class _PairBias(Function):
    """``b = z Wᵀ + β`` (the pair bias, ``(E, H)``), whose backward also delivers ``_PairOut``'s ∂z.

    Both products read the ``(E, c_z)`` pair field, the largest tensor of IPA. With plain autograd
    each backward makes its own ``(E, c_z)`` gradient and autograd adds them: two such buffers
    live at once. Here ``_PairOut`` (which runs first in the backward pass: it consumes the
    attention weights, which depend on this bias) leaves its ∂z in ``holder`` and this backward
    adds ``∂b W`` into it in place, so ∂z is one buffer. First derivatives only (see
    :func:`_first_order_only`).
    """

    @staticmethod
    def forward(ctx, z, weight, bias, holder):
        ctx.save_for_backward(z, weight)
        ctx.holder = holder
        return torch.addmm(bias, z, weight.t())

    @staticmethod
    def backward(ctx, grad):
        _first_order_only()
        z, weight = ctx.saved_tensors
        holder = ctx.holder
        dz = None
        if ctx.needs_input_grad[0]:
            dz = holder.dz
            holder.dz = None
            if dz is not None and holder.index is not None:
                dz = dz.index_select(0, holder.index)
            dz = torch.mm(grad, weight) if dz is None else dz.addmm_(grad, weight)
        dw = grad.t().mm(z) if ctx.needs_input_grad[1] else None
        db = grad.sum(0) if ctx.needs_input_grad[2] else None
        return dz, dw, db, None


class _Attend(Function):
    """Softmax of one dense block and the attention-weighted sums of values and pair features.

    ``a = softmax_j(logits)`` (``(B, H, M, M)``; rows flagged ``empty`` are set to 0),
    ``o = a V`` (``vals (B, H, M, D)`` → ``(B, H, M, D)``) and ``o_pair_ih = Σ_j a_hij z_ij``
    (``z (B, M, M, c_z)`` → ``(B, M, H, c_z)``, or None without a pair field; ``z`` is passed
    detached and its gradient goes to ``holder`` for :class:`_PairBias`).

    Why a function of its own: the backward writes ∂a from both products into one buffer and
    turns it into ∂logits in place (``a ⊙ (∂a − Σ_j a ∂a)``), filling the pair term in
    blocks of query rows, so the backward holds one ``(B, H, M, M)`` temporary beside the
    saved weights where autograd would hold four (one per product, their sum, the softmax
    gradient). First derivatives only (see :func:`_first_order_only`).
    """

    ROW_BLOCKS = 8

    @staticmethod
    def forward(ctx, logits, vals, zd, holder, empty):
        attn = torch.softmax(logits, -1)
        if empty is not None:
            attn.masked_fill_(empty, 0.0)
        ctx.save_for_backward(attn, vals, zd)
        ctx.holder = holder
        o = attn @ vals
        if zd is None:
            return o
        return o, attn.transpose(1, 2) @ zd

    @staticmethod
    def backward(ctx, grad_o, grad_pair=None):
        _first_order_only()
        attn, vals, zd = ctx.saved_tensors
        m = attn.size(-1)
        if zd is not None and ctx.holder is not None and ctx.holder.need:
            ctx.holder.dz = (attn.permute(0, 2, 3, 1) @ grad_pair).reshape(-1, zd.size(-1))  # (B·M·M, c_z)
        dvals = attn.transpose(-1, -2) @ grad_o if ctx.needs_input_grad[1] else None
        dlogits = None
        if ctx.needs_input_grad[0]:
            da = grad_o @ vals.transpose(-1, -2)  # ∂a, (B, H, M, M)
            if zd is not None:
                view = da.transpose(1, 2)  # (B, M_i, H, M_j)
                step = -(-m // _Attend.ROW_BLOCKS)
                for i0 in range(0, m, step):  # a fixed number of row blocks, not a loop over residues
                    view[:, i0:i0 + step].add_(grad_pair[:, i0:i0 + step] @ zd[:, i0:i0 + step].transpose(-1, -2))
            # Σ_j a ∂a per row as a batched (1 × M)(M × 1) product: no (B, H, M, M) temporary
            dot = (da.reshape(-1, 1, m) @ attn.reshape(-1, m, 1)).view(da.shape[:-1] + (1,))
            dlogits = da.sub_(dot).mul_(attn)
        return dlogits, dvals, None, None, None


def _graph_centres(trans: Tensor, g) -> Tensor:
    """Per-node centre of its graph's translations, ``(N, 3)`` (segment mean; no host sync)."""
    ptr = g.ptr
    total = segment_sum(trans, g.batch, g.num_graphs, ptr)
    count = (ptr[1:] - ptr[:-1]).clamp_min(1).to(trans.dtype).unsqueeze(-1)
    return (total / count).index_select(0, g.batch)


# ------------------------------------------------------------------------------------ IPA
@register_block("ipa")
class InvariantPointAttention(Block):
    r"""Invariant point attention (AF2 supplement Algorithm 22).

    Per head ``h``: scalar queries, keys, values ``q, k, v`` (``scalar_qk``/``scalar_v``
    channels) and query/key/value points ``q_p, k_p`` (``points_qk`` each) and ``v_p``
    (``points_v``), made from ``s_i`` in residue ``i``'s local frame and mapped to the global
    frame by ``T_i`` (``x ↦ R_i x + t_i``). With ``γ_h = softplus(θ_h)`` (``θ`` initialised to
    softplus⁻¹(1)), ``w_L = √(1/3)`` (``√(1/2)`` without a pair input) and ``w_C = √(2/(9 P_qk))``,

    ``a_ij = softmax_j w_L (q_i·k_j/√c + b_ij − γ_h w_C/2 Σ_p ‖T_i q_ip − T_j k_jp‖²)``,

    ``b_ij`` a linear map of the pair representation ``z_ij``. Outputs, per head: ``Σ_j a_ij v_j``;
    the value points ``T_i⁻¹ Σ_j a_ij T_j v_jp`` back in the local frame, their coordinates and
    norms ``√(‖·‖² + ε)``; and ``Σ_j a_ij z_ij``; concatenated and projected to ``out_dim``
    by a zero-initialised linear map (so a residual structure module starts as the identity).

    Layouts follow AF2 (and OpenFold), so their weights copy one to one: point projections are
    laid out ``(xyz, head, point)``; the concatenation is ``[scalar (head, c), point x
    (head, point), point y, point z, norms (head, point), pair (head, c_z)]``.

    The point term is ``‖q‖² + ‖k‖² − 2 q·k``, folded with the scalar term into one product
    of augmented per-node vectors (``[q/√c, 2γ' q_p, −γ'‖q_p‖², 1]·[k, k_p, 1, −γ'‖k_p‖²]``,
    ``γ' = γ_h w_C/2``), so no ``(N, N, H, P, 3)`` tensor exists. Global points are taken
    relative to the centre of each chain's translations (translation-invariant, exactly), which
    keeps the expansion's cancellation to the chain's size instead of its distance from the
    origin.

    Lowerings: on a ``complete`` graph (``graph.kind: complete``, AF2 with ``self_loops: true``)
    the attention runs densely over per-graph blocks padded to the largest graph (one host sync
    per batch, cached; none when the dataset declares a fixed size); when every graph of the
    batch has that size and the graph has self-loops, the pair field is already the
    ``(B, M, M, c_z)`` block (edges are sorted by destination, then source) and is used without
    a copy. Elsewhere (radius / kNN graphs of residues) it runs per edge: logits by a sampled
    dense-dense product, a segment softmax over destination-sorted edges, values by a CSR
    product. Both agree to float64 round-off on complete graphs (``lowering: sparse|dense``
    forces one).

    Derivatives: the dense lowering's backward is hand-written (one ``(E, c_z)`` buffer for
    ∂z, the softmax gradient in place) and gives first derivatives; asking it for a second
    (``create_graph=True``) is a :class:`~graphdl.errors.KernelUnavailableError` naming
    ``lowering: sparse``, whose kernels are twice differentiable. Under ``torch.compile`` the
    dense lowering is written in plain differentiable ops instead (the hand-written backward
    passes ∂z through a Python object, which Dynamo cannot trace); the compiler plans its buffers.

    Precision: the attention core runs in float32 for float32/bfloat16/float16 inputs and
    under autocast (float64 stays float64); only the projections follow autocast. Mask value
    and norm ε per compute dtype: see :func:`ipa_constants`.

    Args (spec keys):
        input / output: single representation read / written (``node.s``; output defaults to input).
        frame: frame field (``node.frame``). pair: pair representation edge field (``edge.z``),
            or ``null`` for none.
        heads (12), scalar_qk (16), scalar_v (16), points_qk (4), points_v (8): AF2's settings.
        out_dim: output channels (default: input channels).
        bias: biases on the q/k/v and point projections (true, as AF2; false as the
            ``invariant-point-attention`` package).
        eps: norm ε (default per dtype). lowering: ``auto`` | ``dense`` | ``sparse``.

    Shapes: ``input (N, c_s)``, ``frame (N, 4, 3)``, ``pair (E, c_z)`` → ``output (N, out_dim)``.
    """

    family = "ipa"
    equivariant = True
    frame_equivariant = True
    uses_edge_features = True

    class Params(BlockParams):
        input: str = "node.s"
        output: str | None = None
        frame: str = "node.frame"
        pair: str | None = "edge.z"
        heads: PositiveInt = 12
        scalar_qk: PositiveInt = 16
        scalar_v: PositiveInt = 16
        points_qk: PositiveInt = 4
        points_v: PositiveInt = 8
        out_dim: PositiveInt | None = None
        bias: bool = True
        eps: float | None = Field(None, gt=0)
        lowering: Literal["auto", "dense", "sparse"] = "auto"

        _k = _keys("input", "output", "frame", "pair")

    @classmethod
    def infer(cls, p, fields, ctx):
        _node(p.input, cls.name, "`input`")
        d = fields.need_scalar(p.input, cls.name)
        _need_frame(fields, p.frame, cls.name)
        reads = {p.input: fields[p.input], p.frame: FRAME}
        dz = 0
        if p.pair is not None:
            if split_key(p.pair)[0] != "edge":
                raise InferenceError(f"{cls.name} `pair` `{p.pair}` must be an edge field (the pair representation "
                                     f"z_ij lives on the edges j -> i, e.g. `edge.z`)")
            dz = fields.need_scalar(p.pair, cls.name)
            reads[p.pair] = fields[p.pair]
        if p.lowering == "dense" and ctx.graph_kind != "complete":
            raise InferenceError(f"{cls.name} `lowering: dense` attends over all residue pairs of each graph, which "
                                 f"is the message-passing graph only with `graph.kind: complete` (found "
                                 f"`{ctx.graph_kind}`); use `lowering: auto` or `sparse`")
        dense = p.lowering == "dense" or (p.lowering == "auto" and ctx.graph_kind == "complete")
        out = p.out_dim or d
        return Signature(reads, {p.output or p.input: Scalar(out)}, {"d": d, "dz": dz, "out": out, "dense": dense})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d, dz, out = sig.info["d"], sig.info["dz"], sig.info["out"]
        H, C, Cv, P, Pv = p.heads, p.scalar_qk, p.scalar_v, p.points_qk, p.points_v
        self.dense = bool(sig.info["dense"])
        # the padded layout's side is read from the batch (GraphModel reads it before a trace)
        self.needs_max_graph_nodes = self.dense and getattr(ctx, "num_nodes_hint", None) is None
        self.linear_q = nn.Linear(d, H * C, bias=p.bias)
        self.linear_k = nn.Linear(d, H * C, bias=p.bias)
        self.linear_v = nn.Linear(d, H * Cv, bias=p.bias)
        self.linear_q_points = nn.Linear(d, 3 * H * P, bias=p.bias)
        self.linear_k_points = nn.Linear(d, 3 * H * P, bias=p.bias)
        self.linear_v_points = nn.Linear(d, 3 * H * Pv, bias=p.bias)
        self.linear_b = nn.Linear(dz, H) if dz else None
        # softplus(θ) = 1 at θ = log(e − 1) = 0.5413 (AF2)
        self.head_weights = nn.Parameter(torch.full((H,), math.log(math.e - 1.0)))
        self.linear_out = nn.Linear(H * (Cv + 4 * Pv + dz), out)
        nn.init.zeros_(self.linear_out.weight)
        nn.init.zeros_(self.linear_out.bias)
        self.w_l = math.sqrt(1.0 / 3.0) if dz else math.sqrt(1.0 / 2.0)
        self.w_c = math.sqrt(2.0 / (9.0 * P))

    # -------------------------------------------------------------------------- forward
    def forward(self, g, f):
        p = self.p
        s = f[p.input]
        n = s.size(0)
        H, C, Cv, P, Pv = p.heads, p.scalar_qk, p.scalar_v, p.points_qk, p.points_v
        q, k, v = self.linear_q(s), self.linear_k(s), self.linear_v(s)
        qp, kp, vp = self.linear_q_points(s), self.linear_k_points(s), self.linear_v_points(s)
        z = f[p.pair] if p.pair is not None else None
        dt = compute_dtype(q.dtype)
        mask_value, eps = ipa_constants(dt)
        if p.eps is not None:
            eps = p.eps
        with torch.autocast(s.device.type, enabled=False):
            rot, trans = frame_parts(f[p.frame].to(dt))
            trans = trans - _graph_centres(trans, g)

            def to_global(x: Tensor, pts: int) -> Tensor:  # (N, 3·H·pts) in (xyz, h, p) → (N, H, pts, 3)
                x = x.to(dt).view(n, 3, H, pts).permute(0, 2, 3, 1)
                return torch.einsum("nab,nhpb->nhpa", rot, x) + trans.view(n, 1, 1, 3)

            qg, kg, vg = to_global(qp, P), to_global(kp, P), to_global(vp, Pv)
            gamma = F.softplus(self.head_weights.to(dt)) * (self.w_c / 2)  # γ_h w_C / 2, (H,)
            ones = qg.new_ones(n, H, 1)
            qn = (qg * qg).sum((-1, -2)).unsqueeze(-1)  # ‖q_p‖² summed over points, (N, H, 1)
            kn = (kg * kg).sum((-1, -2)).unsqueeze(-1)
            gam = gamma.view(1, H, 1)
            qa = torch.cat([q.to(dt).view(n, H, C) / math.sqrt(C), 2 * gam * qg.reshape(n, H, 3 * P),
                            -gam * qn, ones], -1)
            ka = torch.cat([k.to(dt).view(n, H, C), kg.reshape(n, H, 3 * P), ones, -gam * kn], -1)
            vals = torch.cat([v.to(dt).view(n, H, Cv), vg.reshape(n, H, 3 * Pv)], -1)
            zz = z.to(dt) if z is not None else None
            if self.dense:
                o, o_pair, wsum = self._dense(g, qa, ka, vals, zz, mask_value)
            else:
                o, o_pair, wsum = self._sparse(g, qa, ka, vals, zz)
            o_s = o[..., :Cv].reshape(n, H * Cv)
            og = o[..., Cv:].reshape(n, H, Pv, 3)
            # R_iᵀ (Σ_j a_ij T_j v_jp − (Σ_j a_ij) t_i): R_iᵀ (o − t_i) where the weights sum to 1, and 0 for
            # a residue without neighbours (no weights), in every lowering and frame
            origin = trans.view(n, 1, 1, 3) if wsum is None else wsum.view(n, H, 1, 1) * trans.view(n, 1, 1, 3)
            local = torch.einsum("nba,nhpb->nhpa", rot, og - origin)
            norm = torch.sqrt((local * local).sum(-1) + eps)  # (N, H, Pv)
            parts = [o_s, local.permute(0, 3, 1, 2).reshape(n, 3 * H * Pv), norm.reshape(n, H * Pv)]
            if o_pair is not None:
                parts.append(o_pair.reshape(n, -1))
            feats = torch.cat(parts, -1)
        return {p.output or p.input: self.linear_out(feats.to(s.dtype))}

    def _pair_weights(self, dt):
        """``w_L W_b`` and ``w_L β_b``: the pair bias pre-scaled by ``w_L`` (as ``qa``, see ``_dense``)."""
        return self.linear_b.weight.to(dt) * self.w_l, self.linear_b.bias.to(dt) * self.w_l

    def _dense(self, g, qa, ka, vals, z, mask_value):
        """Dense attention over padded ``(B, H, M, M)`` blocks.

        Returns ``(N, H, Dv)`` values, ``(N, H, c_z)`` pair features (or None) and the sum of
        each row's weights ``(N, H)`` (None when every row has neighbours: the sum is 1). A row
        without any neighbour (an isolated residue; padding) gets weights 0, not a softmax of
        mask values."""
        idx, counts, m = dense_index(g, self.ctx.num_nodes_hint)
        bsz = g.num_graphs
        n, H = qa.shape[:2]

        def pad(t):  # (N, H, D) -> (B, H, M, D)
            out = t.new_zeros((bsz * m,) + tuple(t.shape[1:])).index_copy(0, idx, t)
            return out.view(bsz, m, H, -1).transpose(1, 2)

        exact = g.num_edges == bsz * m * m and self.ctx.self_loops and n == bsz * m
        # w_L folded into the queries and the pair bias: no extra pass over the (B, H, M, M) logits
        logits = pad(qa * self.w_l) @ pad(ka).transpose(-1, -2)  # (B, H, M, M)
        zd = holder = None
        empty = None
        if not exact:
            src, dst = g.src, g.dst
            epos = idx.index_select(0, dst) * m + (idx.index_select(0, src) % m)
        # Under torch.compile the memory-saving functions (_PairBias, _Attend) give way to the same
        # math in plain differentiable ops: they pass ∂z between backwards through a Python object,
        # a side effect Dynamo refuses (a graph break per call); the compiler plans the buffers itself.
        plain = torch.compiler.is_compiling()
        if z is not None:
            if plain:
                bias = F.linear(z, *self._pair_weights(qa.dtype))
            else:
                # the pair bias and the pair output share one ∂z buffer (see _PairBias)
                holder = _PairGrad(z.requires_grad, None if exact else epos)
                bias = _PairBias.apply(z, *self._pair_weights(qa.dtype), holder)
        if exact:
            # every graph has M nodes and all M² edges, sorted by (dst, src): the edge order is the block order
            if z is not None:
                logits.add_(bias.view(bsz, m, m, H).permute(0, 3, 1, 2))  # in place: matmul keeps no output
                zd = (z if plain else z.detach()).view(bsz, m, m, -1)
        else:
            present = torch.zeros(bsz * m * m, dtype=torch.bool, device=qa.device).index_fill_(0, epos, True)
            if z is not None:
                bd = bias.new_zeros(bsz * m * m, H).index_copy(0, epos, bias)
                logits.add_(bd.view(bsz, m, m, H).permute(0, 3, 1, 2))
                zs = z if plain else z.detach()
                zd = zs.new_zeros(bsz * m * m, z.size(-1)).index_copy(0, epos, zs).view(bsz, m, m, -1)
            present = present.view(bsz, 1, m, m)
            logits = logits.masked_fill(~present, -mask_value)
            empty = ~present.any(-1, keepdim=True)  # (B, 1, M, 1)
        wsum = None
        if empty is not None:
            wsum = (~empty).to(qa.dtype).expand(bsz, H, m, 1).transpose(1, 2).reshape(bsz * m, H).index_select(0, idx)
        # softmax, Σ_j a_ij v_j and Σ_j a_ij z_ij (one (H × M) @ (M × c_z) product per query row)
        o_pair = None
        if plain:
            attn = torch.softmax(logits, -1)
            if empty is not None:
                attn = attn.masked_fill(empty, 0.0)
            o = attn @ pad(vals)
            if zd is not None:
                o_pair = (attn.transpose(1, 2) @ zd).reshape(bsz * m, H, -1).index_select(0, idx)
        elif zd is None:
            o = _Attend.apply(logits, pad(vals), None, None, empty)
        else:
            o, o_pair = _Attend.apply(logits, pad(vals), zd, holder, empty)
            o_pair = o_pair.reshape(bsz * m, H, -1).index_select(0, idx)
        o = o.transpose(1, 2).reshape(bsz * m, H, -1).index_select(0, idx)
        return o, o_pair, wsum

    def _sparse(self, g, qa, ka, vals, z):
        """Per-edge attention over ``g``'s edges (destination = query); returns as :meth:`_dense`."""
        n, H = qa.shape[:2]
        csr, csr_t = g.csr(), g.csr_t()
        logits = sddmm(csr, qa * self.w_l, ka, csr_t)
        if z is not None:
            logits = logits + F.linear(z, *self._pair_weights(qa.dtype))
        alpha = segment_softmax(logits, g.dst, n, csr.rowptr)
        o = spmm(csr, vals, alpha, csr_t=csr_t)
        o_pair = None
        if z is not None:
            # one head at a time keeps the temporaries at (E, c_z), never (E, H, c_z)
            o_pair = torch.stack([segment_sum(alpha[:, h:h + 1] * z, g.dst, n, csr.rowptr) for h in range(H)], 1)
        # 1 for a residue with neighbours (up to round-off), 0 without: from the degree, not the weights
        wsum = (csr.degree() > 0).to(alpha.dtype).view(n, 1).expand(n, H)
        return o, o_pair, wsum

    def describe_extra(self) -> str:
        p = self.p
        return (f"{p.heads} heads, qk {p.scalar_qk}+{p.points_qk}pt, v {p.scalar_v}+{p.points_v}pt, "
                + ("dense" if self.dense else "sparse"))


# ---------------------------------------------------------------------- frames and updates
@register_block("frames_from_backbone")
class FramesFromBackbone(Block):
    """Backbone frames from N, CA, C coordinates (AF2 supplement Algorithm 21, Gram–Schmidt).

    Reads one ``3x1o`` node field holding the N, CA and C positions of each residue (in that
    order, ``(N, 9)``) and writes a ``frame``: x axis along CA→C, N in the +y half-plane of
    the local xy plane, origin at CA (:func:`graphdl.ops.frames.frames_from_backbone`).
    Equivariant under proper rotations and translations; a reflection of the atoms is not a
    frame's symmetry (a frame stays right-handed), so ``verify`` reports reflections as such.

    Shapes: ``input (N, 9)`` → ``output (N, 4, 3)``.
    """

    family = "ipa"
    equivariant = True
    frame_equivariant = True
    needs_positions = True

    class Params(BlockParams):
        input: str = "node.pos_backbone"
        output: str = "node.frame"
        eps: float = Field(1e-8, gt=0)

        _k = _keys("input", "output")

    @classmethod
    def infer(cls, p, fields, ctx):
        _node(p.input, cls.name, "`input`")
        _node(p.output, cls.name, "`output`")
        t = fields.need(p.input, cls.name)
        if not (isinstance(t, Irreps) and t.terms == ((3, 1, -1),)):
            raise InferenceError(f"{cls.name} needs `{p.input}` to hold the N, CA and C positions of each residue "
                                 f"as type `3x1o` (9 numbers: N xyz, CA xyz, C xyz), found {t}")
        return Signature({p.input: t}, {p.output: FRAME})

    def forward(self, g, f):
        x = f[self.p.input].view(-1, 3, 3)
        return {self.p.output: frames_from_backbone(x[:, 0], x[:, 1], x[:, 2], eps=self.p.eps)}


@register_block("backbone_update")
class BackboneUpdate(Block):
    """Backbone update (AF2 supplement Algorithm 23): ``T_i ← T_i ∘ (R(q_i), t_i)``.

    A zero-initialised linear map of the single representation gives ``(b, c, d, t)``; the
    quaternion ``(1, b, c, d)`` is normalised to a rotation ``R(q)`` and the update is composed
    on the right (in the residue's local frame): ``R ← R R(q)``, ``t ← R t_upd + t``. At
    initialisation the update is the identity. The composition runs in float32 (float64 for a
    float64 model), as IPA's attention core.

    Shapes: ``input (N, c_s)``, ``frame (N, 4, 3)`` → ``output (N, 4, 3)``.
    """

    family = "ipa"
    equivariant = True
    frame_equivariant = True

    class Params(BlockParams):
        input: str = "node.s"
        frame: str = "node.frame"
        output: str | None = None

        _k = _keys("input", "frame", "output")

    @classmethod
    def infer(cls, p, fields, ctx):
        _node(p.input, cls.name, "`input`")
        d = fields.need_scalar(p.input, cls.name)
        _need_frame(fields, p.frame, cls.name)
        out = p.output or p.frame
        _node(out, cls.name, "`output`")
        return Signature({p.input: fields[p.input], p.frame: FRAME}, {out: FRAME}, {"d": d})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.linear = nn.Linear(sig.info["d"], 6)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, g, f):
        u = self.linear(f[self.p.input])
        fr = f[self.p.frame]
        dt = compute_dtype(fr.dtype)
        with torch.autocast(fr.device.type, enabled=False):
            u = u.to(dt)
            q = torch.cat([torch.ones_like(u[:, :1]), u[:, :3]], -1)
            upd = make_frame(quaternion_to_rotation(q), u[:, 3:])
            out = compose(fr.to(dt), upd).to(fr.dtype)
        return {self.p.output or self.p.frame: out}


@register_block("frame_stop_gradient")
class FrameStopGradient(Block):
    """``stop_gradient`` on a frame's rotation (``part: rotation``, AF2) or on the whole frame (``all``).

    AF2 detaches the rotations between structure-module iterations (supplement Algorithm 20,
    line 20): the next iteration's attention and updates see the rotation as a constant, so
    gradients reach it only through the FAPE of the iteration that produced it. Put this
    block first in the repeated group (it then also detaches the input frames, which carry no
    gradient in AF2) or right after ``backbone_update``.

    Shapes: ``(N, 4, 3)`` → ``(N, 4, 3)``.
    """

    family = "ipa"
    equivariant = True
    frame_equivariant = True

    class Params(BlockParams):
        input: str = "node.frame"
        output: str | None = None
        part: Literal["rotation", "all"] = "rotation"

        _k = _keys("input", "output")

    @classmethod
    def infer(cls, p, fields, ctx):
        _need_frame(fields, p.input, cls.name)
        return Signature({p.input: FRAME}, {p.output or p.input: FRAME})

    def forward(self, g, f):
        fr = f[self.p.input]
        if self.p.part == "all":
            out = fr.detach()
        else:
            rot, trans = frame_parts(fr)
            out = make_frame(rot.detach(), trans)
        return {self.p.output or self.p.input: out}


# ---------------------------------------------------------------------- relative positions
@register_block("relative_position")
class RelativePosition(Block):
    """AF2's relative position encoding as an edge field (supplement section 1.6, Algorithm 4 ``relpos``).

    For an edge ``j → i`` the offset ``r_i − r_j`` of residue indices is rounded, clipped to
    ``[−max_offset, max_offset]`` (32 in AF2), one-hot encoded in ``2·max_offset + 1`` bins
    and mapped linearly to ``out_dim`` channels (a lookup of the linear map's columns, equal to
    the product with the one-hot vector). On a ``complete`` graph with self-loops this is the
    initial pair representation ``z_ij``. Residue indices are a one-channel node field (the
    author numbering, so chain breaks show up as jumps).

    Shapes: ``input (N, 1)`` → ``output (E, out_dim)``.
    """

    family = "ipa"

    class Params(BlockParams):
        input: str = "node.residue_index"
        output: str = "edge.z"
        out_dim: PositiveInt = 128
        max_offset: PositiveInt = 32

        _k = _keys("input", "output")

    @classmethod
    def infer(cls, p, fields, ctx):
        _node(p.input, cls.name, "`input`")
        d = fields.need_scalar(p.input, cls.name)
        if d != 1:
            raise InferenceError(f"{cls.name} reads one residue index per node; `{p.input}` has {d} channels")
        if split_key(p.output)[0] != "edge":
            raise InferenceError(f"{cls.name} writes the pair representation, an edge field; `{p.output}` is not "
                                 f"(use e.g. `edge.z`)")
        return Signature({p.input: fields[p.input]}, {p.output: Scalar(p.out_dim)})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.linear = nn.Linear(2 * p.max_offset + 1, p.out_dim)

    def forward(self, g, f):
        r = f[self.p.input].reshape(-1)
        k = self.p.max_offset
        off = (r.index_select(0, g.dst) - r.index_select(0, g.src)).round().clamp(-k, k).long() + k
        return {self.p.output: self.linear.weight.t().index_select(0, off) + self.linear.bias}


__all__ = ["BackboneUpdate", "FrameStopGradient", "FramesFromBackbone", "InvariantPointAttention",
           "RelativePosition", "compute_dtype", "ipa_constants"]
