"""Charged N-body generator: physics, symmetry, determinism, cache and dataset layout."""

from __future__ import annotations

import functools
import operator
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from graphdl.data import cache
from graphdl.data.nbody import (
    NBodyCharged,
    NBodyChargedParams,
    forces,
    generate,
    initial_conditions,
    load_or_generate,
    simulate,
    total_energy,
)
from graphdl.errors import DataError
from graphdl.types import VECTOR, Scalar

ROOT = Path(__file__).resolve().parents[2]


def _small(**kw) -> NBodyChargedParams:
    base = {"n_train": 6, "n_val": 4, "n_test": 4, "frame_stride": 10, "input_frame": 3, "target_frame": 4}
    base.update(kw)
    return NBodyChargedParams(**base)


def _random_orthogonal(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) > 0:  # include a reflection: E(3), not only SE(3)
        q[:, 0] = -q[:, 0]
    return q


def _spread_like_charges(n_traj=4, seed=0):
    """Like charges on well separated sites: they repel, never come close, never clip."""
    rng = np.random.default_rng(seed)
    grid = np.array([[0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 2], [2, 2, 2]], dtype=float)
    pos = grid[None] + 0.2 * rng.standard_normal((n_traj, 5, 3))
    vel = 0.5 * rng.standard_normal((n_traj, 5, 3))
    q = np.where(rng.random((n_traj, 1)) < 0.5, 1.0, -1.0) * np.ones((n_traj, 5))
    return pos, vel, q


# ----------------------------------------------------------------------------- physics
def test_energy_conserved_without_clipping():
    pos, vel, q = _spread_like_charges()
    xs, vs = simulate(pos, vel, q, n_steps=4000, dt=1e-3, clip=None, save_every=500)
    e = np.stack([total_energy(xs[:, k], vs[:, k], q, clip=None) for k in range(xs.shape[1])], 1)
    drift = np.abs(e - e[:, :1]).max() / np.abs(e[:, 0]).min()
    # leapfrog keeps the energy error bounded at O(dt²·|∂²V|·|v|²): measured 2.4e-8 at dt = 1e-3 for
    # charges ≥ 1.4 apart (round-off adds ~4000·eps ≈ 1e-12); 1e-6 leaves 40×
    assert drift < 1e-6, drift


def _encounter(offset=0.04):
    """Opposite charges heading for a pass at ~0.01, well inside the clip radius 0.1."""
    pos = np.array([[[-0.5, offset, 0.0], [0.5, -offset, 0.0]]])
    vel = np.array([[[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]]])
    return pos, vel, np.array([[1.0, -1.0]])


