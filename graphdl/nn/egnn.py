"""E(n)-equivariant and distance-based blocks: EGNN, radial field, SchNet, edge geometry.

All of them read positions (a ``1o`` node field) only through relative vectors
``r_ij = x_i − x_j`` (``i`` the destination, ``j`` the source of an edge) and distances, so
their scalar outputs are invariant and their vector outputs rotate (and positions also
translate) with the input. ``graphdl verify`` measures this.

The N-body baselines of Satorras et al. (2021) that are *not* equivariant (the plain GNN)
are built from :class:`RawCoordinates` (vector -> 3 raw numbers, an explicit opt-out) and
:class:`AsVector`; ``verify`` reports their error as large, as it should.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator
from torch import Tensor, nn

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, BlockParams, DGLLowering, Signature, dgl_forward, register_block
from graphdl.nn.basic import _check_key, _check_keys
from graphdl.nn.mlp import MLP, ActName, activation
from graphdl.ops.geometry import SAFE_NORM_EPS, safe_norm, safe_sqrt, smooth_sinc
from graphdl.ops.segment import segment_sum
from graphdl.types import VECTOR, Scalar, split_key


def _keys(*names):
    def check(cls, v):
        return None if v is None else _check_key(v)

    return field_validator(*names)(classmethod(check))


def _space(key: str, space: str, what: str) -> None:
    if split_key(key)[0] != space:
        raise InferenceError(f"{what} `{key}` must be a {space} field (e.g. `{space}.{key.split('.')[-1]}`)")


def _rel(g, pos: Tensor) -> tuple[Tensor, Tensor]:
    """``r_ij = x_dst − x_src`` ``(E, 3)`` and ``‖r_ij‖²`` ``(E, 1)``.

    The squared norm is a polynomial of the positions, smooth where points coincide; blocks
    that need ``‖r_ij‖`` itself take :func:`~graphdl.ops.geometry.safe_sqrt` of it (never
    ``sqrt``, whose gradient is NaN at 0).
    """
    r = pos.index_select(0, g.dst) - pos.index_select(0, g.src)  # (index_select: ~1.5x advanced indexing)
    return r, (r * r).sum(-1, keepdim=True)


def _agg(g, x: Tensor, how) -> Tensor:
    """Sum (or mean over in-degree, or sum times a constant) of edge rows onto destinations."""
    s = segment_sum(x, g.dst, g.num_nodes, ptr=g.csr().rowptr)
    if how == "mean":
        deg = g.in_degree().to(x.dtype).clamp_min(1)
        return s / deg.reshape((-1,) + (1,) * (x.dim() - 1))
    if how == "sum":
        return s
    return s * float(how)


def _xavier_small(layer: nn.Linear, gain: float = 0.001) -> nn.Linear:
    nn.init.xavier_uniform_(layer.weight, gain=gain)
    return layer


CoordAgg = Literal["mean", "sum"] | float


# ------------------------------------------------------------------------------- EGNN
@register_block("egnn")
class EGNN(Block):
    """E(n)-equivariant graph convolution (Satorras, Hoogeboom & Welling 2021, Eqs. 3-7).

    ``m_ij = φ_e(h_i, h_j, δ(‖r_ij‖²), a_ij)``, ``x_i' = x_i + C Σ_j n(r_ij) w(m_ij)``,
    ``h_i' = h_i + φ_h(h_i, Σ_j m_ij)``; with ``vel``: ``x_i' = x_i + φ_v(h_i) v_i + C Σ_j n(r_ij) w(m_ij)``.

    The paper's layer is ``δ(s) = s``, ``n(r) = r``, ``w = φ_x``: set ``distance_feature:
    squared``, ``normalize: false``, ``tanh: false`` (the N-body and MMFF specs do). The
    defaults differ, so that an untrained stack stays finite and trainable on coordinates
    from 1 to 1e3 (molecules in Å, particle systems in simulation units); with the paper's
    layer an untrained 4-layer stack of width 32 on 10 random points reaches max |h| ≈ 3e2 at
    coordinate scale 10, 1e16 at 100 and NaN at 1000, because ``‖r‖²`` (1e6 at scale 1e3)
    enters φ_e unscaled and positions grow with every layer, feeding back into ``‖r‖²``:

    * ``distance_feature: log1p`` (default): ``δ(s) = log(1 + s)``, ≈ ``s`` for short distances,
      ``2 log ‖r‖`` for long ones (≈ 14 at 1e3 instead of 1e6); ``squared``: the paper's ``s``.
    * ``normalize: true`` (default): ``n(r) = r / (‖r‖_ε + norm_constant)`` with ``norm_constant``
      1 (the ``norm_diff`` / ``norm_constant: 1`` of the reference EGNN code and of EDM,
      Hoogeboom et al. 2022), so ``‖n(r)‖ < 1`` at every scale; ``norm_constant: 0`` gives unit
      vectors (``egnn_clean``'s ``normalize``); ``false``: ``n(r) = r``.
    * ``tanh: true`` (default): ``w = coords_range · tanh(φ_x(m))`` (``coords_range`` 15, as
      EDM), a bounded coordinate update (egnn-pytorch clamps its weights for the same reason);
      ``false``: ``w = φ_x(m)``.

    With both defaults and ``coords_agg: mean`` a layer moves a node by less than
    ``coords_range`` (plus ``φ_v(h_i) v_i`` with ``vel``), whatever the scale of the input.

    Every norm is the smooth ``‖r‖_ε = sqrt(‖r‖² + ε²)`` (:func:`~graphdl.ops.geometry.safe_norm`,
    ``ε = eps``, 1e-8), so outputs, gradients and second derivatives (forces trained by double
    backward) are finite where points coincide; away from zero it differs from ``‖r‖`` by at
    most ``ε²/(2‖r‖)``.

    Other options: ``coords_agg``: ``C`` is ``1/deg(i)`` (``mean``; ``1/(M−1)`` on a complete
    graph), 1 (``sum``) or a number. ``attention``: ``m_ij ← sigmoid(w · m_ij) m_ij``. ``skip``
    adds ``h_i`` when the width is unchanged (the block's own skip connection; the layer option
    ``residual:`` would add the input positions too).

    Shapes: ``input (N, d)``, ``pos (N, 3)``, ``vel (N, 3)``, ``edge_input (E, d_e)`` →
    ``output (N, out_dim)``, ``pos_output (N, 3)``.
    """

    family = "geometric"
    equivariant = True
    needs_positions = True
    uses_edge_features = True

    class Params(BlockParams):
        input: str = "node.h"
        output: str | None = None
        pos: str = "node.pos"
        pos_output: str | None = None
        vel: str | None = None
        edge_input: str | None = None
        hidden: PositiveInt = 64
        out_dim: PositiveInt | None = None
        act: ActName = "silu"
        aggr: Literal["sum", "mean"] = "sum"
        coords_agg: CoordAgg = "mean"
        update_pos: bool = True
        distance_feature: Literal["log1p", "squared"] = "log1p"
        normalize: bool = True
        norm_constant: NonNegativeFloat = 1.0
        attention: bool = False
        tanh: bool = True
        coords_range: PositiveFloat = 15.0
        skip: bool = True
        eps: PositiveFloat = SAFE_NORM_EPS
        lowering: DGLLowering = "auto"

        _k = _keys("input", "output", "pos", "pos_output", "vel", "edge_input")

    @classmethod
    def infer(cls, p, fields, ctx):
        d = fields.need_scalar(p.input, cls.name)
        fields.need_vector(p.pos, cls.name)
        _space(p.pos, "node", "egnn: `pos`")
        reads = {p.input: fields[p.input], p.pos: VECTOR}
        de = 0
        if p.edge_input is not None:
            de = fields.need_scalar(p.edge_input, cls.name)
            reads[p.edge_input] = fields[p.edge_input]
        if p.vel is not None:
            fields.need_vector(p.vel, cls.name)
            reads[p.vel] = VECTOR
        out = p.out_dim or d
        writes = {p.output or p.input: Scalar(out)}
        if p.update_pos:
            writes[p.pos_output or p.pos] = VECTOR
        elif p.vel is not None:
            raise InferenceError(f"{cls.name}: `vel` only enters the position update; set `update_pos: true` "
                                 f"or drop `vel`")
        return Signature(reads, writes, {"d": d, "de": de, "out": out})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d, de, out, hid = sig.info["d"], sig.info["de"], sig.info["out"], p.hidden
        self.phi_e = MLP([2 * d + 1 + de, hid, hid], act=p.act, last_act=True)
        self.phi_h = MLP([d + hid, hid, out], act=p.act)
        self.res = p.skip and out == d
        if p.attention:
            self.att = nn.Sequential(nn.Linear(hid, 1), nn.Sigmoid())
        if p.update_pos:
            self.phi_x = nn.Sequential(nn.Linear(hid, hid), activation(p.act),
                                       _xavier_small(nn.Linear(hid, 1, bias=False)))
        if p.vel is not None:
            self.phi_v = MLP([d, hid, 1], act=p.act)

    def forward(self, g, f):
        if self.p.lowering == "dgl":
            return dgl_forward(self, g, f)
        p = self.p
        h, x = f[p.input], f[p.pos]
        r, d2 = _rel(g, x)
        parts = [h.index_select(0, g.dst), h.index_select(0, g.src), torch.log1p(d2) if p.distance_feature == "log1p" else d2]
        if p.edge_input is not None:
            parts.append(f[p.edge_input])
        m = self.phi_e(torch.cat(parts, -1))
        if p.attention:
            m = m * self.att(m)
        out = self.phi_h(torch.cat([h, _agg(g, m, p.aggr)], -1))
        if self.res:
            out = out + h
        writes = {p.output or p.input: out}
        if p.update_pos:
            if p.normalize:
                # smooth norm: r/(‖r‖+c) has a NaN gradient at r = 0 when c = 0 (0/0) and a
                # NaN one through sqrt even when c > 0
                r = r / (safe_sqrt(d2, p.eps) + p.norm_constant)
            w = self.phi_x(m)
            if p.tanh:
                w = torch.tanh(w) * p.coords_range
            x_new = x + _agg(g, r * w, p.coords_agg)
            if p.vel is not None:
                x_new = x_new + self.phi_v(h) * f[p.vel]
            writes[p.pos_output or p.pos] = x_new
        return writes


# ----------------------------------------------------------------------- radial field
@register_block("radial_field")
class RadialField(Block):
    """Radial field (Köhler et al. 2020, as the EGNN paper's baseline).

    ``m_ij = φ_rf(‖r_ij‖, a_ij) r_ij``, ``x_i' = x_i + C Σ_j m_ij`` (``+ φ_v(‖v_i‖) v_i`` with ``vel``).
    Both norms are the smooth ``sqrt(‖·‖² + ε²)`` (:func:`~graphdl.ops.geometry.safe_norm`, ε = 1e-8):
    finite gradients and second derivatives at coincident points and zero velocities.

    Shapes: ``pos (N, 3)``, ``vel (N, 3)``, ``edge_input (E, d_e)`` → ``pos_output (N, 3)``.
    """

    family = "geometric"
    equivariant = True
    needs_positions = True

    class Params(BlockParams):
        pos: str = "node.pos"
        pos_output: str | None = None
        vel: str | None = None
        edge_input: str | None = None
        hidden: PositiveInt = 64
        act: ActName = "silu"
        coords_agg: CoordAgg = "mean"

        _k = _keys("pos", "pos_output", "vel", "edge_input")

    @classmethod
    def infer(cls, p, fields, ctx):
        fields.need_vector(p.pos, cls.name)
        reads = {p.pos: VECTOR}
        de = 0
        if p.edge_input is not None:
            de = fields.need_scalar(p.edge_input, cls.name)
            reads[p.edge_input] = fields[p.edge_input]
        if p.vel is not None:
            fields.need_vector(p.vel, cls.name)
            reads[p.vel] = VECTOR
        return Signature(reads, {p.pos_output or p.pos: VECTOR}, {"de": de})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        hid = p.hidden
        # φ_rf's last layer starts near zero (as φ_x in egnn): the untrained block is
        # x' ≈ x + φ_v(‖v‖) v instead of a random radial push that training must first undo
        self.phi = nn.Sequential(nn.Linear(1 + sig.info["de"], hid), activation(p.act),
                                 _xavier_small(nn.Linear(hid, 1, bias=False)), nn.Tanh())
        if p.vel is not None:
            self.phi_v = MLP([1, hid, 1], act=p.act)

    def forward(self, g, f):
        p = self.p
        x = f[p.pos]
        r, d2 = _rel(g, x)
        parts = [safe_sqrt(d2)]  # ‖r_ij‖, smooth at coincident points (sqrt's gradient is NaN at 0)
        if p.edge_input is not None:
            parts.append(f[p.edge_input])
        x_new = x + _agg(g, r * self.phi(torch.cat(parts, -1)), p.coords_agg)
        if p.vel is not None:
            v = f[p.vel]
            x_new = x_new + self.phi_v(safe_norm(v, keepdim=True)) * v
        return {p.pos_output or p.pos: x_new}


# ------------------------------------------------------------------- linear dynamics
@register_block("vector_linear")
class VectorLinear(Block):
    """Learned linear dynamics, the EGNN paper's "Linear" baseline: ``x' = x + Σ_k τ_k v_k``.

    ``pos`` is moved by a learned multiple ``τ_k`` (initialised to ``init``) of each vector
    in ``vectors``; equivariant (vectors rotate, only ``pos`` translates).

    Shapes: ``pos (N, 3)``, each vector ``(N, 3)`` → ``output (N, 3)``.
    """

    family = "geometric"
    equivariant = True
    needs_positions = True

    class Params(BlockParams):
        pos: str = "node.pos"
        vectors: list[str] = Field(default_factory=lambda: ["node.vel"], min_length=1)
        output: str | None = None
        init: float = 1.0

        _k = _keys("pos", "output")

    @classmethod
    def infer(cls, p, fields, ctx):
        fields.need_vector(p.pos, cls.name)
        for v in p.vectors:
            fields.need_vector(v, cls.name)
        return Signature({p.pos: VECTOR, **{v: VECTOR for v in p.vectors}}, {p.output or p.pos: VECTOR})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.tau = nn.Parameter(torch.full((len(p.vectors),), float(p.init)))

    def forward(self, g, f):
        p = self.p
        x = f[p.pos]
        for k, v in enumerate(p.vectors):  # loop over declared fields, not nodes
            x = x + self.tau[k] * f[v]
        return {p.output or p.pos: x}


# --------------------------------------------------------------- non-equivariant glue
@register_block("raw_coordinates")
class RawCoordinates(Block):
    """Vector fields as plain numbers: ``h = [v_1 | v_2 | ...]`` (``3k`` scalar channels).

    An explicit opt-out of rotation symmetry, for non-equivariant baselines (the EGNN
    paper's GNN reads ``[x_i, v_i]`` this way). Models using it fail ``graphdl verify``.

    Shapes: each input ``(N, 3)`` → ``output (N, 3k)``.
    """

    family = "geometric"

    class Params(BlockParams):
        inputs: list[str] = Field(min_length=1)
        output: str = "node.h"

        _k = _keys("output")
        _k_in = field_validator("inputs")(_check_keys)

    @classmethod
    def infer(cls, p, fields, ctx):
        for v in p.inputs:
            fields.need_vector(v, cls.name)
        return Signature({v: VECTOR for v in p.inputs}, {p.output: Scalar(3 * len(p.inputs))})

    def forward(self, g, f):
        return {self.p.output: torch.cat([f[v] for v in self.p.inputs], -1)}


@register_block("as_vector")
class AsVector(Block):
    """Three scalar channels declared a ``1o`` vector (optionally added to a base vector).

    Not equivariant: what the channels mean is up to the layers before. Used to give the
    non-equivariant GNN baseline a vector output. ``output = base + input`` when ``base`` is set.

    Shapes: ``input (N, 3)`` → ``output (N, 3)``.
    """

    family = "geometric"

    class Params(BlockParams):
        input: str = "node.h"
        output: str = "node.pos"
        base: str | None = None

        _k = _keys("input", "output", "base")

    @classmethod
    def infer(cls, p, fields, ctx):
        d = fields.need_scalar(p.input, cls.name)
        if d != 3:
            raise InferenceError(f"{cls.name}: `{p.input}` must have 3 channels to be read as a vector, found {d}; "
                                 f"add a `linear` with `out_dim: 3` before it")
        reads = {p.input: fields[p.input]}
        if p.base is not None:
            fields.need_vector(p.base, cls.name)
            reads[p.base] = VECTOR
        return Signature(reads, {p.output: VECTOR})

    def forward(self, g, f):
        x = f[self.p.input]
        return {self.p.output: x if self.p.base is None else f[self.p.base] + x}


# ---------------------------------------------------------------------- radial bases
def gaussian_rbf(d: Tensor, num: int, cutoff: float, start: float = 0.0) -> Tensor:
    """``exp(−γ (d − μ_k)²)``, ``μ_k`` evenly spaced on ``[start, cutoff]``, ``γ = 1/(2Δ²)``. (E,1)->(E,num)"""
    mu = torch.linspace(start, cutoff, num, dtype=d.dtype, device=d.device)
    delta = (cutoff - start) / max(num - 1, 1)
    return torch.exp(-0.5 / delta**2 * (d - mu) ** 2)


def bessel_rbf(d: Tensor, num: int, cutoff: float) -> Tensor:
    """``sqrt(2/c) sin(kπ d / c) / d`` (DimeNet, Gasteiger et al. 2020), k = 1..num. (E,1)->(E,num)

    Written as ``sqrt(2/c) (kπ/c) sinc(k d / c)`` with :func:`~graphdl.ops.geometry.smooth_sinc`:
    its limit ``sqrt(2/c) kπ/c`` at ``d = 0`` with finite first and second derivatives there
    (``sin(x)/x`` on a clamped ``d`` had a kink and lost its derivatives to cancellation).
    """
    k = torch.arange(1, num + 1, dtype=d.dtype, device=d.device)
    return math.sqrt(2.0 / cutoff) * (k * math.pi / cutoff) * smooth_sinc(k * d / cutoff)


def cosine_cutoff(d: Tensor, cutoff: float) -> Tensor:
    """``½ (cos(π d / c) + 1)`` for ``d < c``, else 0 (smooth to first order at ``c``)."""
    return torch.where(d < cutoff, 0.5 * (torch.cos(math.pi * d / cutoff) + 1.0), torch.zeros_like(d))


def polynomial_cutoff(d: Tensor, cutoff: float, p: int = 6) -> Tensor:
    """DimeNet envelope ``1 − (p+1)(p+2)/2 u^p + p(p+2) u^{p+1} − p(p+1)/2 u^{p+2}``, ``u = d/c`` (0 past c)."""
    u = d / cutoff
    env = 1 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1) - p * (p + 1) / 2 * u ** (p + 2)
    return torch.where(u < 1, env, torch.zeros_like(d))


@register_block("edge_geometry")
class EdgeGeometry(Block):
    """Edge fields from positions: ``r_ij = x_i − x_j`` (1o), ``‖r_ij‖`` (1) and a radial basis
    ``φ_k(‖r_ij‖) · u(‖r_ij‖)`` (``num_basis``; Gaussian or Bessel, times a smooth cutoff ``u``).

    Set any of ``vector``, ``distance``, ``rbf`` to null to skip it. ``‖r_ij‖`` is the smooth
    ``sqrt(‖r_ij‖² + ε²)`` (:func:`~graphdl.ops.geometry.safe_norm`, ε = 1e-8; within
    ``ε²/(2‖r‖)`` of the norm, ``ε`` at coincident points), so the outputs and their first and
    second derivatives are finite where points coincide.

    Shapes: ``pos (N, 3)`` → ``vector (E, 3)``, ``distance (E, 1)``, ``rbf (E, num_basis)``.
    """

    family = "geometric"
    equivariant = True
    needs_positions = True

    class Params(BlockParams):
        pos: str = "node.pos"
        vector: str | None = "edge.vec"
        distance: str | None = "edge.dist"
        rbf: str | None = "edge.rbf"
        basis: Literal["gaussian", "bessel"] = "gaussian"
        num_basis: PositiveInt = 16
        cutoff: PositiveFloat = 5.0
        envelope: Literal["cosine", "polynomial", "none"] = "cosine"

        _k = _keys("pos", "vector", "distance", "rbf")

    @classmethod
    def infer(cls, p, fields, ctx):
        fields.need_vector(p.pos, cls.name)
        writes = {}
        for key, t in ((p.vector, VECTOR), (p.distance, Scalar(1)), (p.rbf, Scalar(p.num_basis))):
            if key is not None:
                _space(key, "edge", f"{cls.name}: output")
                writes[key] = t
        if not writes:
            raise InferenceError(f"{cls.name}: `vector`, `distance` and `rbf` are all null; name at least one output")
        return Signature({p.pos: VECTOR}, writes)

    def forward(self, g, f):
        p = self.p
        r, d2 = _rel(g, f[p.pos])
        d = safe_sqrt(d2)
        out = {}
        if p.vector is not None:
            out[p.vector] = r
        if p.distance is not None:
            out[p.distance] = d
        if p.rbf is not None:
            out[p.rbf] = radial_basis(d, p.basis, p.num_basis, p.cutoff, p.envelope)
        return out


def radial_basis(d: Tensor, basis: str, num: int, cutoff: float, envelope: str) -> Tensor:
    """The basis of :class:`EdgeGeometry` (``(E, 1) -> (E, num)``)."""
    rbf = gaussian_rbf(d, num, cutoff) if basis == "gaussian" else bessel_rbf(d, num, cutoff)
    if envelope == "cosine":
        rbf = rbf * cosine_cutoff(d, cutoff)
    elif envelope == "polynomial":
        rbf = rbf * polynomial_cutoff(d, cutoff)
    return rbf


# ------------------------------------------------------------------------------ SchNet
class ShiftedSoftplus(nn.Module):
    """``ssp(x) = softplus(x) − log 2`` (SchNet's activation, 0 at 0)."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.softplus(x) - math.log(2.0)


@register_block("schnet")
class SchNet(Block):
    """SchNet interaction (Schütt et al. 2017): a continuous-filter convolution.

    ``W_ij = Dense(ssp(Dense(rbf(‖r_ij‖)))) · u(‖r_ij‖)``, ``m_i = Σ_j (W_in h_j) ⊙ W_ij``,
    ``h_i' = h_i + Dense(ssp(Dense(m_i)))``; rbf Gaussian (``num_rbf`` on ``[0, cutoff]``), u cosine.
    ``‖r_ij‖`` is the smooth norm of :class:`EdgeGeometry` (finite derivatives at coincident points).

    Shapes: ``input (N, d)``, ``pos (N, 3)`` → ``output (N, d)``.
    """

    family = "geometric"
    equivariant = True
    needs_positions = True

    class Params(BlockParams):
        input: str = "node.h"
        output: str | None = None
        pos: str = "node.pos"
        filters: PositiveInt = 64
        num_rbf: PositiveInt = 50
        cutoff: PositiveFloat = 5.0
        lowering: DGLLowering = "auto"

        _k = _keys("input", "output", "pos")

    @classmethod
    def infer(cls, p, fields, ctx):
        d = fields.need_scalar(p.input, cls.name)
        fields.need_vector(p.pos, cls.name)
        return Signature({p.input: fields[p.input], p.pos: VECTOR}, {p.output or p.input: Scalar(d)}, {"d": d})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        d, nf = sig.info["d"], p.filters
        self.filter = nn.Sequential(nn.Linear(p.num_rbf, nf), ShiftedSoftplus(), nn.Linear(nf, nf))
        self.lin_in = nn.Linear(d, nf, bias=False)
        self.lin_out = nn.Sequential(nn.Linear(nf, d), ShiftedSoftplus(), nn.Linear(d, d))

    def forward(self, g, f):
        if self.p.lowering == "dgl":
            return dgl_forward(self, g, f)
        p = self.p
        h = f[p.input]
        _, d2 = _rel(g, f[p.pos])
        d = safe_sqrt(d2)
        w = self.filter(gaussian_rbf(d, p.num_rbf, p.cutoff)) * cosine_cutoff(d, p.cutoff)
        m = _agg(g, self.lin_in(h).index_select(0, g.src) * w, "sum")
        return {p.output or p.input: h + self.lin_out(m)}


__all__ = ["EGNN", "AsVector", "EdgeGeometry", "RadialField", "RawCoordinates", "SchNet", "VectorLinear",
           "bessel_rbf", "cosine_cutoff", "gaussian_rbf", "polynomial_cutoff", "radial_basis"]
