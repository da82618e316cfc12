"""Input features of learned particle simulators (GNS, Sanchez-Gonzalez et al. 2020,
"Learning to Simulate Complex Physics with Graph Networks", https://arxiv.org/abs/2002.09405).

The encoder of GNS reads, per particle, its last ``C`` velocities (finite differences of its
last ``C + 1`` positions, standardised), its distances to the walls of the domain, and an
embedding of its type; per edge, the displacement between the two particles and its length.
These blocks compute them, so a spec states the whole model; the learned parts are the
ordinary ``mlp``, ``embedding`` and ``graph_network`` blocks (see ``specs/gns/``).

* ``history_velocities``: ``trajectory(C+1, D)`` → ``C·D`` standardised velocities;
* ``wall_distances``: positions → ``2·D`` distances to the lower and upper walls, ``/R``,
  clipped to ``[−1, 1]``;
* ``edge_displacement``: positions → ``(x_src − x_dst)/R`` and its norm per edge;
* ``standardize``: ``(x − mean) / std`` with statistics of the training data (GNS's global
  ``step_context``).

The coordinates are plain channels in the box's frame (the walls fix the axes), so none of
these blocks is rotation-equivariant, as in the reference; they accept positions typed as
``D`` channels, as ``1o`` (3D) or as the last frame of a ``trajectory``.
"""

from __future__ import annotations

import torch
from pydantic import PositiveFloat, field_validator, model_validator
from torch import Tensor

from graphdl.errors import InferenceError
from graphdl.nn.base import Block, BlockParams, Signature, register_block
from graphdl.nn.basic import FieldParams, _check_key
from graphdl.ops.geometry import safe_sqrt
from graphdl.types import FieldType, Irreps, Scalar, Trajectory, split_key


def _position_dim(key: str, t: FieldType, block: str) -> int:
    """Spatial dimension of a position field: ``D`` channels, ``1o`` (3) or a trajectory's ``dim``."""
    if isinstance(t, Scalar):
        return t.size
    if isinstance(t, Irreps) and t.is_vector:
        return 3
    if isinstance(t, Trajectory):
        return t.size
    raise InferenceError(f"{block} reads positions from `{key}`, which is {t}; give D coordinate channels "
                         f"(`{key}: 2`), a `1o` vector or a `trajectory(frames, D)`")


def _positions(x: Tensor, t: FieldType) -> Tensor:
    """``(N, D)`` positions of a field of type ``t`` (the newest frame of a trajectory)."""
    return x[:, -1] if isinstance(t, Trajectory) else x


class _StatsMixin:
    """Buffers ``<name>_mean`` / ``<name>_std`` of one data statistic (see :mod:`graphdl.nn.base`)."""

    def _init_stats(self, name: str, width: int) -> None:
        self._stat_name, self._stat_width = name, width
        self.register_buffer("stat_mean", torch.zeros(width))
        self.register_buffer("stat_std", torch.ones(width))

    def statistics_needed(self) -> dict[str, int]:
        return {self._stat_name: self._stat_width} if self._stat_name else {}

    def set_statistics(self, name: str, mean: Tensor, std: Tensor) -> None:
        with torch.no_grad():
            self.stat_mean.copy_(mean.reshape(-1).to(self.stat_mean))
            self.stat_std.copy_(std.reshape(-1).to(self.stat_std))


@register_block("history_velocities")
class HistoryVelocities(_StatsMixin, Block):
    """Velocities of a position history: ``v_k = x_{k+1} − x_k`` for ``k = 1..C`` (dt = 1 frame),
    standardised per axis, ``(v − μ_v) / σ_v``, and flattened oldest first.

    ``μ_v, σ_v`` are the data statistic ``statistic`` (default ``velocity``, ``D`` channels),
    set by the task from its training split (GNS adds the training noise's variance to
    ``σ_v²``); ``normalize: false`` leaves the velocities raw.

    Shapes: ``input`` ``(N, C+1, D)`` → ``output`` ``(N, C·D)``, ordered
    ``[v_1 (D) | v_2 (D) | ... | v_C (D)]`` as the reference's merged axes.
    """

    family = "particles"

    class Params(BlockParams):
        input: str = "node.history"
        output: str = "node.velocities"
        normalize: bool = True
        statistic: str = "velocity"

        _v = field_validator("input", "output")(_check_key)

    @classmethod
    def infer(cls, p, fields, ctx):
        t = fields.need(p.input, cls.name)
        if not isinstance(t, Trajectory):
            raise InferenceError(f"history_velocities differences consecutive positions, so `{p.input}` must be a "
                                 f"`trajectory(frames, D)` field, found {t}")
        if t.frames < 2:
            raise InferenceError(f"history_velocities needs at least 2 frames in `{p.input}` to form a velocity, "
                                 f"found {t}")
        if split_key(p.input)[0] != split_key(p.output)[0]:
            raise InferenceError(f"history_velocities writes `{p.output}` in another space than `{p.input}`")
        return Signature({p.input: t}, {p.output: Scalar((t.frames - 1) * t.size)}, {"dim": t.size})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self._init_stats(p.statistic if p.normalize else "", sig.info["dim"])

    def forward(self, g, f):
        x = f[self.p.input]
        v = x[:, 1:] - x[:, :-1]  # (N, C, D)
        if self.p.normalize:
            v = (v - self.stat_mean) / self.stat_std
        return {self.p.output: v.reshape(v.size(0), -1)}


