"""The MLS-MPM substep of :mod:`graphdl.data.mpm` as Taichi kernels on the CPU (``backend: taichi``).

The same method, constants, walls and initial particles as the NumPy generator; one kernel
launch per substep with four loops (clear the nodes the last substep wrote, P2G, grid update of
the nodes with mass, G2P) over the particle and grid arrays, which Taichi reads and writes in place (NumPy arrays passed as
``ti.types.ndarray``). Every floating-point expression is written in the NumPy version's
order, so a particle's contribution and its gather are the same numbers; what differs is the
order in which P2G sums the contributions into a grid node: NumPy's ``bincount`` sums them
stencil-offset-major, Taichi particle-major. The two backends therefore agree to round-off,
not bitwise, and the difference grows with time (slowly while the water flies, faster where
it splashes: MPM water is chaotic over long horizons), so a dataset made with ``backend:
taichi`` is its own data set with its own cache key, not a faster copy of the NumPy one
(``tests/data/test_mpm_taichi.py`` checks the agreement over a short horizon;
``benchmarks/mpm_backends.py`` reports it over the timed frames).

P2G runs on one thread in particle order (a serial loop, whose adds Taichi compiles as plain
adds, not atomics: faster than the parallel loop on a few cores), so the numbers are the same
on every run and for every ``threads``; the grid update and G2P run on ``threads`` threads.

Taichi (``pip install taichi``; the ``sim`` extra) is imported on first use. It keeps one
global runtime per process: :func:`simulate` calls ``ti.init`` (CPU, the requested float
precision, ``threads`` worker threads, ``fast_math=False``, its compiled-kernel cache under
graphdl's cache directory, ``$GRAPHDL_CACHE/taichi``) when the precision or thread count
differ from the last call here, which resets any Taichi state other code of the same process
made.

**Shapes**: as :func:`graphdl.data.mpm.simulate`: positions ``(frames, P, 2)``.
"""

# no `from __future__ import annotations`: Taichi reads the kernel's annotations as objects
import contextlib
import io
import logging
import os
import warnings

import numpy as np

from graphdl.data.cache import cache_root
from graphdl.data.mpm import MPMConfig, MPMState
from graphdl.errors import DataError

log = logging.getLogger(__name__)

PRECISIONS = ("float64", "float32")
_RUNTIME: dict = {}  # {"key": (precision, threads), "ti": module, "substep": kernel}


def _import_taichi():
    """Import Taichi with its banner (stdout) and import-time info lines (its own logger) kept
    off the process's stdout, which may carry a command's JSON."""
    level = os.environ.get("TI_LOG_LEVEL")
    os.environ["TI_LOG_LEVEL"] = level or "warn"
    try:
        with contextlib.redirect_stdout(io.StringIO()) as banner, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # its own use of locale.getdefaultlocale
            import taichi as ti
    except ImportError:
        raise DataError("the taichi MPM backend needs Taichi: pip install taichi "
                        "(or the `sim` extra: pip install 'graphdl[sim]'), or use `backend: numpy`") from None
    finally:
        if level is None:
            del os.environ["TI_LOG_LEVEL"]
    if banner.getvalue():
        log.debug(banner.getvalue().strip())
    return ti


