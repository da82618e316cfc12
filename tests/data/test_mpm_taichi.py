"""The Taichi MLS-MPM backend checked against the NumPy generator (same config, walls, particles).

What differs between the two is only the order of P2G's sums into each grid node (NumPy's
``bincount`` sums stencil-offset-major, Taichi particle-major); every other expression is
evaluated in the same order. The bound below follows that
round-off through the transfers over a short horizon of free flight.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from graphdl.data import mpm_taichi
from graphdl.data.mpm import _OFFSETS, MPMConfig, MPMState, _stencil, simulate, water_blobs
from graphdl.data.particles import MPMWater, WaterParams
from graphdl.errors import DataError

needs_taichi = pytest.mark.skipif(importlib.util.find_spec("taichi") is None,
                                  reason="taichi not installed (pip install taichi; `sim` and `test` extras)")
EPS64, EPS32 = float(np.finfo(np.float64).eps), float(np.finfo(np.float32).eps)


def _two_drops(speed=1.0):
    """Two trajectories (separate grids), one blob each: one low in the box, thrown at the floor
    (1 per second: it reaches the floor's wall nodes within 8 frames) and squeezed (its velocity field converges and turns: C, J and the pressure change, the
    floor's wall nodes act from the first substep), one in mid-air, turning and stretching."""
    cfg = MPMConfig()
    xs, vs = [], []
    for seed, centre, drift, field in ((0, (0.5, 0.1), -1.0, (-3.0, 3.0)), (1, (0.5, 0.6), 0.0, (2.0, -3.0))):
        x, v = water_blobs(np.random.default_rng(seed), cfg, 1, (150, 200), speed)
        r = x - x.mean(0)
        xs.append(r + np.array(centre))
        v = v + field[0] * r + field[1] * r[:, ::-1] * np.array([-1.0, 1.0])  # divergence + rotation
        vs.append(v + np.array([0.0, drift]))
    traj = np.repeat([0, 1], [len(xs[0]), len(xs[1])])
    return cfg, np.concatenate(xs), np.concatenate(vs), traj


def _scale(s: MPMState, cfg: MPMConfig) -> tuple[float, int]:
    """``U``: the largest velocity a P2G momentum term carries per unit of mass,
    ``|v| + |stress/m + C| · 1.5 dx`` summed over the two axes of ``dpos`` (``|dpos| <= 1.5 dx``);
    ``n``: the most particles any grid node gathers from."""
    mass = cfg.particle_volume * cfg.density
    stress = -cfg.dt * 4.0 * cfg.bulk_modulus * cfg.particle_volume * (s.J - 1.0) * cfg.n_grid ** 2
    affine = np.abs(s.C) + np.abs(stress / mass)[:, None, None] * np.eye(2)
    u = np.abs(s.v).max(1) + 1.5 * cfg.dx * affine.sum(2).max(1)
    base, _, _ = _stencil(s.x, cfg)
    node = base[None] + _OFFSETS[:, None, :]
    flat = (s.traj[None] * cfg.n_grid + node[..., 0]) * cfg.n_grid + node[..., 1]
    return float(u.max()), int(np.bincount(flat.reshape(-1)).max())


def _run_both(frames, precision="float64", threads=1):
    """Both backends from the same state, frame by frame; the largest differences of x, v, C, J
    and the bounds of the round-off analysis below."""
    cfg, x, v, traj = _two_drops()
    a, b = MPMState(x, v, traj, 2), MPMState(x, v, traj, 2)
    U, n = _scale(a, cfg)
    for _ in range(frames):
        simulate(a, cfg, 2)
        mpm_taichi.simulate(b, cfg, 2, precision=precision, threads=threads)
        u_f, n_f = _scale(a, cfg)
        U, n = max(U, u_f), max(n, n_f)
    diff = {k: float(np.abs(getattr(a, k) - getattr(b, k)).max()) for k in ("x", "v", "C", "J")}
    # Round-off bound. One substep: each grid node sums n terms into its mass (positive, w m) and
    # n into its momentum (each at most w m U); two orders of a sum of n terms differ by at most
    # 2 (n − 1) eps Σ|terms|, so the node velocity u = momentum / mass moves by at most
    # 2 n eps U + |u| 2 n eps <= delta = 4 n eps U. In float32 every operation rounds as well:
    # ~10 more per term (weights, stress, affine product), so n + 10 in place of n. G2P averages
    # u with weights summing to one (|Δv| <= delta) and forms C = 4/dx² Σ w u dpos
    # (|ΔC| <= 4/dx² · 1.5 dx · delta). Over S substeps of free flight the perturbations add
    # (the short horizon: no impact or splash amplifies them; measured, the differences grow
    # about linearly, 1e-15 -> 3e-15 in v over 20 frames, and stay ~1e-12 over 400 frames of a
    # splash in float64, while the bound here is 1e-12 at S = 80): |Δv| <= S delta,
    # |ΔC| <= 6 S delta / dx, and x = x + dt v adds dt Σ_k k delta <= dt S² delta / 2 plus one
    # rounding of x (<= eps |x| <= eps) per substep; J *= 1 + dt tr C adds <= dt · 2 |ΔC| per substep.
    eps = EPS64 if precision == "float64" else EPS32
    S = frames * cfg.substeps
    delta = 4 * (n + (0 if precision == "float64" else 10)) * eps * U
    bound = {"v": S * delta, "C": 6 * S * delta / cfg.dx, "x": cfg.dt * S * S * delta / 2 + S * eps}
    bound["J"] = S * cfg.dt * 2 * bound["C"]
    return diff, bound, (a, b, cfg)


@needs_taichi
def test_taichi_matches_numpy_to_roundoff_in_float64():
    diff, bound, (a, b, _) = _run_both(8)
    for k in diff:
        assert diff[k] <= bound[k], (k, diff, bound)
    # the bound is far below what any slip in the port makes: one substep of gravity is dt g = 2.5e-3
    assert bound["v"] < 1e-9 and diff["v"] < 1e-12
    assert len(b.x) == len(a.x) and np.isfinite(b.x).all()


@needs_taichi
def test_taichi_float32_stays_within_float32_roundoff():
    diff, bound, _ = _run_both(4, precision="float32")
    for k in diff:
        assert diff[k] <= bound[k], (k, diff, bound)
    assert diff["x"] > 1e-12  # it did compute in float32


@needs_taichi
def test_taichi_is_bitwise_deterministic_for_any_thread_count():
    """P2G sums in particle order on one thread; the grid update and G2P are per node / per particle."""
    cfg, x, v, traj = _two_drops()
    one = mpm_taichi.simulate(MPMState(x, v, traj, 2), cfg, 4)
    again = mpm_taichi.simulate(MPMState(x, v, traj, 2), cfg, 4)
    two = mpm_taichi.simulate(MPMState(x, v, traj, 2), cfg, 4, threads=2)
    assert np.array_equal(one, again) and np.array_equal(one, two)


@needs_taichi
def test_grid_mass_is_the_particles_mass():
    """P2G conserves mass: the grid masses are NumPy's bincount of w·m (the same terms, other
    order: 2 n eps per node) and sum to P·m (quadratic B-spline weights sum to one per particle;
    9P positive terms and the weights' own rounding: (9P + 10) eps relative)."""
    cfg, x, v, traj = _two_drops()
    _, kernel = mpm_taichi.taichi_runtime("float64", 1)
    g, P = cfg.n_grid, len(x)
    mass = cfg.particle_volume * cfg.density
    gm, gv, cells = np.zeros(2 * g * g), np.zeros((2 * g * g, 2)), np.array([2 ** 31 - 1, -2 ** 31], np.int32)
    node0 = np.full(P, -1, np.int32)  # no nodes to clear: the grid starts zero
    kernel(x.copy(), v.copy(), np.zeros((P, 2, 2)), np.ones(P), traj.astype(np.int32), gm, gv, cells, node0,
           g, cfg.bound, cfg.dt, cfg.dx, float(g), float(g * g), mass, cfg.particle_volume, cfg.bulk_modulus,
           cfg.gravity)
    base, weight, _ = _stencil(x, cfg)
    node = base[None] + _OFFSETS[:, None, :]
    flat = ((traj[None] * g + node[..., 0]) * g + node[..., 1]).reshape(-1)
    ref = np.bincount(flat, weights=(weight * mass).reshape(-1), minlength=2 * g * g)
    n = int(np.bincount(flat).max())
    assert np.abs(gm - ref).max() <= 2 * n * EPS64 * ref.max()
    assert abs(gm.sum() - P * mass) <= (9 * P + 10) * EPS64 * P * mass
    assert (cells[0], cells[1]) == (base.min(), base.max())


@needs_taichi
def test_free_fall_momentum_is_exact():
    """As for NumPy (tests/data/test_mpm.py): away from walls the transfers and the pressure conserve
    momentum, so the mid-air blob's mean acceleration per frame is −g·frame_dt² while it turns and stretches."""
    cfg, x, v, traj = _two_drops()
    up = traj == 1
    pos = mpm_taichi.simulate(MPMState(x[up], v[up], np.zeros(up.sum(), np.int64), 1), cfg, 6)
    acc = (pos[2:] - 2 * pos[1:-1] + pos[:-2]).mean(1)
    g = cfg.gravity * cfg.frame_dt ** 2
    assert np.allclose(acc[:, 1], -g, rtol=1e-8, atol=0)
    assert np.allclose(acc[:, 0], 0.0, rtol=0, atol=1e-8 * g)


@needs_taichi
def test_a_particle_leaving_the_grid_is_the_same_error():
    cfg = MPMConfig()
    x, v = np.array([[0.002, 0.5], [0.5, 0.5]]), np.zeros((2, 2))
    for sim in (simulate, mpm_taichi.simulate):
        with pytest.raises(DataError, match=r"an MPM particle left the grid \(cell -1\.\.31 of 0\.\.63\)"):
            sim(MPMState(x, v, np.zeros(2, np.int64), 1), cfg, 2)


def _params(**kw):
    base = {"type": "mpm_water", "n_train": 2, "n_val": 1, "n_test": 1, "frames": 6, "blobs": (1, 1),
            "particles_per_blob": (30, 40)}
    return WaterParams(**{**base, **kw})


@needs_taichi
def test_water_dataset_with_the_taichi_backend(tmp_path):
    ours = MPMWater.load(_params(backend="taichi"), cache_dir=tmp_path)
    ref = MPMWater.load(_params(), cache_dir=tmp_path)
    assert ours.meta["cache_file"] != ref.meta["cache_file"] and ours.meta["sha256"] != ref.meta["sha256"]
    assert "backend taichi (float64, 1 thread(s))" in ours.meta["simulator"]
    assert "backend numpy" in ref.meta["simulator"]
    for g1, g2 in zip(ours.graphs, ref.graphs, strict=True):
        # float32 copies of float64 positions in [0, 1] that differ by ~1e-15: at most one float32 ulp
        assert g1.num_nodes == g2.num_nodes
        assert (g1["node.position"] - g2["node.position"]).abs().max() <= EPS32 / 2
    again = MPMWater.load(_params(backend="taichi"), cache_dir=tmp_path)
    assert not again.meta["generated"] and again.meta["sha256"] == ours.meta["sha256"]
    with pytest.raises(DataError, match=r"\(backend: taichi, whose numbers differ from the numpy backend's"):
        MPMWater.load(_params(backend="taichi", sha256=ref.meta["sha256"]), cache_dir=tmp_path)


def test_the_numpy_cache_key_is_unchanged():
    """The numpy backend's generation parameters (the cache key) do not mention the backend, so data
    generated before the taichi backend existed keep their key and checksum."""
    assert not {"backend", "precision", "threads"} & set(_params().generation())
    assert _params(backend="taichi").generation()["backend"] == "taichi"
    assert _params(backend="taichi", threads=2).generation() == _params(backend="taichi").generation()
    with pytest.raises(Exception, match=r"`precision: float32` and `threads: 1` are settings of `backend: taichi`"):
        _params(precision="float32")


def test_missing_taichi_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "taichi", None)  # `import taichi` raises ImportError
    monkeypatch.setattr(mpm_taichi, "_RUNTIME", {})
    cfg, x, v, traj = _two_drops()
    with pytest.raises(DataError, match=r"the taichi MPM backend needs Taichi: pip install taichi"):
        mpm_taichi.simulate(MPMState(x, v, traj, 2), cfg, 2)
