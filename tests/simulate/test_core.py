"""The GNS procedure: random-walk noise, noise-corrected targets, the integrator, rollouts, metrics."""

from __future__ import annotations

import math

import pytest
import torch

from graphdl.simulate import core

F64 = torch.float64


def test_random_walk_noise_statistics():
    g = torch.Generator().manual_seed(0)
    n, c, sigma = 200_000, 5, 6.7e-4
    noise = core.random_walk_noise(torch.zeros(n, c + 1, 1, dtype=F64), sigma, g)
    assert torch.equal(noise[:, 0], torch.zeros(n, 1, dtype=F64))  # none on the first frame
    vel = noise[:, 1:] - noise[:, :-1]  # the velocity noise: a random walk
    steps = torch.cat([vel[:, :1], vel[:, 1:] - vel[:, :-1]], 1)
    # sample std of n Gaussians: relative standard error 1/sqrt(2n) = 0.0016; 5 of them
    se = 5 / math.sqrt(2 * n)
    assert steps.std().item() == pytest.approx(sigma / math.sqrt(c), rel=se)
    assert vel[:, -1].std().item() == pytest.approx(sigma, rel=se)  # σ on the newest velocity
    assert vel[:, 0].std().item() == pytest.approx(sigma / math.sqrt(c), rel=se)


def test_target_undoes_the_newest_velocity_noise_and_integrate_inverts_it():
    g = torch.Generator().manual_seed(1)
    hist = torch.randn(7, 6, 2, generator=g, dtype=F64)
    nxt = torch.randn(7, 2, generator=g, dtype=F64)
    noise = core.random_walk_noise(hist, 0.1, g)
    a = core.acceleration_target(nxt, hist, noise)
    noisy = hist + noise
    # the target velocity (noisy last velocity + a) is the true next velocity x_{t+1} − x_t
    assert torch.allclose((noisy[:, -1] - noisy[:, -2]) + a, nxt - hist[:, -1], rtol=0, atol=1e-14)
    # without noise: integrate(history, target) gives the next position back (semi-implicit Euler, dt = 1)
    assert torch.allclose(core.integrate(hist, core.acceleration_target(nxt, hist)), nxt, rtol=0, atol=1e-14)


class _Exact(torch.nn.Module):
    """Predicts the exact normalised acceleration of x(t) = x0 + v t + ½ a t² (a constant)."""

    def __init__(self, a, acc):
        super().__init__()
        self.a, self.acc = a, acc

    def forward(self, g):
        return {"node.acc": self.acc.normalize(self.a.expand_as(g["node.pos"]))}


def _parabola(n=4, t=30):
    x0 = torch.rand(n, 1, 2, dtype=F64)
    v = torch.rand(n, 1, 2, dtype=F64) * 0.01
    a = torch.tensor([0.0, -1e-3], dtype=F64)
    tt = torch.arange(t, dtype=F64)[None, :, None]
    return x0 + v * tt + 0.5 * a * tt * tt, a


def test_rollout_of_an_exact_model_is_the_truth_and_kinematic_particles_follow_the_data():
    pos, a = _parabola()
    acc = core.Normalizer(torch.tensor([0.1, 0.2], dtype=F64), torch.tensor([2.0, 3.0], dtype=F64))
    fields = core.SimFields(particle_type=None)
    batch = torch.tensor([0, 0, 1, 1])
    t0 = torch.tensor([5, 7])
    r = core.rollout(core.model_predictor(_Exact(a, acc), fields), fields, acc, pos, batch, 2, t0, 10, 6)
    assert r.pred.shape == (10, 4, 2)
    assert torch.allclose(r.pred, r.truth, rtol=0, atol=1e-12)  # exact physics, float64 round-off
    assert torch.equal(r.truth[0, 2], pos[2, 8]) and torch.equal(r.start[0], pos[0, 5])
    # a model that knows nothing: particles 0 and 3 kinematic take the truth, the rest drift
    zero = core.zero_predictor(fields)
    kin = torch.tensor([True, False, False, True])
    rz = core.rollout(zero, fields, acc, pos, batch, 2, t0, 10, 6, kinematic=kin)
    assert torch.equal(rz.pred[:, kin], rz.truth[:, kin])
    # the baseline by hand: constant velocity plus the mean acceleration
    x, v = pos[1, 5], pos[1, 5] - pos[1, 4]
    for k in range(10):
        v = v + acc.mean
        x = x + v
        assert torch.allclose(rz.pred[k, 1], x, rtol=0, atol=1e-14)


def test_rollout_metrics_by_hand():
    k, n = 25, 3
    truth = torch.zeros(k, n, 2, dtype=F64)
    pred = torch.zeros(k, n, 2, dtype=F64)
    pred[:, 0, 0] = torch.arange(1, k + 1, dtype=F64)  # error on particle 0, axis 0: step number
    batch = torch.tensor([0, 0, 1])
    r = core.Rollout(pred, truth, torch.zeros(n, 2, dtype=F64), batch, 2)
    m = core.rollout_metrics(r, dt=0.5)
    per_step = torch.arange(1, k + 1, dtype=F64) ** 2 / 4  # graph 0: 2 particles x 2 axes
    assert m["mse5"][0].item() == pytest.approx(per_step[:5].mean().item())
    assert m["mse20"][0].item() == pytest.approx(per_step[:20].mean().item())
    assert m["mse_full"][0].item() == pytest.approx(per_step.mean().item())
    assert m["mse_full"][1].item() == 0.0
    # kinetic energy: particle 0 moves 1 per frame (dt 0.5): E = ½ (1/0.5)² = 2 per frame
    assert m["ekin_mse"][0].item() == pytest.approx(4.0)
    assert core.inside_box(pred, [[0, 10], [-1, 1]]).item() == pytest.approx(1 - 15 / 75)