def _build_substep(ti):
    """The substep kernel (Taichi compiles it on the first call, for the runtime's precision)."""
    arr = ti.types.ndarray()

    @ti.kernel
    def substep(x: arr, v: arr, C: arr, J: arr, traj: arr, gm: arr, gv: arr, cells: arr, node0: arr,
                g: ti.i32, bound: ti.i32, dt: float, dx: float, inv_dx: float, inv_dx2: float,
                mass: float, volume: float, bulk_modulus: float, gravity: float):
        # clear what the last substep wrote: the nine nodes of each particle's last stencil
        # (`node0`, −1 for none; the grid starts zero), not the whole, mostly empty, grid
        for p in range(J.shape[0]):
            if node0[p] >= 0:
                for i, j in ti.static(ti.ndrange(3, 3)):
                    gm[node0[p] + i * g + j] = 0.0
                    gv[node0[p] + i * g + j, 0] = 0.0
                    gv[node0[p] + i * g + j, 1] = 0.0
        # P2G: momentum m v + (stress + m C) dpos, with stress = −dt 4 E V_p (J − 1) / dx².
        # One thread, particle by particle: a fixed order of the sums (the numbers do not depend
        # on `threads`), and Taichi makes the adds of a serial loop plain adds, not atomics
        # (on 8,000 particles, one thread: 0.15 ms against 1.1 ms for the parallel loop).
        ti.loop_config(serialize=True)
        for p in range(J.shape[0]):
            xp0, xp1 = x[p, 0] * inv_dx, x[p, 1] * inv_dx
            b0, b1 = ti.cast(ti.floor(xp0 - 0.5), ti.i32), ti.cast(ti.floor(xp1 - 0.5), ti.i32)
            ti.atomic_min(cells[0], ti.min(b0, b1))
            ti.atomic_max(cells[1], ti.max(b0, b1))
            node0[p] = -1
            if b0 >= 0 and b1 >= 0 and b0 <= g - 3 and b1 <= g - 3:  # else: reported, never written out of bounds
                fx0, fx1 = xp0 - b0, xp1 - b1
                w0 = ti.Vector([0.5 * (1.5 - fx0) ** 2, 0.75 - (fx0 - 1.0) ** 2, 0.5 * (fx0 - 0.5) ** 2])
                w1 = ti.Vector([0.5 * (1.5 - fx1) ** 2, 0.75 - (fx1 - 1.0) ** 2, 0.5 * (fx1 - 0.5) ** 2])
                stress = -dt * 4.0 * bulk_modulus * volume * (J[p] - 1.0) * inv_dx2
                a00 = stress + mass * C[p, 0, 0]
                a01 = mass * C[p, 0, 1]
                a10 = mass * C[p, 1, 0]
                a11 = stress + mass * C[p, 1, 1]
                base = (traj[p] * g + b0) * g + b1
                node0[p] = base
                for i, j in ti.static(ti.ndrange(3, 3)):
                    weight = w0[i] * w1[j]
                    d0, d1 = (i - fx0) * dx, (j - fx1) * dx
                    node = base + i * g + j
                    gm[node] += weight * mass
                    gv[node, 0] += weight * (mass * v[p, 0] + a00 * d0 + a01 * d1)
                    gv[node, 1] += weight * (mass * v[p, 1] + a10 * d0 + a11 * d1)
        # grid: momentum to velocity, gravity, slip walls (no outward velocity on the wall nodes).
        # Empty nodes keep velocity 0 where NumPy's have −dt g: a particle reads an empty node
        # only with weight 0, so the sums G2P forms are the same numbers.
        for row in range(gm.shape[0] // g):  # one row of nodes (trajectory, i) per iteration
            i = row % g
            for j in range(g):
                n = row * g + j
                m = gm[n]
                if m > 0:
                    u0, u1 = gv[n, 0] / m, gv[n, 1] / m
                    u1 = u1 - dt * gravity
                    if (i < bound and u0 < 0) or (i > g - bound and u0 > 0):
                        u0 = 0.0
                    if (j < bound and u1 < 0) or (j > g - bound and u1 > 0):
                        u1 = 0.0
                    gv[n, 0] = u0
                    gv[n, 1] = u1
        # G2P: velocity and affine field C from the nine nodes (summed in NumPy's offset order), then move
        for p in range(J.shape[0]):
            xp0, xp1 = x[p, 0] * inv_dx, x[p, 1] * inv_dx
            b0, b1 = ti.cast(ti.floor(xp0 - 0.5), ti.i32), ti.cast(ti.floor(xp1 - 0.5), ti.i32)
            if b0 >= 0 and b1 >= 0 and b0 <= g - 3 and b1 <= g - 3:
                fx0, fx1 = xp0 - b0, xp1 - b1
                w0 = ti.Vector([0.5 * (1.5 - fx0) ** 2, 0.75 - (fx0 - 1.0) ** 2, 0.5 * (fx0 - 0.5) ** 2])
                w1 = ti.Vector([0.5 * (1.5 - fx1) ** 2, 0.75 - (fx1 - 1.0) ** 2, 0.5 * (fx1 - 0.5) ** 2])
                base = (traj[p] * g + b0) * g + b1
                nv0, nv1, c00, c01, c10, c11 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
                for i, j in ti.static(ti.ndrange(3, 3)):
                    weight = w0[i] * w1[j]
                    d0, d1 = (i - fx0) * dx, (j - fx1) * dx
                    node = base + i * g + j
                    u0, u1 = gv[node, 0], gv[node, 1]
                    k = 4.0 * inv_dx2 * weight
                    nv0 += weight * u0
                    nv1 += weight * u1
                    c00 += k * u0 * d0
                    c01 += k * u0 * d1
                    c10 += k * u1 * d0
                    c11 += k * u1 * d1
                v[p, 0] = nv0
                v[p, 1] = nv1
                C[p, 0, 0] = c00
                C[p, 0, 1] = c01
                C[p, 1, 0] = c10
                C[p, 1, 1] = c11
                x[p, 0] = x[p, 0] + dt * nv0
                x[p, 1] = x[p, 1] + dt * nv1
                J[p] = J[p] * (1.0 + dt * (c00 + c11))

    return substep


def taichi_runtime(precision: str = "float64", threads: int = 1):
    """``(taichi module, substep kernel)`` for a CPU runtime of ``precision`` and ``threads``,
    initialising Taichi when this process has not, or did with other settings."""
    if precision not in PRECISIONS:
        raise DataError(f"taichi MPM precision `{precision}` is not one of {', '.join(PRECISIONS)}")
    if threads < 1:
        raise DataError(f"taichi MPM threads must be >= 1, found {threads}")
    key = (precision, int(threads))
    if _RUNTIME.get("key") != key:
        ti = _import_taichi()
        with contextlib.redirect_stdout(io.StringIO()) as banner:
            ti.init(arch=ti.cpu, default_fp=ti.f64 if precision == "float64" else ti.f32,
                    cpu_max_num_threads=int(threads), fast_math=False, log_level="warn",
                    offline_cache_file_path=str(cache_root() / "taichi"))
        log.debug(banner.getvalue().strip())
        _RUNTIME.update(key=key, ti=ti, substep=_build_substep(ti))
    return _RUNTIME["ti"], _RUNTIME["substep"]


def simulate(s: MPMState, cfg: MPMConfig, frames: int, *, precision: str = "float64", threads: int = 1) -> np.ndarray:
    """:func:`graphdl.data.mpm.simulate` with Taichi kernels: positions of every particle at
    ``frames`` frames, ``(frames, P, 2)`` float64 (computed in ``precision``); ``s`` is
    advanced in place as by the NumPy version.

    Raises :class:`DataError` when Taichi is not installed, or, as the NumPy version, when a
    particle leaves the grid (checked once per frame: the offending particle is left out of
    the transfers until then, so nothing is written outside the grid).
    """
    _, substep = taichi_runtime(precision, threads)
    dtype = np.float64 if precision == "float64" else np.float32
    g = cfg.n_grid
    x = np.ascontiguousarray(s.x, dtype)
    v = np.ascontiguousarray(s.v, dtype)
    C = np.ascontiguousarray(s.C, dtype)
    J = np.ascontiguousarray(s.J, dtype)
    traj = np.ascontiguousarray(s.traj, np.int32)
    gm = np.zeros(s.num_traj * g * g, dtype)
    gv = np.zeros((s.num_traj * g * g, 2), dtype)
    cells = np.zeros(2, np.int32)
    node0 = np.full(len(x), -1, np.int32)
    consts = (g, cfg.bound, cfg.dt, cfg.dx, float(g), float(g * g), cfg.particle_volume * cfg.density,
              cfg.particle_volume, cfg.bulk_modulus, cfg.gravity)
    out = np.empty((frames,) + s.x.shape)
    out[0] = s.x
    for f in range(1, frames):
        cells[:] = (np.iinfo(np.int32).max, np.iinfo(np.int32).min)
        for _ in range(cfg.substeps):
            substep(x, v, C, J, traj, gm, gv, cells, node0, *consts)
        if len(x) and (cells[0] < 0 or cells[1] > g - 3):
            raise DataError(f"an MPM particle left the grid (cell {int(cells[0])}..{int(cells[1])} of 0..{g - 1}); "
                            f"lower the initial speeds or raise `substeps`")
        out[f] = x
    s.x, s.v, s.C, s.J = (a.astype(np.float64) for a in (x, v, C, J))
    return out


__all__ = ["PRECISIONS", "simulate", "taichi_runtime"]