class _Bounds(BlockParams):
    bounds: list[tuple[float, float]]
    radius: PositiveFloat

    @model_validator(mode="after")
    def _lo_hi(self):
        if not self.bounds:
            raise ValueError("`bounds` needs one [lower, upper] pair per axis, e.g. [[0.1, 0.9], [0.1, 0.9]]")
        for a, (lo, hi) in enumerate(self.bounds):
            if not lo < hi:
                raise ValueError(f"`bounds[{a}]` = [{lo}, {hi}] needs lower < upper")
        return self


@register_block("wall_distances")
class WallDistances(Block):
    """Distances to the walls of an axis-aligned box, in units of the connectivity radius:
    ``clip([x − lo | hi − x] / R, −clip, clip)`` (GNS's boundary features).

    ``bounds`` are the walls ``[[lo, hi], ...]`` per axis (the dataset's ``bounds``: where
    particles can be, not the edge of a simulation grid); ``radius`` is ``R``. A particle
    farther than ``clip·R`` from a wall sees the constant ``clip`` (1 by default): only nearby
    walls matter, as only nearby particles do.

    Shapes: ``input`` ``(N, D)`` (or a trajectory's newest frame) → ``output`` ``(N, 2D)``
    ordered ``[lower walls (D) | upper walls (D)]``.
    """

    family = "particles"

    class Params(_Bounds):
        input: str = "node.pos"
        output: str = "node.walls"
        clip: PositiveFloat | None = 1.0

        _v = field_validator("input", "output")(_check_key)

    @classmethod
    def infer(cls, p, fields, ctx):
        t = fields.need(p.input, cls.name)
        d = _position_dim(p.input, t, cls.name)
        if len(p.bounds) != d:
            raise InferenceError(f"wall_distances has {len(p.bounds)} [lower, upper] pair(s) in `bounds` but "
                                 f"`{p.input}` is {d}-dimensional; give one pair per axis")
        return Signature({p.input: t}, {p.output: Scalar(2 * d)}, {"type": t})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        b = torch.tensor(p.bounds, dtype=torch.float64)
        self.register_buffer("lower", b[:, 0].clone(), persistent=False)
        self.register_buffer("upper", b[:, 1].clone(), persistent=False)

    def forward(self, g, f):
        x = _positions(f[self.p.input], self.sig.info["type"])
        lo, hi = self.lower.to(x.dtype), self.upper.to(x.dtype)
        d = torch.cat([x - lo, hi - x], -1) / self.p.radius
        if self.p.clip is not None:
            d = d.clamp(-self.p.clip, self.p.clip)
        return {self.p.output: d}


@register_block("edge_displacement")
class EdgeDisplacement(Block):
    """Per edge ``j → i``: ``(x_j − x_i) / scale`` (sender minus receiver, as GNS) and, with
    ``distance: true``, its length ``‖(x_j − x_i) / scale‖``.

    The length is the smooth ``sqrt(‖r‖² + ε²)`` of :mod:`graphdl.ops.geometry` (ε = 1e-8 in
    units of ``scale``): ε on a self-edge, within ``ε²/(2‖r‖)`` of the length elsewhere.

    Shapes: positions ``(N, D)`` (or a trajectory's newest frame) → ``output`` ``(E, D + 1)``
    (``(E, D)`` without the distance).
    """

    family = "particles"
    needs_positions = True

    class Params(BlockParams):
        input: str = "node.pos"
        output: str = "edge.displacement"
        scale: PositiveFloat = 1.0
        distance: bool = True

        _v = field_validator("input", "output")(_check_key)

    @classmethod
    def infer(cls, p, fields, ctx):
        t = fields.need(p.input, cls.name)
        d = _position_dim(p.input, t, cls.name)
        if split_key(p.output)[0] != "edge":
            raise InferenceError(f"edge_displacement writes one row per edge; `output: {p.output}` must be an "
                                 f"edge field (e.g. `edge.displacement`)")
        return Signature({p.input: t}, {p.output: Scalar(d + int(p.distance))}, {"type": t})

    def forward(self, g, f):
        x = _positions(f[self.p.input], self.sig.info["type"])
        r = (x.index_select(0, g.src) - x.index_select(0, g.dst)) / self.p.scale
        if self.p.distance:
            r = torch.cat([r, safe_sqrt((r * r).sum(-1, keepdim=True))], -1)
        return {self.p.output: r}


@register_block("standardize")
class Standardize(_StatsMixin, Block):
    """``(x − μ) / σ`` per channel with the data statistic ``statistic`` (set by the task from its
    training split; GNS standardises its global ``step_context`` so). Shapes: ``(n, d) → (n, d)``."""

    family = "particles"

    class Params(FieldParams):
        input: str  # required here (FieldParams defaults to node.h); validators from FieldParams
        statistic: str

    @classmethod
    def infer(cls, p, fields, ctx):
        d = fields.need_scalar(p.input, cls.name)
        return Signature({p.input: fields[p.input]}, {p.output or p.input: Scalar(d)}, {"dim": d})

    def __init__(self, p, sig, ctx=None):
        super().__init__(p, sig, ctx)
        self._init_stats(p.statistic, sig.info["dim"])

    def forward(self, g, f):
        return {self.p.output or self.p.input: (f[self.p.input] - self.stat_mean) / self.stat_std}
