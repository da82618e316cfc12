"""``ipa`` against ``invariant-point-attention==0.2.2`` (lucidrains) with copied weights, in float64.

The package's conventions, mapped here and only here (our block follows AF2/OpenFold):

* it multiplies row vectors (``x @ rotations``): it gets ``Rᵀ`` of our column-vector frames;
* its point projections are laid out ``(head, point, xyz)``, ours ``(xyz, head, point)``;
* its q/k/v and point projections have no bias: our block is built with ``bias: false``;
* its output concatenation is ``[scalar (h, c), points (h, p, xyz), norms (h, p), pair (h, c_z)]``,
  ours ``[scalar (h, c), x (h, p), y (h, p), z (h, p), norms (h, p), pair (h, c_z)]``.

Its ``IPATransformer`` (issue #6 of that repository) rotates the translation update with the
wrong side of the rotation, so its predicted translations do not follow a global rotation of
the input; our structure module's do (see ``test_ipa_transformer_is_not_equivariant``).

Tolerance: 1e-10 absolute in float64 on outputs of size ~10: the two compute the same sums in
different orders (and our point term as ‖q‖² + ‖k‖² − 2q·k, theirs as ‖q − k‖²), so they differ
by round-off, a few hundred ulp of the largest intermediate (~1e2) at most, i.e. < 1e-12.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

ipa_pkg = pytest.importorskip("invariant_point_attention", reason="test extra: invariant-point-attention==0.2.2")

from ipa_helpers import COMPLETE, chains, randomize  # noqa: E402

from graphdl.nn.ipa import InvariantPointAttention  # noqa: E402
from graphdl.ops.frames import frame_parts, make_frame, quaternion_to_rotation  # noqa: E402

DT = torch.float64
TOL = 1e-10
pytestmark = pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast:FutureWarning")
H, C, CV, P, PV, S, Z = 4, 8, 6, 3, 5, 16, 8


def _pair_blocks():
    blk = InvariantPointAttention.build(
        {"heads": H, "scalar_qk": C, "scalar_v": CV, "points_qk": P, "points_v": PV, "bias": False},
        {"node.s": S, "node.frame": "frame", "edge.z": Z}, COMPLETE).to(DT)
    randomize(blk, seed=3)
    ref = ipa_pkg.InvariantPointAttention(dim=S, heads=H, scalar_key_dim=C, scalar_value_dim=CV, point_key_dim=P,
                                          point_value_dim=PV, pairwise_repr_dim=Z).to(DT)
    _copy_weights(blk, ref)
    return blk, ref


def _points_to_theirs(w: torch.Tensor, pts: int) -> torch.Tensor:
    """Rows (xyz, head, point) → (head, point, xyz)."""
    return w.view(3, H, pts, -1).permute(1, 2, 0, 3).reshape(3 * H * pts, -1)


def _copy_weights(ours: InvariantPointAttention, ref) -> None:
    with torch.no_grad():
        ref.to_scalar_q.weight.copy_(ours.linear_q.weight)
        ref.to_scalar_k.weight.copy_(ours.linear_k.weight)
        ref.to_scalar_v.weight.copy_(ours.linear_v.weight)
        ref.to_point_q.weight.copy_(_points_to_theirs(ours.linear_q_points.weight, P))
        ref.to_point_k.weight.copy_(_points_to_theirs(ours.linear_k_points.weight, P))
        ref.to_point_v.weight.copy_(_points_to_theirs(ours.linear_v_points.weight, PV))
        ref.point_weights.copy_(ours.head_weights)
        ref.to_pairwise_attn_bias[0].weight.copy_(ours.linear_b.weight)
        ref.to_pairwise_attn_bias[0].bias.copy_(ours.linear_b.bias)
        w = ours.linear_out.weight
        o = H * CV
        pts = w[:, o:o + 3 * H * PV].reshape(-1, 3, H, PV).permute(0, 2, 3, 1).reshape(-1, 3 * H * PV)
        ref.to_out.weight.copy_(torch.cat([w[:, :o], pts, w[:, o + 3 * H * PV:]], 1))
        ref.to_out.bias.copy_(ours.linear_out.bias)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def _theirs(ref, g, sizes):
    """Run the package on the padded batch; returns its outputs at our node rows."""
    b, m = len(sizes), max(sizes)
    s = torch.zeros(b, m, S, dtype=DT)
    rot = torch.eye(3, dtype=DT).repeat(b, m, 1, 1)
    trans = torch.zeros(b, m, 3, dtype=DT)
    mask = torch.zeros(b, m, dtype=torch.bool)
    pair = torch.zeros(b, m, m, Z, dtype=DT)
    r, t = frame_parts(g["node.frame"])
    start, estart = 0, 0
    for i, n in enumerate(sizes):  # test-side layout loop over a handful of chains
        s[i, :n] = g["node.s"][start:start + n]
        rot[i, :n] = r[start:start + n].transpose(-1, -2)  # row-vector convention: pass Rᵀ
        trans[i, :n] = t[start:start + n]
        mask[i, :n] = True
        pair[i, :n, :n] = g["edge.z"][estart:estart + n * n].view(n, n, Z)  # edges sorted (dst i, src j)
        start, estart = start + n, estart + n * n
    out = ref(s, pair, rotations=rot, translations=trans, mask=mask)
    return torch.cat([out[i, :n] for i, n in enumerate(sizes)])


@pytest.mark.parametrize("lowering", ["dense", "sparse"])
@pytest.mark.parametrize("sizes", [[9, 9], [6, 11, 3]], ids=["equal", "padded"])
def test_ipa_matches_invariant_point_attention(lowering, sizes):
    blk, ref = _pair_blocks()
    blk.dense = lowering == "dense"
    g = chains(sizes, single=S, pair=Z, seed=5)
    s = g["node.s"].clone().requires_grad_(True)
    fr = g["node.frame"].clone().requires_grad_(True)
    z = g["edge.z"].clone().requires_grad_(True)
    ours = blk(g, {"node.s": s, "node.frame": fr, "edge.z": z})["node.s"]
    g2 = g.replace(node__s=s, node__frame=fr, edge__z=z)
    theirs = _theirs(ref, g2, sizes)
    assert ours.abs().max() > 1.0  # the comparison is not between zeros
    assert (ours - theirs).abs().max() < TOL
    # gradients with respect to every input agree too
    w = torch.randn(ours.shape, dtype=DT, generator=torch.Generator().manual_seed(2))
    g_ours = torch.autograd.grad((ours * w).sum(), (s, fr, z))
    g_theirs = torch.autograd.grad((theirs * w).sum(), (s, fr, z))
    for a, b in zip(g_ours, g_theirs):
        assert (a - b).abs().max() < TOL * max(1.0, float(b.abs().max()))


# ------------------------------------------------------------------- IPATransformer, issue #6
def _install_quaternion_shim() -> None:
    """``IPATransformer`` imports two quaternion functions from pytorch3d (not installable here with
    this torch); give it the standard Hamilton product and rotation matrix (w, x, y, z)."""
    if "pytorch3d.transforms" in sys.modules:
        return

    def quaternion_multiply(a, b):
        aw, ax, ay, az = a.unbind(-1)
        bw, bx, by, bz = b.unbind(-1)
        return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                            aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)

    pkg = types.ModuleType("pytorch3d")
    tr = types.ModuleType("pytorch3d.transforms")
    tr.quaternion_multiply = quaternion_multiply
    tr.quaternion_to_matrix = quaternion_to_rotation
    pkg.transforms = tr
    sys.modules["pytorch3d"] = pkg
    sys.modules["pytorch3d.transforms"] = tr


def _rotation_quaternion(gen) -> torch.Tensor:
    q = torch.randn(4, generator=gen, dtype=DT)
    return q / q.norm()


def test_ipa_transformer_is_not_equivariant_where_ours_is(monkeypatch):
    """A global rotation G of the input frames: the package's predicted translations are not G t
    (Å-sized errors), our structure module's are (float64 round-off)."""
    _install_quaternion_shim()
    from invariant_point_attention import IPATransformer

    from graphdl.compile import compile_spec

    torch.manual_seed(0)
    n = 12
    gen = torch.Generator().manual_seed(4)
    ref = IPATransformer(dim=S, depth=2, heads=H, scalar_key_dim=C, scalar_value_dim=CV, point_key_dim=P,
                         point_value_dim=PV, pairwise_repr_dim=Z).to(DT).eval()
    s = torch.randn(1, n, S, generator=gen, dtype=DT)
    pair = torch.randn(1, n, n, Z, generator=gen, dtype=DT)
    quats = torch.nn.functional.normalize(torch.randn(1, n, 4, generator=gen, dtype=DT), dim=-1)
    trans = torch.randn(1, n, 3, generator=gen, dtype=DT) * 10
    gq = _rotation_quaternion(gen)
    G = quaternion_to_rotation(gq)
    mult = sys.modules["pytorch3d.transforms"].quaternion_multiply
    with torch.no_grad():
        _, t1, _ = ref(s, translations=trans, quaternions=quats, pairwise_repr=pair)
        _, t2, _ = ref(s, translations=trans @ G.T, quaternions=mult(gq.expand_as(quats), quats), pairwise_repr=pair)
    theirs_err = float((t2 - t1 @ G.T).abs().max())

    spec = {
        "graphdl": 1, "inputs": {"node.s": S, "node.frame": "frame", "edge.z": Z},
        "graph": {"kind": "complete", "self_loops": True},
        "model": {"layers": [{"type": "sequence", "repeat": 2, "layers": [
            {"type": "frame_stop_gradient"},
            {"type": "ipa", "heads": H, "scalar_qk": C, "scalar_v": CV, "points_qk": P, "points_v": PV,
             "residual": True},
            {"type": "layer_norm", "input": "node.s"},
            {"type": "mlp", "input": "node.s", "hidden": [S, S], "out_dim": S, "residual": True},
            {"type": "layer_norm", "input": "node.s"},
            {"type": "backbone_update"}]}], "outputs": ["node.frame"]},
    }
    model = compile_spec(spec, dtype=DT).eval()
    randomize(model, seed=6, std=0.2)
    from graphdl.data.graph import Graph

    r = quaternion_to_rotation(quats[0])
    fr = make_frame(r, trans[0])
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    pairs = torch.stack([jj.reshape(-1), ii.reshape(-1)])  # edge j -> i carries pair[i, j]
    g1 = Graph(pairs, n, {"node.s": s[0], "node.frame": fr, "edge.z": pair[0].reshape(n * n, Z)})
    fr2 = make_frame(G @ r, trans[0] @ G.T)
    g2 = Graph(pairs, n, {"node.s": s[0], "node.frame": fr2, "edge.z": pair[0].reshape(n * n, Z)})
    with torch.no_grad():
        o1 = model(g1)["node.frame"]
        o2 = model(g2)["node.frame"]
    ours_t_err = float((o2[:, 3] - o1[:, 3] @ G.T).abs().max())
    ours_r_err = float((o2[:, :3] - G @ o1[:, :3]).abs().max())
    assert float((o1[:, 3] - trans[0]).abs().max()) > 0.1  # the update moved the frames
    assert theirs_err > 0.1, theirs_err      # Å-sized: not equivariant
    assert ours_t_err < 1e-10 and ours_r_err < 1e-12, (ours_t_err, ours_r_err)
