"""Frame algebra, quaternions, FAPE (AF2 Algorithm 28), Kabsch RMSD and lDDT-Cα against plain references.

float64 throughout; tolerances are round-off of a handful of 3x3 products on Å-scale values
(≤ 1e-12) unless stated.
"""

from __future__ import annotations

import math

import torch

from graphdl.ops.frames import (
    apply_frame,
    compose,
    fape,
    frame_parts,
    identity_frames,
    invert,
    invert_apply,
    kabsch_rmsd,
    lddt_ca,
    make_frame,
    perturb_frames,
    quaternion_to_rotation,
    random_rotations,
)

DT = torch.float64


def _frames(n, seed=0, spread=10.0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=gen, dtype=DT)
    return make_frame(quaternion_to_rotation(q), torch.randn(n, 3, generator=gen, dtype=DT) * spread)


def test_quaternions_give_proper_rotations_and_compose():
    gen = torch.Generator().manual_seed(1)
    q1, q2 = torch.randn(2, 50, 4, generator=gen, dtype=DT)
    r1, r2 = quaternion_to_rotation(q1), quaternion_to_rotation(q2)
    eye = torch.eye(3, dtype=DT)
    assert (r1.transpose(-1, -2) @ r1 - eye).abs().max() < 1e-14
    assert (torch.det(r1) - 1).abs().max() < 1e-14
    # Hamilton product q1 q2 ↦ R(q1) R(q2)
    w1, x1, y1, z1 = q1.unbind(-1)
    w2, x2, y2, z2 = q2.unbind(-1)
    prod = torch.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], -1)
    assert (quaternion_to_rotation(prod) - r1 @ r2).abs().max() < 1e-14
    # rotation by angle θ about z: q = (cos θ/2, 0, 0, sin θ/2)
    th = 0.7
    rz = quaternion_to_rotation(torch.tensor([math.cos(th / 2), 0, 0, math.sin(th / 2)], dtype=DT))
    assert torch.allclose(rz, torch.tensor([[math.cos(th), -math.sin(th), 0], [math.sin(th), math.cos(th), 0],
                                            [0, 0, 1]], dtype=DT), atol=1e-15)


def test_apply_compose_invert():
    a, b = _frames(7, 0), _frames(7, 1)
    x = torch.randn(7, 5, 3, dtype=DT)
    assert (apply_frame(compose(a, b), x) - apply_frame(a, apply_frame(b, x))).abs().max() < 1e-12
    assert (invert_apply(a, apply_frame(a, x)) - x).abs().max() < 1e-12
    assert (compose(a, invert(a)) - identity_frames(7, dtype=DT)).abs().max() < 1e-12
    assert (apply_frame(invert(a), x) - invert_apply(a, x)).abs().max() < 1e-12
    # one point per frame (no point dims) and a frame per iteration (extra leading dim)
    assert apply_frame(a, x[:, 0]).shape == (7, 3)
    at = torch.stack([a, b], 1)  # (7, 2, 4, 3)
    assert (apply_frame(at, x[:, :2])[:, 1] - apply_frame(b, x[:, 1])).abs().max() < 1e-12


