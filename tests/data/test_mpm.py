"""The MLS-MPM water generator: physics checks, walls, determinism, caching with a checksum."""

from __future__ import annotations

import numpy as np
import pytest

from graphdl.data.mpm import MPMConfig, MPMState, effective_bounds, simulate, water_blobs
from graphdl.data.particles import MPMWater, WaterParams
from graphdl.errors import DataError
from graphdl.types import Categorical, Trajectory


def _blob(seed: int, n=(40, 50), speed=0.0):
    cfg = MPMConfig()
    x, v = water_blobs(np.random.default_rng(seed), cfg, 1, n, speed)
    return cfg, x, v


def test_free_fall_momentum_is_exact():
    """Away from the walls the transfers conserve momentum (APIC), so the blob's mean acceleration
    per frame is exactly −g·frame_dt² (float64 round-off on positions ~0.5: 1e-12 relative)."""
    cfg, x, v = _blob(0)
    x = x - x.mean(0) + 0.5  # the middle of the box
    traj = simulate(MPMState(x, v, np.zeros(len(x), np.int64), 1), cfg, 6)
    acc = (traj[2:] - 2 * traj[1:-1] + traj[:-2]).mean(1)
    g = cfg.gravity * cfg.frame_dt ** 2
    assert np.allclose(acc[:, 1], -g, rtol=1e-8, atol=0)
    assert np.allclose(acc[:, 0], 0.0, rtol=0, atol=1e-8 * g)


def test_particles_stay_inside_the_effective_walls():
    cfg, x, v = _blob(1, (60, 60), speed=1.0)
    x = x - x.mean(0) + np.array([0.15, 0.15])  # low, near a corner, thrown at it
    traj = simulate(MPMState(x, v, np.zeros(len(x), np.int64), 1), cfg, 120)
    lo, hi = effective_bounds(cfg)[0]
    # soft grid walls: measured penetration <= 0.08 dx on water_drop_2d; bound 0.25 dx
    assert traj.min() >= lo - 0.25 * cfg.dx and traj.max() <= hi + 0.25 * cfg.dx
    assert traj[-1, :, 1].min() < lo + cfg.dx  # it did reach the floor


def test_trajectories_do_not_depend_on_batching():
    cfg = MPMConfig()
    (_, x1, v1), (_, x2, v2) = _blob(2, speed=1.0), _blob(3, speed=1.0)
    alone = simulate(MPMState(x1, v1, np.zeros(len(x1), np.int64), 1), cfg, 5)
    both = simulate(MPMState(np.concatenate([x1, x2]), np.concatenate([v1, v2]),
                             np.repeat([0, 1], [len(x1), len(x2)]), 2), cfg, 5)
    assert np.array_equal(alone, both[:, :len(x1)])  # bitwise


def _params(**kw):
    base = {"type": "mpm_water", "n_train": 2, "n_val": 1, "n_test": 1, "frames": 12, "blobs": (1, 1),
            "particles_per_blob": (30, 40)}
    return WaterParams(**{**base, **kw})


def test_water_dataset_is_cached_checked_and_typed(tmp_path):
    ds = MPMWater.load(_params(), cache_dir=tmp_path)
    assert ds.meta["generated"] and ds.meta["bounds"] == [[0.03125, 0.96875], [0.03125, 0.96875]]
    assert ds.fields == {"node.position": Trajectory(12, 2), "node.particle_type": Categorical(9)}
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    assert all((g["node.particle_type"] == 5).all() for g in ds.graphs)
    again = MPMWater.load(_params(), cache_dir=tmp_path)  # from the cache, same numbers
    assert not again.meta["generated"] and again.meta["sha256"] == ds.meta["sha256"]
    fresh = MPMWater.load(_params(), cache_dir=tmp_path / "other")  # generated again: bitwise the same
    assert fresh.meta["sha256"] == ds.meta["sha256"]
    with pytest.raises(DataError, match="records sha256 0000"):
        MPMWater.load(_params(sha256="0000"), cache_dir=tmp_path)
    x = ds.graphs[0]["node.position"].double().numpy().transpose(1, 0, 2)
    assert ds.meta["vel_std"][1] > 0 and abs(ds.meta["acc_mean"][1]) <= 9.8 * 0.0025 ** 2 * 1.0001
    assert x.shape[0] == 12


def test_bad_generator_parameters_are_spec_errors():
    with pytest.raises(Exception, match=r"`blobs` is a \[min, max\] range, found \[3, 1\]"):
        _params(blobs=(3, 1))