def test_energy_conserved_through_clipped_encounter():
    # The clipped pair force derives from a potential (Coulomb continued linearly inside the
    # clip radius), so leapfrog conserves that energy too, with an O(dt²) error.
    pos, vel, q = _encounter()
    errors = []
    for dt in (1e-3, 2e-4):
        n = round(2.0 / dt)
        xs, vs = simulate(pos, vel, q, n_steps=n, dt=dt, clip=100.0, save_every=n // 400)
        assert np.linalg.norm(xs[0, :, 0] - xs[0, :, 1], axis=-1).min() < 0.02
        e = total_energy(xs[0], vs[0], np.repeat(q, xs.shape[1], 0), clip=100.0)
        errors.append(np.abs(e - e[0]).max())
        # back to the start's energy after the pass: the O(dt²) error measures 1.1e-3 at dt = 1e-3 and
        # 25× less at dt = 2e-4 (truncation only; round-off is ~1e-12)
        assert abs(e[-1] - e[0]) < 5e-3
    assert errors[1] < errors[0] / 10  # second order in dt


def test_momentum_conserved_with_pair_clipping():
    pos, vel, q = initial_conditions(64, seed=7)
    p0 = vel.sum(1)
    xs, vs = simulate(pos, vel, q, n_steps=2000, dt=1e-3, clip=100.0, save_every=250)
    # antisymmetric pair forces conserve momentum exactly; 2000 steps add round-off only (measured 2.3e-14)
    np.testing.assert_allclose(vs.sum(2), np.broadcast_to(p0[:, None], vs.sum(2).shape), atol=1e-11)
    f = forces(xs[:, -1], q)
    # ≤ n·eps·Σ|f| with |f| ≤ 100 (clip) over 5 charges: ≈ 5e-13 (measured 1.4e-14)
    np.testing.assert_allclose(f.sum(1), 0.0, atol=1e-10)


def test_like_charges_repel_opposite_attract():
    pos = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    f = forces(pos, np.array([1.0, 1.0]))
    assert f[0, 0] < 0 < f[1, 0]  # pushed apart
    np.testing.assert_allclose(np.abs(f[:, 0]), 1.0)  # q_i q_j / r² at r = 1
    f = forces(pos, np.array([1.0, -1.0]))
    assert f[0, 0] > 0 > f[1, 0]  # pulled together
    xs, _ = simulate(pos, np.zeros((2, 3)), np.array([-1.0, -1.0]), n_steps=200, save_every=200)
    assert np.linalg.norm(xs[-1, 0] - xs[-1, 1]) > 1.0


def test_pair_clip_caps_magnitude_not_direction():
    pos = np.array([[0.0, 0.0, 0.0], [0.03, 0.04, 0.0]])  # r = 0.05 < 0.1
    f = forces(pos, np.array([1.0, 1.0]), clip=100.0)
    np.testing.assert_allclose(np.linalg.norm(f, axis=-1), 100.0)
    np.testing.assert_allclose(f[1] / 100.0, [0.6, 0.8, 0.0])


@pytest.mark.parametrize("encounter", [False, True])
def test_simulator_is_e3_equivariant(encounter):
    rng = np.random.default_rng(3)
    if encounter:  # a close pass that clips, beside a third particle: clipping keeps equivariance
        pos, vel, q = _encounter()
        pos = np.concatenate([pos, [[[3.0, 3.0, 3.0]]]], 1)
        vel = np.concatenate([vel, np.zeros((1, 1, 3))], 1)
        q = np.concatenate([q, [[1.0]]], 1)
        n_steps = 1000
    else:
        pos, vel, q = initial_conditions(16, seed=11)
        n_steps = 1000
    rot, shift = _random_orthogonal(rng), rng.standard_normal(3)
    xs, vs = simulate(pos, vel, q, n_steps=n_steps, save_every=10)
    xs2, vs2 = simulate(pos @ rot.T + shift, vel @ rot.T, q, n_steps=n_steps, save_every=10)
    if encounter:
        assert np.linalg.norm(xs[0, :, 0] - xs[0, :, 1], axis=-1).min() < 0.1
    # rounding R·x + t (≈ eps·|x|) grows along 1000 steps by the flow's sensitivity: measured 2e-12
    # (velocities), i.e. ×1e4 over eps; 1e-7 leaves room for a closer encounter, far below a broken symmetry
    np.testing.assert_allclose(xs2, xs @ rot.T + shift, atol=1e-7)
    np.testing.assert_allclose(vs2, vs @ rot.T, atol=1e-7)


def test_simulate_single_system_and_frames():
    pos, vel, q = initial_conditions(2, seed=1)
    xs, _vs = simulate(pos, vel, q, n_steps=300, save_every=100)
    assert xs.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(xs[:, 0], pos)
    one, _ = simulate(pos[1], vel[1], q[1], n_steps=300, save_every=100)
    np.testing.assert_array_equal(one, xs[1])  # batching does not change the numbers
    some, _ = simulate(pos, vel, q, n_steps=300, save_every=100, frames=(1, 3))
    np.testing.assert_array_equal(some, xs[:, [1, 3]])
    with pytest.raises(DataError, match="frames"):
        simulate(pos, vel, q, n_steps=300, save_every=100, frames=(4,))


def test_initial_conditions_distribution():
    pos, vel, q = initial_conditions(4000, seed=2)
    np.testing.assert_allclose(np.linalg.norm(vel, axis=-1), 0.5)
    assert set(np.unique(q)) == {-1.0, 1.0}
    assert abs(q.mean()) < 0.03 and abs(pos.std() - 1.0) < 0.02


# ----------------------------------------------------------------------------- generation
def test_generation_is_deterministic(tmp_path):
    p = _small()
    a, b = generate(p), generate(p)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # the cached file is byte-identical too
    ha = cache.save_npz(tmp_path / "a.npz", a)
    hb = cache.save_npz(tmp_path / "b.npz", b)
    assert ha == hb
    assert cache.sha256_file(tmp_path / "a.npz") == cache.sha256_file(tmp_path / "b.npz")
    # splits use different seeds
    assert not np.array_equal(a["train_pos"][:4], a["val_pos"])


def test_cache_roundtrip_and_checksum_mismatch(tmp_path):
    p = _small()
    arrays, rec = load_or_generate(p, tmp_path)
    assert rec["generated"] and Path(rec["cache_file"]).is_file()
    assert Path(rec["cache_file"]).is_relative_to(tmp_path)
    again, rec2 = load_or_generate(p, tmp_path)
    assert not rec2["generated"] and rec2["sha256"] == rec["sha256"]
    for k in arrays:
        np.testing.assert_array_equal(again[k], arrays[k])
    # the right checksum passes (with or without the `sha256:` prefix)
    load_or_generate(p.model_copy(update={"sha256": "sha256:" + rec["sha256"]}), tmp_path)
    # a wrong one names the file, both checksums and the fixes
    wrong = "0" * 64
    with pytest.raises(DataError) as err:
        load_or_generate(p.model_copy(update={"sha256": wrong}), tmp_path)
    msg = str(err.value)
    assert rec["cache_file"] in msg and rec["sha256"] in msg and wrong in msg
    assert "delete" in msg and f"sha256: {rec['sha256']}" in msg
    # a freshly generated mismatch says deleting will not help
    os.remove(rec["cache_file"])
    with pytest.raises(DataError, match="generated"):
        load_or_generate(p.model_copy(update={"sha256": wrong}), tmp_path)
    # a corrupt file is a DataError asking to delete it
    Path(rec["cache_file"]).write_bytes(b"not a zip")
    with pytest.raises(DataError, match="delete it"):
        load_or_generate(p, tmp_path)


def test_cache_root_and_atomic_write(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHDL_CACHE", str(tmp_path / "env"))
    assert cache.cache_root() == tmp_path / "env"
    assert cache.cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("GRAPHDL_CACHE")
    assert cache.cache_root() == Path("~/.cache/graphdl").expanduser()
    target = tmp_path / "d" / "f.bin"
    with pytest.raises(RuntimeError), cache.atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("crash")
    assert not target.exists() and list(target.parent.iterdir()) == []
    with cache.atomic_write(target) as f:
        f.write(b"whole")
    assert target.read_bytes() == b"whole"
    # the array checksum sees dtype and shape, not only bytes
    a = np.arange(6, dtype=np.int64)
    assert cache.sha256_arrays({"a": a}) != cache.sha256_arrays({"a": a.reshape(2, 3)})
    assert cache.sha256_arrays({"a": a}) != cache.sha256_arrays({"a": a.view(np.float64)})


# ----------------------------------------------------------------------------- dataset
def test_dataset_layout(tmp_path):
    p = _small()
    ds = NBodyCharged.load(p, cache_dir=str(tmp_path), base_dir=str(tmp_path))
    assert len(ds) == 14 and {k: len(v) for k, v in ds.splits.items()} == {"train": 6, "val": 4, "test": 4}
    assert sorted(functools.reduce(operator.iadd, ds.splits.values(), [])) == list(range(14))
    assert ds.fields == {
        "node.pos": VECTOR,
        "node.vel": VECTOR,
        "node.speed": Scalar(1),
        "node.charge": Scalar(1),
        "edge.charge_product": Scalar(1),
        "node.target_pos": VECTOR,
    }
    assert ds.targets == ["node.target_pos"]
    g = ds[0]
    assert g.num_nodes == 5 and g.num_edges == 20
    src, dst = g.edge_index
    assert bool((src != dst).all()) and len({(int(s), int(d)) for s, d in zip(src, dst)}) == 20
    assert bool((dst[1:] >= dst[:-1]).all())  # sorted by destination
    for key, t in ds.fields.items():
        assert g[key].shape[-1] == t.dim and g[key].dtype == torch.float32
    q = g["node.charge"][:, 0]
    torch.testing.assert_close(g["edge.charge_product"][:, 0], q[src] * q[dst])
    torch.testing.assert_close(g["node.speed"][:, 0], g["node.vel"].norm(dim=-1))
    arrays, _ = load_or_generate(p, tmp_path)
    torch.testing.assert_close(
        ds[6]["node.target_pos"], torch.from_numpy(arrays["val_target_pos"][0]).float()
    )
    assert ds.meta["sha256"] and ds.meta["elapsed_time"] == pytest.approx(0.01)
    assert set(ds.meta["baseline_mse"]["test"]) == {"static", "linear", "linear_fitted"}


def test_params_validation():
    with pytest.raises(ValueError, match="target_frame"):
        NBodyChargedParams(input_frame=40, target_frame=30)
    with pytest.raises(ValueError, match="seeds"):
        NBodyChargedParams(seeds={"train": 1, "val": 1, "test": 2})
    with pytest.raises(ValueError):
        NBodyChargedParams(n_bodies=5)  # extra keys are refused


def test_shipped_spec_parses():
    spec = yaml.safe_load((ROOT / "datasets" / "nbody_charged.yaml").read_text())
    p = NBodyChargedParams(**spec)
    assert (p.n_train, p.n_val, p.n_test, p.n_particles) == (3000, 2000, 2000, 5)
    assert (p.input_frame, p.target_frame, p.frame_stride, p.dt) == (30, 40, 100, 0.001)
    assert p.sha256 and len(p.sha256) == 64
