"""2D MLS-MPM water, written here in vectorised NumPy: the particle data of ``water_drop_2d``.

The moving-least-squares material point method (Hu et al. 2018, "A Moving Least Squares
Material Point Method with Displacement Discontinuity and Two-Way Rigid Body Coupling",
SIGGRAPH; the classic 88-line form is Taichi's ``mpm88`` example) for a weakly
compressible fluid in the unit square:

* particles carry position ``x``, velocity ``v``, the affine velocity field ``C`` (APIC) and
  the volume ratio ``J``; pressure is ``E (1 − J)`` (bulk modulus ``E``, no shear: water);
* each substep scatters mass and momentum to a grid of ``n_grid²`` nodes with quadratic
  B-spline weights (P2G), adds gravity and the walls on the grid, and gathers velocity and
  ``C`` back (G2P), then moves the particles: ``x += dt v``, ``J *= 1 + dt tr(C)``;
* walls: grid nodes ``i < bound`` and ``i > n_grid − bound`` lose the velocity component
  that points out of the box (a slip wall), as in ``mpm88``: nodes sit at ``i·dx`` for
  ``i = 0..n_grid−1``, so these two sets of ``bound`` and ``bound − 1`` nodes stop particles
  at the same distance from either edge of the unit box.

Every trajectory has its own grid; all trajectories of a dataset are integrated together
(their grid nodes are disjoint slices of one array), with only ``+ − × floor`` and
``numpy.bincount`` (which sums in input order), so the numbers do not depend on how
trajectories are batched, on threads or on the BLAS: generation is bitwise deterministic.

Where the particles can be: a slip wall stops a particle about one cell inside its layer of
wall nodes, at ``(bound − 1)·dx`` from each edge (:func:`effective_bounds`; with the default
grid 64 and ``bound = 3``, 0.03125). Those are the ``bounds`` in the dataset's metadata (GNS's
wall features), not the grid's edge.

**Shapes**: particle arrays ``(P, 2)``; trajectories ``(T, N, 2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from graphdl.errors import DataError

_OFFSETS = np.array([(i, j) for i in range(3) for j in range(3)], dtype=np.int64)  # (9, 2)


@dataclass(frozen=True)
class MPMConfig:
    """Physical and numerical constants of the simulation (defaults: ``water_drop_2d``)."""

    n_grid: int = 64
    frame_dt: float = 0.0025
    substeps: int = 10
    bulk_modulus: float = 400.0
    gravity: float = 9.8
    bound: int = 3
    density: float = 1.0

    @property
    def dx(self) -> float:
        return 1.0 / self.n_grid

    @property
    def dt(self) -> float:
        return self.frame_dt / self.substeps

    @property
    def particle_volume(self) -> float:
        """Four particles per cell at rest (two per axis), as mpm88."""
        return (0.5 * self.dx) ** 2


def effective_bounds(cfg: MPMConfig) -> list[list[float]]:
    """The walls particles stop at: ``(bound − 1)·dx`` and ``1 − (bound − 1)·dx`` on each axis.

    A particle's velocity is the weighted mean of its three stencil nodes per axis; it stops
    once the wall nodes carry most of that weight, which happens about one cell inside the wall
    layer. The grid wall is soft: measured on ``water_drop_2d``, particles reach at most 0.08 dx
    past these lines (``tests/data/test_mpm.py`` bounds it by 0.25 dx)."""
    lo = (cfg.bound - 1) * cfg.dx
    return [[lo, 1.0 - lo], [lo, 1.0 - lo]]


class MPMState:
    """Particles of ``B`` independent trajectories, each with its own grid.

    Args:
        x, v: ``(P, 2)`` float64 positions and velocities.
        traj: ``(P,)`` trajectory id of each particle (``0..B-1``).
        num_traj: ``B``.
    """

    def __init__(self, x: np.ndarray, v: np.ndarray, traj: np.ndarray, num_traj: int):
        self.x = np.array(x, dtype=np.float64)
        self.v = np.array(v, dtype=np.float64)
        self.C = np.zeros((len(self.x), 2, 2))
        self.J = np.ones(len(self.x))
        self.traj = np.asarray(traj, dtype=np.int64)
        self.num_traj = int(num_traj)
        self._walls: tuple | None = None

    def walls(self, cfg: MPMConfig) -> tuple[np.ndarray, ...]:
        """Masks over the flat grid nodes: lower/upper wall along x, lower/upper wall along y."""
        if self._walls is None:
            g, b = cfg.n_grid, cfg.bound
            n = np.arange(self.num_traj * g * g)
            i, j = n // g % g, n % g
            self._walls = (i < b, i > g - b, j < b, j > g - b)
        return self._walls


def _stencil(x: np.ndarray, cfg: MPMConfig):
    """Base node, weights ``(9, P)``, offsets ``dpos`` ``(9, P, 2)`` (in units of length) of each particle."""
    inv_dx = float(cfg.n_grid)
    xp = x * inv_dx
    base = np.floor(xp - 0.5).astype(np.int64)  # (P, 2)
    fx = xp - base
    w = np.stack([0.5 * (1.5 - fx) ** 2, 0.75 - (fx - 1.0) ** 2, 0.5 * (fx - 0.5) ** 2])  # (3, P, 2)
    weight = w[_OFFSETS[:, 0], :, 0] * w[_OFFSETS[:, 1], :, 1]  # (9, P)
    dpos = (_OFFSETS[:, None, :] - fx[None]) * cfg.dx  # (9, P, 2)
    return base, weight, dpos


def substep(s: MPMState, cfg: MPMConfig) -> None:
    """One MLS-MPM step of ``cfg.dt`` for every trajectory of ``s`` (in place)."""
    g = cfg.n_grid
    dt, dx = cfg.dt, cfg.dx  # noqa: F841 - dx kept for reading the P2G formulas
    inv_dx2 = float(g * g)
    mass = cfg.particle_volume * cfg.density
    base, weight, dpos = _stencil(s.x, cfg)
    if base.min() < 0 or base.max() > g - 3:
        raise DataError(f"an MPM particle left the grid (cell {int(base.min())}..{int(base.max())} of 0..{g - 1}); "
                        f"lower the initial speeds or raise `substeps`")
    node = base[None] + _OFFSETS[:, None, :]  # (9, P, 2)
    flat = (s.traj[None] * g + node[..., 0]) * g + node[..., 1]  # (9, P)
    # P2G: momentum m v + (stress + m C) dpos, with stress = −dt 4 E V_p (J − 1) / dx²
    stress = -dt * 4.0 * cfg.bulk_modulus * cfg.particle_volume * (s.J - 1.0) * inv_dx2  # (P,)
    a00 = stress + mass * s.C[:, 0, 0]
    a01 = mass * s.C[:, 0, 1]
    a10 = mass * s.C[:, 1, 0]
    a11 = stress + mass * s.C[:, 1, 1]
    mom0 = weight * (mass * s.v[:, 0] + a00 * dpos[..., 0] + a01 * dpos[..., 1])
    mom1 = weight * (mass * s.v[:, 1] + a10 * dpos[..., 0] + a11 * dpos[..., 1])
    size = s.num_traj * g * g
    idx = flat.reshape(-1)
    gm = np.bincount(idx, weights=(weight * mass).reshape(-1), minlength=size)
    gv0 = np.bincount(idx, weights=mom0.reshape(-1), minlength=size)
    gv1 = np.bincount(idx, weights=mom1.reshape(-1), minlength=size)
    has = gm > 0
    gv0 = np.where(has, gv0 / np.where(has, gm, 1.0), 0.0)
    gv1 = np.where(has, gv1 / np.where(has, gm, 1.0), 0.0) - dt * cfg.gravity
    # slip walls: no outward velocity on the wall nodes
    lo_i, hi_i, lo_j, hi_j = s.walls(cfg)
    gv0[(lo_i & (gv0 < 0)) | (hi_i & (gv0 > 0))] = 0.0
    gv1[(lo_j & (gv1 < 0)) | (hi_j & (gv1 > 0))] = 0.0
    # G2P
    u0, u1 = gv0[flat], gv1[flat]  # (9, P)
    s.v[:, 0] = (weight * u0).sum(0)
    s.v[:, 1] = (weight * u1).sum(0)
    k = 4.0 * inv_dx2 * weight
    s.C[:, 0, 0] = (k * u0 * dpos[..., 0]).sum(0)
    s.C[:, 0, 1] = (k * u0 * dpos[..., 1]).sum(0)
    s.C[:, 1, 0] = (k * u1 * dpos[..., 0]).sum(0)
    s.C[:, 1, 1] = (k * u1 * dpos[..., 1]).sum(0)
    s.x += dt * s.v
    s.J *= 1.0 + dt * (s.C[:, 0, 0] + s.C[:, 1, 1])


def simulate(s: MPMState, cfg: MPMConfig, frames: int) -> np.ndarray:
    """Positions of every particle at ``frames`` frames (frame 0 = the initial state, then one
    frame every ``cfg.substeps`` substeps): ``(frames, P, 2)`` float64."""
    out = np.empty((frames,) + s.x.shape)
    out[0] = s.x
    for f in range(1, frames):
        for _ in range(cfg.substeps):
            substep(s, cfg)
        out[f] = s.x
    return out


def water_blobs(rng: np.random.Generator, cfg: MPMConfig, n_blobs: int, sizes: tuple[int, int],
                speed: float, margin: float = 0.05, tries: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Initial particles of one trajectory: ``n_blobs`` discs of water that do not overlap.

    Each disc holds ``rng.integers(sizes[0], sizes[1] + 1)`` particles placed uniformly at
    random at rest density (four per cell), a centre uniform in the box (``margin`` from the
    walls), and one velocity uniform in ``[−speed, speed]²`` for all its particles.

    Returns ``x (n, 2)``, ``v (n, 2)``.
    """
    lo = effective_bounds(cfg)[0][0] + margin
    xs, vs, placed = [], [], []
    for _ in range(n_blobs):
        n = int(rng.integers(sizes[0], sizes[1] + 1))
        r = math.sqrt(n * cfg.particle_volume / math.pi)
        for _ in range(tries):
            c = rng.uniform(lo + r, 1.0 - lo - r, size=2)
            if all(np.hypot(*(c - c2)) > r + r2 + cfg.dx for c2, r2 in placed):
                break
        else:
            raise DataError(f"could not place {n_blobs} non-overlapping blobs in {tries} tries; use fewer blobs")
        placed.append((c, r))
        rad = r * np.sqrt(rng.uniform(size=n))
        ang = rng.uniform(0.0, 2.0 * math.pi, size=n)
        xs.append(c + np.stack([rad * np.cos(ang), rad * np.sin(ang)], -1))
        vs.append(np.broadcast_to(rng.uniform(-speed, speed, size=2), (n, 2)))
    return np.concatenate(xs), np.concatenate(vs)


__all__ = ["MPMConfig", "MPMState", "effective_bounds", "simulate", "substep", "water_blobs"]
