"""E(3)-equivariant blocks on e3nn irreps: tensor field networks and the SE(3)-transformer.

Fields of irreps type are ``(n, irreps.dim)`` tensors in e3nn's layout (terms in order,
inside a term ``mul`` copies of ``2l+1`` components). A scalar field ``Scalar(d)`` is read
as ``d×0e``. Positions are a ``1o`` field (``node.pos`` by default).

Blocks:

* ``tfn``: a tensor field network layer (Thomas et al. 2018);
* ``se3_transformer``: an SE(3)-transformer layer (Fuchs et al. 2020);
* ``irreps_concat``: concatenate scalar and irreps fields into one irreps field;
* ``irreps_select``: keep some irreps of a field (``0e`` → an invariant ``Scalar`` field);
* ``vector_out``: one ``1o`` vector from an irreps field (optionally added to a position).

Backend seam: ``backend: auto | e3nn | cuequivariance`` (:mod:`graphdl.nn.cueq`). The tensor
products ``h_j ⊗ Y(r̂_ij)`` and the linear maps (self-interaction, queries) run on e3nn or on
NVIDIA cuEquivariance; the spherical harmonics, radial MLP, gate and aggregation are shared.
``auto`` takes cuEquivariance where its CUDA kernels can run (package, ops, GPU), else e3nn;
``cuequivariance`` on a machine without its kernels runs its pure-torch fallback. Both give
the same outputs for the same parameters, and their checkpoints load into each other;
``describe`` prints the backend of every block and why (``backend: e3nn (auto: no CUDA)``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt, field_validator
from torch import Tensor, nn

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, BlockParams, Signature, register_block
from graphdl.nn.basic import _check_key, _check_keys
from graphdl.nn.cueq import BACKENDS, BackendChoice, CueqLinear, CueqTensorProduct, choose_backend
from graphdl.nn.mlp import MLP, ActName
from graphdl.ops.geometry import safe_norm, safe_unit, smooth_sinc
from graphdl.ops.segment import segment_softmax, segment_sum
from graphdl.types import VECTOR, FieldTable, FieldType, Irreps, Scalar, split_key


# ----------------------------------------------------------------------------- helpers
def as_irreps(t: FieldType, key: str, block: str) -> Irreps:
    """The irreps of a field: ``Scalar(d)`` is ``d×0e``; frames are refused."""
    if isinstance(t, Scalar):
        return Irreps(((t.size, 0, 1),))
    if isinstance(t, Irreps):
        return t
    raise InferenceError(f"{block} reads `{key}` as e3nn irreps, but it is of type {t}; "
                         f"feed it a scalar or irreps field")


def _merge(terms) -> Irreps:
    """Merge consecutive equal irreps (``2x0e + 3x0e`` → ``5x0e``): the layout is unchanged."""
    out: list[list[int]] = []
    for mul, l, p in terms:
        if mul == 0:
            continue
        if out and out[-1][1:] == [l, p]:
            out[-1][0] += mul
        else:
            out.append([mul, l, p])
    return Irreps(tuple(tuple(t) for t in out))


def _irreps_validator(v):
    if v is None:
        return v
    try:
        ir = Irreps.parse(v)
    except ValueError as e:
        raise ValueError(str(e)) from None
    if ir.dim == 0:
        raise ValueError(f"`{v}` has no channels; give at least one irrep, e.g. `8x0e`")
    return str(ir)


def resolve_backend(requested: str, block: str) -> str:
    """The tensor-product backend a block will run on: ``e3nn`` or ``cuequivariance``."""
    return choose_backend(requested, block).name


def _reachable(irreps_in: Irreps, lmax: int) -> set[tuple[int, int]]:
    """Irreps (l, p) a tensor product of ``irreps_in`` with Y^0..Y^lmax can produce."""
    out = set()
    for _, l1, p1 in irreps_in.terms:
        for l2 in range(lmax + 1):
            p = p1 * (-1) ** l2
            for l in range(abs(l1 - l2), l1 + l2 + 1):
                out.add((l, p))
    return out


def _ir_str(l: int, p: int) -> str:
    return f"{l}{'e' if p == 1 else 'o'}"


def _check_reachable(target: Irreps, irreps_in: Irreps, lmax: int, block: str, what: str) -> None:
    can = _reachable(irreps_in, lmax)
    for _, l, p in target.terms:
        if (l, p) not in can:
            have = ", ".join(_ir_str(*x) for x in sorted(can))
            raise InferenceError(
                f"{block}: {what} term {_ir_str(l, p)} cannot be made from the input irreps {irreps_in} "
                f"and spherical harmonics up to lmax={lmax} (reachable: {have}); raise `lmax` or drop the term")


def _gate_plan(irreps_out: Irreps, gate: bool) -> tuple[Irreps, nn.Module | None, list[int] | None]:
    """Irreps the linear part must produce, the e3nn ``Gate`` (or None) and the output order.

    The gate applies silu to ``0e`` (tanh to ``0o``) scalars and multiplies every ``l > 0``
    channel by the sigmoid of its own extra ``0e`` gate scalar. Its output lists scalars
    first; ``perm`` (or None when already so) restores the order written in ``irreps_out``.
    """
    if not gate or all(l == 0 for _, l, _ in irreps_out.terms):
        if gate:
            from e3nn import nn as enn
            from e3nn import o3

            acts = [torch.nn.functional.silu if p == 1 else torch.tanh for _, _, p in irreps_out.terms]
            return irreps_out, enn.Activation(o3.Irreps(str(irreps_out)), acts), None
        return irreps_out, None, None
    from e3nn import nn as enn
    from e3nn import o3

    scalars = [t for t in irreps_out.terms if t[1] == 0]
    gated = [t for t in irreps_out.terms if t[1] > 0]
    n_gates = sum(mul for mul, _, _ in gated)
    ir_s = o3.Irreps(str(Irreps(tuple(scalars)))) if scalars else o3.Irreps("")
    ir_g = o3.Irreps(str(Irreps(tuple(gated))))
    acts_s = [torch.nn.functional.silu if p == 1 else torch.tanh for _, _, p in scalars]
    module = enn.Gate(ir_s, acts_s, o3.Irreps(f"{n_gates}x0e"), [torch.sigmoid], ir_g)
    # e3nn sorts the gate's input (scalars, gates and gated by irrep): take its order as is.
    pre = Irreps.parse(str(module.irreps_in))
    # Offsets of each term in the gate's output (scalars then gated), then in user order.
    order = [i for i, t in enumerate(irreps_out.terms) if t[1] == 0] + \
            [i for i, t in enumerate(irreps_out.terms) if t[1] > 0]
    start = {}
    off = 0
    for i in order:
        mul, l, _ = irreps_out.terms[i]
        start[i] = off
        off += mul * (2 * l + 1)
    perm: list[int] = []
    for i, (mul, l, _) in enumerate(irreps_out.terms):
        perm += list(range(start[i], start[i] + mul * (2 * l + 1)))
    return pre, module, (None if perm == list(range(len(perm))) else perm)


class RadialBasis(nn.Module):
    """``num`` radial functions of a distance ``r`` on ``[0, r_max]``.

    ``gaussian``: ``exp(−((r − μ_k)/σ)²)`` with centres ``μ_k`` evenly spaced, ``σ`` their gap;
    ``bessel``: ``sqrt(2/c) sin(kπ r / c) / r`` (DimeNet), with finite value and first and
    second derivatives at ``r = 0`` (:func:`~graphdl.ops.geometry.smooth_sinc`).

    Shapes: ``(E,) -> (E, num)``.
    """

    def __init__(self, kind: str, num: int, r_max: float):
        super().__init__()
        self.kind, self.num, self.r_max = kind, num, float(r_max)
        self.register_buffer("centres", torch.linspace(0.0, r_max, num), persistent=False)
        self.register_buffer("k", torch.arange(1, num + 1, dtype=torch.get_default_dtype()), persistent=False)

    def forward(self, r: Tensor) -> Tensor:
        r = r.unsqueeze(-1)
        if self.kind == "gaussian":
            sigma = self.r_max / max(self.num - 1, 1)
            return torch.exp(-((r - self.centres.to(r.dtype)) / sigma) ** 2)
        c = self.r_max
        k = self.k.to(r.dtype)
        # sin(kπr/c)/r = (kπ/c) sinc(k r / c), sinc(x) = sin(πx)/(πx): no 0/0 at r = 0; smooth_sinc,
        # not torch.sinc, whose double backward is NaN at 0
        return math.sqrt(2.0 / c) * (k * math.pi / c) * smooth_sinc(k * r / c)


class EdgeGeometry(nn.Module):
    """Per edge ``j → i``: ``r_ij = x_i − x_j``, ``Y(r̂_ij)`` (l ≤ lmax) and a radial basis of ‖r_ij‖.

    Smooth where points coincide: ``‖r‖`` is ``sqrt(‖r‖² + ε²)`` and ``r̂ = r / sqrt(‖r‖² + ε²)``
    (:mod:`graphdl.ops.geometry`, ε = 1e-8), fed to e3nn's harmonics with ``normalize=False``.
    Those are homogeneous polynomials, so ``Y^l(r̂) = (‖r‖/‖r‖_ε)^l Y^l(r/‖r‖)``: e3nn's
    normalised values to relative ``l ε²/(2‖r‖²)`` away from zero, and ``Y^{l≥1} → 0``
    smoothly at ``r = 0`` (``Y^0 = 1``), where ``normalize=True`` has a NaN second derivative.

    Shapes: positions ``(N, 3)`` → Y ``(E, (lmax+1)²)``, basis ``(E, num_basis)``.
    """

    def __init__(self, lmax: int, basis: str, num_basis: int, r_max: float):
        super().__init__()
        from e3nn import o3

        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        # One module built here, not e3nn's functional form, which builds one per call from the
        # irreps: under torch.compile Dynamo then guards on the length of an e3nn ``Irrep``,
        # whose ``__len__`` raises NotImplementedError.
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=False, normalization="component")
        self.basis = RadialBasis(basis, num_basis, r_max)

    def forward(self, g, pos: Tensor) -> tuple[Tensor, Tensor]:
        rel = pos.index_select(0, g.dst) - pos.index_select(0, g.src)
        return self.sh(safe_unit(rel)), self.basis(safe_norm(rel))


# ----------------------------------------------------------------------------- params
class _E3Params(BlockParams):
    """Parameters shared by ``tfn`` and ``se3_transformer``."""

    input: str = "node.h"
    output: str | None = None
    positions: str = "node.pos"
    irreps_out: str
    lmax: int = Field(2, ge=0, le=8)
    basis: Literal["gaussian", "bessel"] = "gaussian"
    num_basis: PositiveInt = 8
    r_max: PositiveFloat = 5.0
    radial_hidden: list[PositiveInt] = Field(default_factory=lambda: [32])
    radial_act: ActName = "silu"
    edge_input: str | None = None
    self_interaction: bool = True
    gate: bool = True
    backend: Literal["auto", "e3nn", "cuequivariance"] = "auto"

    _v_keys = field_validator("input", "positions")(_check_key)
    _v_irreps = field_validator("irreps_out")(_irreps_validator)

    @field_validator("output", "edge_input")
    @classmethod
    def _v_opt(cls, v):
        return None if v is None else _check_key(v)

    @property
    def out_key(self) -> str:
        return self.output or self.input


def _infer_common(cls, p: _E3Params, fields: FieldTable) -> tuple[dict, dict]:
    name = cls.name
    for key, want in ((p.input, "node"), (p.positions, "node")):
        if split_key(key)[0] != want:
            raise InferenceError(f"{name} reads `{key}`, which must be a node field")
    if split_key(p.out_key)[0] != "node":
        raise InferenceError(f"{name} writes `{p.out_key}`, which must be a node field")
    t_in = fields.need(p.input, name)
    irreps_in = as_irreps(t_in, p.input, name)
    t_pos = fields.need(p.positions, name)
    if t_pos != VECTOR:
        raise InferenceError(f"{name} needs positions `{p.positions}` of type 1o (one 3-vector per node), "
                             f"found {t_pos}; set `positions:` to a 1o node field")
    reads = {p.input: t_in, p.positions: t_pos}
    edge_dim = 0
    if p.edge_input is not None:
        if split_key(p.edge_input)[0] != "edge":
            raise InferenceError(f"{name}: `edge_input: {p.edge_input}` must be an edge field")
        edge_dim = fields.need_scalar(p.edge_input, name)
        reads[p.edge_input] = fields[p.edge_input]
    irreps_out = Irreps.parse(p.irreps_out)
    backend = choose_backend(p.backend, name)
    return reads, {"irreps_in": irreps_in, "irreps_out": irreps_out, "edge_dim": edge_dim, "backend": backend}


class _E3Block(Block):
    """Shared construction: edge geometry, radial MLP, gate, self-interaction, backend."""

    family = "equivariant"
    equivariant = True
    needs_positions = True

    def _setup(self, p: _E3Params, info) -> Irreps:
        self.backend_choice: BackendChoice = info["backend"]
        self.backend: str = self.backend_choice.name
        self.irreps_in = info["irreps_in"]
        self.irreps_out = info["irreps_out"]
        pre, self.gate, perm = _gate_plan(self.irreps_out, p.gate)
        self.irreps_pre = pre
        self.register_buffer("perm", None if perm is None else torch.tensor(perm), persistent=False)
        self.geometry = EdgeGeometry(p.lmax, p.basis, p.num_basis, p.r_max)
        self.radial_in = p.num_basis + info["edge_dim"]
        self.self_int = self._linear(self.irreps_in, pre) if p.self_interaction else None
        self.register_load_state_dict_pre_hook(_portable_tp_state)
        return pre

    def _linear(self, irreps_in: Irreps, irreps_out: Irreps) -> nn.Module:
        """``o3.Linear`` or its cuEquivariance twin (same parameters and state keys)."""
        if self.backend == "cuequivariance":
            return CueqLinear(irreps_in, irreps_out, self.backend_choice.kernels)
        from e3nn import o3

        return o3.Linear(irreps_in.e3nn(), irreps_out.e3nn())

    def _tensor_product(self, irreps_in: Irreps, irreps_out: Irreps) -> nn.Module:
        """``h ⊗_w Y`` with per-edge weights ``w``: e3nn's fully connected tensor product or cuEquivariance's."""
        sh = Irreps.parse(str(self.geometry.irreps_sh))
        if self.backend == "cuequivariance":
            return CueqTensorProduct(irreps_in, sh, irreps_out, self.backend_choice.kernels)
        from e3nn import o3

        return o3.FullyConnectedTensorProduct(irreps_in.e3nn(), sh.e3nn(), irreps_out.e3nn(),
                                              shared_weights=False, internal_weights=False)

    def _edge_inputs(self, g, f) -> tuple[Tensor, Tensor, Tensor]:
        p = self.p
        y, emb = self.geometry(g, f[p.positions])
        if p.edge_input is not None:
            emb = torch.cat([emb, f[p.edge_input].to(emb.dtype)], -1)
        h = f[p.input]
        return h, y, emb

    def _finish(self, h: Tensor, agg: Tensor) -> Tensor:
        out = agg if self.self_int is None else agg + self.self_int(h)
        if self.gate is not None:
            out = self.gate(out)
        if self.perm is not None:
            out = out.index_select(-1, self.perm)
        return out

    def describe_extra(self) -> str:
        return self.backend_choice.describe()


_TP_NAMES = ("tp", "tp_k", "tp_v")


def _portable_tp_state(module, state_dict, prefix, *_):
    """Load a checkpoint of the other backend: the tensor products hold no learned state.

    e3nn's tensor products save Clebsch-Gordan constants, cuEquivariance's save nothing; drop
    the other backend's constants and keep this module's own (they depend on irreps alone).
    """
    for name in _TP_NAMES:
        sub = getattr(module, name, None)
        if sub is None:
            continue
        key = f"{prefix}{name}."
        own = sub.state_dict(prefix=key)
        for k in [k for k in state_dict if k.startswith(key) and k not in own]:
            del state_dict[k]
        for k, v in own.items():
            state_dict.setdefault(k, v)


# ----------------------------------------------------------------------------- TFN
@register_block("tfn")
class TFN(_E3Block):
    """Tensor field network layer (Thomas et al. 2018, https://arxiv.org/abs/1802.08219).

    ``h_i' = σ( W_self h_i + (1/n̄) Σ_{j→i} h_j ⊗_{w(‖r_ij‖, e_ij)} Y(r̂_ij) )`` with ``r_ij = x_i − x_j``,
    ``Y`` the spherical harmonics up to ``lmax``, ``⊗_w`` a fully connected tensor product
    (e3nn's, or NVIDIA cuEquivariance's with the same weights: ``backend``) whose path
    weights come per edge from an MLP of a radial basis of ``‖r_ij‖``
    (and of the invariant ``edge_input`` if given), ``n̄ = avg_num_neighbors``, and ``σ`` the
    gated nonlinearity (``gate: true``: silu on scalars, sigmoid gates on ``l > 0``).
    Departures from the paper: one fully connected tensor product per layer (all paths
    ``l_in ⊗ l_f → l_out``) instead of per-filter-order kernels; e3nn's gate instead of the
    norm nonlinearity.

    Params: ``irreps_out`` (required), ``lmax`` 2, ``basis`` gaussian|bessel, ``num_basis``
    8, ``r_max`` 5.0, ``radial_hidden`` [32], ``avg_num_neighbors`` 1.0, ``edge_input``,
    ``self_interaction`` true, ``gate`` true, ``positions`` node.pos, ``backend`` auto.

    Shapes: ``node.h`` ``(N, dim irreps_in)``, positions ``(N, 3)``, edge_input ``(E, d_e)``
    → ``(N, dim irreps_out)``.
    """

    class Params(_E3Params):
        avg_num_neighbors: PositiveFloat = 1.0

    @classmethod
    def infer(cls, p, fields, ctx):
        reads, info = _infer_common(cls, p, fields)
        pre, _, _ = _gate_plan_types(info["irreps_out"], p.gate)
        _check_reachable(pre, info["irreps_in"], p.lmax, cls.name, "irreps_out")
        return Signature(reads, {p.out_key: info["irreps_out"]}, info)

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        pre = self._setup(p, sig.info)
        self.tp = self._tensor_product(self.irreps_in, pre)
        self.radial = MLP([self.radial_in, *p.radial_hidden, self.tp.weight_numel], p.radial_act)
        self.inv_avg = 1.0 / p.avg_num_neighbors

    def forward(self, g, f):
        h, y, emb = self._edge_inputs(g, f)
        m = self.tp(h.index_select(0, g.src), y, self.radial(emb))
        agg = segment_sum(m, g.dst, g.num_nodes, g.csr().rowptr) * self.inv_avg
        return {self.p.out_key: self._finish(h, agg)}


def _gate_plan_types(irreps_out: Irreps, gate: bool):
    """:func:`_gate_plan` without building modules (for ``infer``)."""
    if not gate or all(l == 0 for _, l, _ in irreps_out.terms):
        return irreps_out, None, None
    scalars = tuple(t for t in irreps_out.terms if t[1] == 0)
    gated = tuple(t for t in irreps_out.terms if t[1] > 0)
    # the same irreps as the gate's input, up to order (enough for the reachability check)
    return Irreps(scalars + ((sum(m for m, _, _ in gated), 0, 1),) + gated), None, None


def _head_of_channels(irreps: Irreps, heads: int, exact: bool) -> list[int]:
    """Head of every component: channel ``c`` of a term of multiplicity ``m`` goes to ``⌊c H / m⌋``."""
    out: list[int] = []
    for mul, l, _ in irreps.terms:
        if exact and mul % heads:
            raise ValueError(mul)
        for c in range(mul):
            out += [c * heads // mul] * (2 * l + 1)
    return out


# ----------------------------------------------------------------------------- SE(3)-transformer
@register_block("se3_transformer")
class SE3Transformer(_E3Block):
    """SE(3)-transformer layer (Fuchs et al. 2020, https://arxiv.org/abs/2006.10503).

    ``h_i' = σ( W_self h_i + Σ_{j→i} α_ij v_ij )``, ``α_ij = softmax_j(⟨q_i, k_ij⟩_head / √d_head)``,
    with ``q_i = W_Q h_i`` (e3nn Linear), ``k_ij = h_j ⊗_{w_K(‖r_ij‖)} Y(r̂_ij)`` and
    ``v_ij = h_j ⊗_{w_V(‖r_ij‖)} Y(r̂_ij)`` (TFN kernels, one radial MLP gives both weight
    sets). The logit of a head sums ``q·k`` over its channels of every irrep of
    ``irreps_key``: inner products of like irreps, hence invariant to rotations and
    reflections. Value channels of every term are split evenly across the heads.

    Params: those of ``tfn`` (without ``avg_num_neighbors``: the softmax normalises), plus
    ``heads`` 4 and ``irreps_key`` (default ``irreps_out``; every multiplicity divisible by
    ``heads``).

    Shapes: ``node.h`` ``(N, dim irreps_in)``, positions ``(N, 3)`` → ``(N, dim irreps_out)``;
    attention ``(E, heads)``.
    """

    class Params(_E3Params):
        heads: PositiveInt = 4
        irreps_key: str | None = None

        _v_key = field_validator("irreps_key")(_irreps_validator)

    @classmethod
    def infer(cls, p, fields, ctx):
        reads, info = _infer_common(cls, p, fields)
        pre, _, _ = _gate_plan_types(info["irreps_out"], p.gate)
        key = Irreps.parse(p.irreps_key) if p.irreps_key is not None else info["irreps_out"]
        bad = [f"{m}x{_ir_str(l, q)}" for m, l, q in key.terms if m % p.heads]
        if bad:
            raise InferenceError(f"se3_transformer: every multiplicity of irreps_key ({key}) must be divisible "
                                 f"by heads={p.heads}, but {', '.join(bad)} is not; change `irreps_key` or `heads`")
        _check_reachable(pre, info["irreps_in"], p.lmax, cls.name, "irreps_out")
        _check_reachable(key, info["irreps_in"], p.lmax, cls.name, "irreps_key")
        return Signature(reads, {p.out_key: info["irreps_out"]}, {**info, "irreps_key": key})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        pre = self._setup(p, sig.info)
        key: Irreps = sig.info["irreps_key"]
        self.tp_k = self._tensor_product(self.irreps_in, key)
        self.tp_v = self._tensor_product(self.irreps_in, pre)
        self.q = self._linear(self.irreps_in, key)
        self.n_k = self.tp_k.weight_numel
        self.radial = MLP([self.radial_in, *p.radial_hidden, self.n_k + self.tp_v.weight_numel], p.radial_act)
        heads = p.heads
        kh = torch.tensor(_head_of_channels(key, heads, True))
        self.register_buffer("key_heads", nn.functional.one_hot(kh, heads).to(torch.get_default_dtype()),
                             persistent=False)
        self.register_buffer("value_heads", torch.tensor(_head_of_channels(pre, heads, False)), persistent=False)
        self.scale = 1.0 / math.sqrt(key.dim / heads)

    def forward(self, g, f):
        h, y, emb = self._edge_inputs(g, f)
        w = self.radial(emb)
        h_src = h.index_select(0, g.src)
        k = self.tp_k(h_src, y, w[:, : self.n_k])
        v = self.tp_v(h_src, y, w[:, self.n_k:])
        q = self.q(h).index_select(0, g.dst)
        logits = ((q * k) @ self.key_heads.to(k.dtype)) * self.scale
        ptr = g.csr().rowptr
        alpha = segment_softmax(logits, g.dst, g.num_nodes, ptr)
        agg = segment_sum(v * alpha.index_select(1, self.value_heads), g.dst, g.num_nodes, ptr)
        return {self.p.out_key: self._finish(h, agg)}


# ----------------------------------------------------------------------------- field plumbing
@register_block("irreps_concat")
class IrrepsConcat(Block):
    """Concatenate scalar and irreps fields of one space into one irreps field (e3nn layout).

    ``output = [a | b | ...]``; a ``Scalar(d)`` input counts as ``d×0e``; consecutive equal
    irreps merge (``1x0e + 1x0e + 1x1o`` → ``2x0e + 1x1o``). Equivariant: no channel mixes.

    Shapes: ``(n, dim a), (n, dim b), ... -> (n, dim a + dim b + ...)``.
    """

    family = "equivariant"
    equivariant = True

    class Params(BlockParams):
        inputs: list[str] = Field(min_length=1)
        output: str

        _v = field_validator("output")(_check_key)
        _v_in = field_validator("inputs")(_check_keys)

        @field_validator("inputs")
        @classmethod
        def _v_inputs(cls, v):
            return [_check_key(k) for k in v]

    @classmethod
    def infer(cls, p, fields, ctx):
        space = split_key(p.output)[0]
        terms: list = []
        for k in p.inputs:
            if split_key(k)[0] != space:
                raise InferenceError(f"irreps_concat writes the {space} field `{p.output}` but `{k}` is not a "
                                     f"{space} field")
            terms += as_irreps(fields.need(k, cls.name), k, cls.name).terms
        return Signature({k: fields[k] for k in p.inputs}, {p.output: _merge(terms)})

    def forward(self, g, f):
        return {self.p.output: torch.cat([f[k] for k in self.p.inputs], -1)}


@register_block("irreps_select")
class IrrepsSelect(Block):
    """Keep the terms of an irreps field whose irrep is listed in ``select`` (default ``0e``).

    ``select: 0e`` writes the invariant part as a ``Scalar`` field (for energies, readouts,
    scalar heads); ``select: 1o`` keeps the vectors. Multiplicities in ``select`` are ignored.

    Shapes: ``(n, dim in) -> (n, dim kept)``.
    """

    family = "equivariant"
    equivariant = True

    class Params(BlockParams):
        input: str = "node.h"
        output: str | None = None
        select: str = "0e"

        _v_in = field_validator("input")(_check_key)
        _v_sel = field_validator("select")(_irreps_validator)

        @field_validator("output")
        @classmethod
        def _v_out(cls, v):
            return None if v is None else _check_key(v)

    @classmethod
    def infer(cls, p, fields, ctx):
        t = fields.need(p.input, cls.name)
        ir = as_irreps(t, p.input, cls.name)
        if split_key(p.output or p.input)[0] != split_key(p.input)[0]:
            raise InferenceError(f"irreps_select writes `{p.output}` in another space than `{p.input}`; "
                                 f"keep the space (use a readout to pool)")
        kinds = {(l, q) for _, l, q in Irreps.parse(p.select).terms}
        idx: list[int] = []
        kept = []
        off = 0
        for mul, l, q in ir.terms:
            n = mul * (2 * l + 1)
            if (l, q) in kinds:
                idx += range(off, off + n)
                kept.append((mul, l, q))
            off += n
        if not kept:
            raise InferenceError(f"irreps_select: `{p.input}` ({ir}) has no {p.select} terms; "
                                 f"select one of its irreps")
        out = _merge(kept)
        out_t: FieldType = Scalar(out.dim) if out.invariant else out
        return Signature({p.input: t}, {p.output or p.input: out_t}, {"index": idx})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self.register_buffer("index", torch.tensor(sig.info["index"]), persistent=False)

    def forward(self, g, f):
        return {self.p.output or self.p.input: f[self.p.input].index_select(-1, self.index)}


@register_block("vector_out")
class VectorOut(Block):
    """One ``1o`` vector per row from the ``1o`` channels of an irreps field, optionally added to ``add``.

    ``v = Σ_c w_c h^{1o}_c`` (an e3nn Linear to ``1x1o``; with a single ``1o`` channel and
    ``learned: false`` the channel itself); ``output = add + v`` when ``add`` is set, e.g.
    N-body: ``node.pos_pred = node.pos + Δx``.

    Shapes: ``(n, dim in) [, (n, 3)] -> (n, 3)``.
    """

    family = "equivariant"
    equivariant = True

    class Params(BlockParams):
        input: str = "node.h"
        output: str = "node.pos_pred"
        add: str | None = None
        learned: bool = True

        _v = field_validator("input", "output")(_check_key)

        @field_validator("add")
        @classmethod
        def _v_add(cls, v):
            return None if v is None else _check_key(v)

    @classmethod
    def infer(cls, p, fields, ctx):
        t = fields.need(p.input, cls.name)
        ir = as_irreps(t, p.input, cls.name)
        n_vec = sum(m for m, l, q in ir.terms if (l, q) == (1, -1))
        if n_vec == 0:
            raise InferenceError(f"vector_out: `{p.input}` ({ir}) has no 1o channel to make a vector from; "
                                 f"give the previous layer a 1o term in `irreps_out`")
        reads = {p.input: t}
        for k in [p.add] if p.add else []:
            if split_key(k)[0] != split_key(p.output)[0]:
                raise InferenceError(f"vector_out: `add: {k}` and `output: {p.output}` must be in one space")
            reads[k] = fields.need(k, cls.name)
            if reads[k] != VECTOR:
                raise InferenceError(f"vector_out: `add: {k}` must be a 1o vector field, found {reads[k]}")
        if not p.learned and n_vec != 1:
            raise InferenceError(f"vector_out: `learned: false` needs exactly one 1o channel in `{p.input}`, "
                                 f"found {n_vec}; set `learned: true` to mix them")
        idx = None
        if not p.learned:
            off = 0
            for m, l, q in ir.terms:
                if (l, q) == (1, -1):
                    idx = list(range(off, off + 3))
                off += m * (2 * l + 1)
        return Signature(reads, {p.output: VECTOR}, {"irreps_in": ir, "index": idx})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        if p.learned:
            from e3nn import o3

            self.lin = o3.Linear(sig.info["irreps_in"].e3nn(), o3.Irreps("1x1o"))
            self.register_buffer("index", None, persistent=False)
        else:
            self.lin = None
            self.register_buffer("index", torch.tensor(sig.info["index"]), persistent=False)

    def forward(self, g, f):
        h = f[self.p.input]
        v = self.lin(h) if self.lin is not None else h.index_select(-1, self.index)
        if self.p.add is not None:
            v = f[self.p.add] + v
        return {self.p.output: v}


__all__ = [
    "BACKENDS",
    "TFN",
    "BackendChoice",
    "EdgeGeometry",
    "IrrepsConcat",
    "IrrepsSelect",
    "RadialBasis",
    "SE3Transformer",
    "VectorOut",
    "as_irreps",
    "resolve_backend",
]