def test_random_rotations_angle_scale():
    r = random_rotations(20000, 0.3, generator=torch.Generator().manual_seed(0))
    angle = torch.arccos(((torch.diagonal(r, dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))
    # q = normalise(1, ω/2) rotates by θ = 2 atan(‖ω‖/2); ‖ω‖ is Maxwell-distributed (σ = 0.3):
    # E θ by quadrature of the Maxwell density; tolerance 4 standard errors (std θ ≈ 0.2, n = 20000)
    s = 0.3
    r_ = torch.linspace(0, 12 * s, 200001, dtype=DT)
    pdf = math.sqrt(2 / math.pi) * r_ ** 2 * torch.exp(-r_ ** 2 / (2 * s * s)) / s ** 3
    expect = float(torch.trapezoid(2 * torch.atan(r_ / 2) * pdf, r_))
    assert abs(float(angle.mean()) - expect) < 4 * float(angle.std()) / math.sqrt(20000)


def test_perturb_frames_noise_statistics():
    f = identity_frames(20000, dtype=DT)
    noisy = perturb_frames(f, 2.0, 0.3, generator=torch.Generator().manual_seed(3))
    r, t = frame_parts(noisy)
    assert abs(float(t.std()) - 2.0) < 0.03  # 60000 samples: relative standard error 0.3 %
    assert (r.transpose(-1, -2) @ r - torch.eye(3, dtype=DT)).abs().max() < 1e-14


def _fape_naive(pred, true, batch, clamp=10.0, scale=10.0, eps=1e-4):
    """Algorithm 28 literally, with loops (test reference)."""
    per_chain = []
    for b in batch.unique():
        idx = (batch == b).nonzero().flatten().tolist()
        total = 0.0
        for i in idx:
            for j in idx:
                xp = invert_apply(pred[i], pred[j, 3])
                xt = invert_apply(true[i], true[j, 3])
                d = math.sqrt(float(((xp - xt) ** 2).sum()) + eps)
                total += min(d, clamp) if clamp is not None else d
        per_chain.append(total / len(idx) ** 2 / scale)
    return sum(per_chain) / len(per_chain)


def test_fape_matches_algorithm_28():
    batch = torch.tensor([0] * 5 + [1] * 3 + [2] * 7)
    true = _frames(15, 0, spread=8.0)
    pred = _frames(15, 1, spread=8.0)
    for clamp in (10.0, None, 3.0):
        got = float(fape(pred, true, batch, 3, clamp=clamp))
        assert abs(got - _fape_naive(pred, true, batch, clamp=clamp)) < 1e-12
    # identical frames: only ε remains, √ε / 10
    assert abs(float(fape(true, true, batch, 3)) - math.sqrt(1e-4) / 10) < 1e-15


def test_fape_is_invariant_to_rigid_motions_and_averages_iterations():
    batch = torch.tensor([0] * 6 + [1] * 4)
    true, pred = _frames(10, 2), _frames(10, 3)
    g = _frames(1, 9)
    moved = compose(g.expand(10, 4, 3), pred)
    assert abs(float(fape(moved, true, batch, 2) - fape(pred, true, batch, 2))) < 1e-12
    moved_true = compose(_frames(1, 5).expand(10, 4, 3), true)
    assert abs(float(fape(pred, moved_true, batch, 2) - fape(pred, true, batch, 2))) < 1e-12
    traj = torch.stack([pred, true, _frames(10, 4)], 1)  # (N, T, 4, 3)
    want = sum(float(fape(traj[:, k], true, batch, 2)) for k in range(3)) / 3
    assert abs(float(fape(traj, true, batch, 2)) - want) < 1e-12
    per = fape(traj, true, batch, 2, per_graph=True)
    assert per.shape == (2,) and abs(float(per.mean()) - want) < 1e-12


def test_kabsch_rmsd_and_lddt():
    gen = torch.Generator().manual_seed(0)
    batch = torch.tensor([0] * 30 + [1] * 20)
    x = torch.cumsum(torch.randn(50, 3, generator=gen, dtype=DT) * 2, 0)
    rot = quaternion_to_rotation(torch.randn(2, 4, generator=gen, dtype=DT))[batch]
    moved = (rot @ x.unsqueeze(-1)).squeeze(-1) + torch.randn(2, 3, generator=gen, dtype=DT)[batch] * 30
    assert kabsch_rmsd(moved, x, batch, 2).abs().max() < 1e-10
    assert (lddt_ca(moved, x, batch, 2) - 1).abs().max() < 1e-12
    # a mirror image cannot be superposed by a proper rotation
    mirror = x * torch.tensor([1.0, 1.0, -1.0], dtype=DT)
    assert (kabsch_rmsd(mirror, x, batch, 2) > 0.5).all()
    # against the plain formula: RMSD after the optimal rotation ≤ RMSD of the centred sets
    noise = x + torch.randn(50, 3, generator=gen, dtype=DT)
    r = kabsch_rmsd(noise, x, batch, 2)
    for b, sl in ((0, slice(0, 30)), (1, slice(30, 50))):
        p, q = noise[sl] - noise[sl].mean(0), x[sl] - x[sl].mean(0)
        plain = float(((p - q) ** 2).sum(-1).mean().sqrt())
        assert float(r[b]) <= plain + 1e-12 and float(r[b]) > 0.5 * plain
    # lDDT of a pair set: one distance off by 1.5 Å scores 2 of 4 thresholds on that pair
    a = torch.tensor([[0.0, 0, 0], [3.8, 0, 0]], dtype=DT)
    b2 = torch.tensor([[0.0, 0, 0], [5.3, 0, 0]], dtype=DT)
    assert abs(float(lddt_ca(b2, a, torch.zeros(2, dtype=torch.long), 1)) - 0.5) < 1e-12
