"""The structure-module blocks: IPA's two lowerings, invariance, memory shape, precision; frames,
backbone updates, stop-gradient and relative positions; the compiler's frame-type rules.

Tolerances: float64 comparisons of quantities of size ~10 that are the same sums taken in a
different order (dense vs sparse) differ by round-off, ~1e-14; we allow 1e-11 (about 50 ulp of
the largest intermediate, ~1e3, which the point term's ‖q‖² + ‖k‖² reaches for 10 Å spreads).
"""

from __future__ import annotations

import pytest
import torch
from ipa_helpers import COMPLETE, chains, random_rotations, randomize
from torch.utils._python_dispatch import TorchDispatchMode

from graphdl.compile import compile_spec
from graphdl.errors import KernelUnavailableError, SpecError
from graphdl.nn.base import BuildContext
from graphdl.nn.ipa import (
    BackboneUpdate,
    FramesFromBackbone,
    FrameStopGradient,
    InvariantPointAttention,
    RelativePosition,
    ipa_constants,
)
from graphdl.ops.frames import compose, frame_parts, make_frame, quaternion_to_rotation

DT = torch.float64
TOL = 1e-11
FIELDS = {"node.s": 16, "node.frame": "frame", "edge.z": 8}


def _ipa(lowering="auto", ctx=COMPLETE, dtype=DT, **kw):
    blk = InvariantPointAttention.build({"heads": 4, "points_v": 5, "lowering": lowering, **kw}, FIELDS, ctx)
    randomize(blk, seed=2)
    return blk.to(dtype)


def _inputs(g, grad=False):
    f = {k: v.clone().requires_grad_(grad) for k, v in g.fields.items()}
    return f


@pytest.mark.parametrize("self_loops", [True, False])
@pytest.mark.parametrize("sizes", [[7, 7, 7], [5, 9, 1, 4]], ids=["equal", "padded"])
def test_dense_and_sparse_lowerings_agree(sizes, self_loops):
    ctx = BuildContext(graph_kind="complete", self_loops=self_loops)
    g = chains(sizes, single=16, pair=8, self_loops=self_loops, seed=1)
    dense, sparse = _ipa("dense", ctx), _ipa("sparse", ctx)
    assert dense.dense and not sparse.dense
    f1, f2 = _inputs(g, True), _inputs(g, True)
    o1, o2 = dense(g, f1)["node.s"], sparse(g, f2)["node.s"]
    assert o1.abs().max() > 1
    assert (o1 - o2).abs().max() < TOL
    w = torch.randn(o1.shape, dtype=DT, generator=torch.Generator().manual_seed(0))
    (o1 * w).sum().backward()
    (o2 * w).sum().backward()
    for k in f1:
        assert (f1[k].grad - f2[k].grad).abs().max() < TOL * max(1.0, float(f2[k].grad.abs().max())), k
    for (n, a), (_, b) in zip(dense.named_parameters(), sparse.named_parameters()):
        assert (a.grad - b.grad).abs().max() < TOL * max(1.0, float(b.grad.abs().max())), n


def test_dense_exact_layout_is_used_without_copy_and_agrees():
    """Equal chains with self-loops: the pair field is viewed as (B, M, M, c_z) directly."""
    g = chains([6, 6], seed=3)
    blk = _ipa("dense")
    seen = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func.__name__)
            return func(*args, **(kwargs or {}))

    with Spy():
        out = blk(g, dict(g.fields))["node.s"]
    assert "index_fill_" not in seen  # the padded (general) path marks present edges; this one needs none
    ref = _ipa("sparse")(g, dict(g.fields))["node.s"]
    assert (out - ref).abs().max() < TOL


@pytest.mark.parametrize("lowering", ["dense", "sparse"])
def test_no_tensor_of_all_pairs_times_points(lowering):
    """The point term never materialises (N, N, H, P, 3): every intermediate, forward and backward,
    stays below N²·H·P·3 elements (with c_z = 8 < H·P·3 = 48, the pair field is smaller)."""
    n, H, P = 24, 4, 4
    g = chains([n], single=16, pair=8, seed=0)
    blk = _ipa(lowering)
    big = []
    limit = n * n * H * P * 3

    class Sizes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.numel() >= limit:
                    big.append((func.__name__, tuple(t.shape)))
            return out

    f = _inputs(g, True)
    with Sizes():
        out = blk(g, f)["node.s"]
        out.square().sum().backward()
    assert not big, big


def test_invariant_under_a_rigid_motion_of_each_chain():
    """Each chain gets its own random rotation and translation: IPA's output does not change
    (chains are independent, and IPA only sees relative geometry within a chain)."""
    sizes = [5, 8, 3]
    g = chains(sizes, seed=4)
    gen = torch.Generator().manual_seed(9)
    rots = random_rotations(len(sizes), gen)[g.batch]
    shifts = (torch.randn(len(sizes), 3, generator=gen, dtype=DT) * 100)[g.batch]
    r, t = frame_parts(g["node.frame"])
    moved = make_frame(rots @ r, (rots @ t.unsqueeze(-1)).squeeze(-1) + shifts)
    for low in ("dense", "sparse"):
        blk = _ipa(low)
        a = blk(g, dict(g.fields))["node.s"]
        b = blk(g, {**g.fields, "node.frame": moved})["node.s"]
        # translations of 100 Å: the frames' own round-off is ~1e-14 · 100
        assert (a - b).abs().max() < 1e-10, low


def test_ipa_without_pair_input():
    g = chains([4, 6], pair=None, seed=2)
    fields = {"node.s": 16, "node.frame": "frame"}
    out = {}
    for low in ("dense", "sparse"):
        blk = InvariantPointAttention.build({"heads": 2, "pair": None, "lowering": low}, fields, COMPLETE).to(DT)
        randomize(blk, seed=1)
        out[low] = blk(g, dict(g.fields))["node.s"]
        assert blk.linear_b is None and abs(blk.w_l - 0.5 ** 0.5) < 1e-15
    assert (out["dense"] - out["sparse"]).abs().max() < TOL


def test_output_projection_is_zero_initialised_and_head_weights_softplus_one():
    blk = InvariantPointAttention.build({}, {"node.s": 32, "node.frame": "frame", "edge.z": 8}, COMPLETE)
    assert not blk.linear_out.weight.any() and not blk.linear_out.bias.any()
    assert torch.allclose(torch.nn.functional.softplus(blk.head_weights), torch.ones(12))
    # AF2 widths: 12 heads x (16 scalar + 4·8 point coordinates and norms... ) + pair
    assert blk.linear_out.in_features == 12 * (16 + 4 * 8 + 8)
    assert abs(blk.w_c - (2 / (9 * 4)) ** 0.5) < 1e-15 and abs(blk.w_l - (1 / 3) ** 0.5) < 1e-15


# ---------------------------------------------------------------------------- precision
def test_constants_per_dtype():
    assert ipa_constants(torch.float32) == (1e5, 1e-8)
    assert ipa_constants(torch.float64) == (1e5, 1e-8)
    assert ipa_constants(torch.float16) == (1e4, 1e-4)
    # float16 cannot hold 1e5 nor 1e-8: the float16 values are representable and nonzero
    assert torch.tensor(1e4, dtype=torch.float16).isfinite() and torch.tensor(1e-4, dtype=torch.float16) > 0
    assert not torch.tensor(1e5, dtype=torch.float16).isfinite() and torch.tensor(1e-8, dtype=torch.float16) == 0


def _large_chain(dtype=torch.float32):
    # a chain 60 Å across, 500 Å from the origin: bf16 points (8 mantissa bits, 2-4 Å steps
    # at 500 Å) would scramble the point term
    g = chains([40, 25], single=32, pair=8, seed=7, spread=30.0, dtype=torch.float64)
    r, t = frame_parts(g["node.frame"])
    g.fields["node.frame"] = make_frame(r, t + 500.0)
    return g.to(dtype)


def test_bfloat16_autocast_finite_and_points_in_float32():
    g = _large_chain()
    blk = InvariantPointAttention.build({"heads": 4}, {"node.s": 32, "node.frame": "frame", "edge.z": 8},
                                        COMPLETE)
    randomize(blk, seed=5, std=0.2)
    ref = blk(g, dict(g.fields))["node.s"]
    dtypes = set()

    class Dtypes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.__name__.startswith(("bmm", "_softmax", "sqrt")) and isinstance(out, torch.Tensor):
                dtypes.add((func.__name__, out.dtype))
            return out

    f = _inputs(g, True)
    with torch.autocast("cpu", dtype=torch.bfloat16), Dtypes():
        out = blk(g, f)["node.s"]
    assert out.dtype == torch.bfloat16
    # attention core (logits, softmax, point norms) in float32 under bf16 autocast
    assert dtypes and all(d == torch.float32 for _, d in dtypes), dtypes
    assert torch.isfinite(out).all()
    out.float().square().sum().backward()
    assert all(torch.isfinite(v.grad).all() for v in f.values())
    assert all(torch.isfinite(p.grad).all() for p in blk.parameters())
    # only the projections round to bf16 (unit round-off 2^-9 ≈ 2e-3 per entry): the output stays
    # within 10 unit round-offs of float32 (measured 4.4e-3); with the attention core in bf16
    # too (points, squared distances, softmax) this chain gives 4.8e-2
    err = float((out.detach().float() - ref.detach()).abs().max() / ref.detach().abs().max())
    assert err < 10 * 2.0 ** -9, err


def test_bfloat16_model_forward_backward_finite():
    g = _large_chain(torch.bfloat16)
    spec = {"graphdl": 1, "inputs": {"node.s": 32, "node.frame": "frame", "edge.z": 8},
            "graph": {"kind": "complete", "self_loops": True},
            "model": {"layers": [{"type": "ipa", "heads": 4, "residual": True},
                                 {"type": "backbone_update"}], "outputs": ["node.s", "node.frame"]}}
    model = compile_spec(spec, dtype=torch.bfloat16)
    randomize(model, seed=1, std=0.2)
    out = model(g)
    assert all(v.dtype == torch.bfloat16 and torch.isfinite(v).all() for v in out.values())
    (out["node.s"].float().sum() + out["node.frame"].float().sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# ------------------------------------------------------------------------ frames, updates
def test_frames_from_backbone_algorithm_21():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, 3, generator=gen, dtype=DT) * 2
    blk = FramesFromBackbone.build({}, {"node.pos_backbone": "3x1o"})
    g = chains([10], pair=None)
    fr = blk(g, {"node.pos_backbone": x.reshape(10, 9)})["node.frame"]
    r, t = frame_parts(fr)
    eye = torch.eye(3, dtype=DT).expand(10, 3, 3)
    assert (r.transpose(-1, -2) @ r - eye).abs().max() < 1e-14
    assert (torch.det(r) - 1).abs().max() < 1e-14
    assert torch.equal(t, x[:, 1])
    n_local = (r.transpose(-1, -2) @ (x[:, 0] - x[:, 1]).unsqueeze(-1)).squeeze(-1)
    c_local = (r.transpose(-1, -2) @ (x[:, 2] - x[:, 1]).unsqueeze(-1)).squeeze(-1)
    assert c_local[:, 1:].abs().max() < 1e-14 and (c_local[:, 0] > 0).all()  # C on the +x axis
    assert n_local[:, 2].abs().max() < 1e-14 and (n_local[:, 1] > 0).all()  # N in the +y half-plane


def test_backbone_update_identity_at_init_and_explicit_composition():
    g = chains([6], seed=1)
    blk = BackboneUpdate.build({}, {"node.s": 16, "node.frame": "frame"}).to(DT)
    fr = g["node.frame"]
    assert torch.equal(blk(g, dict(g.fields))["node.frame"], fr)  # zero-initialised
    randomize(blk, seed=3)
    out = blk(g, dict(g.fields))["node.frame"]
    u = blk.linear(g["node.s"])
    q = torch.cat([torch.ones(6, 1, dtype=DT), u[:, :3]], 1)
    rq = quaternion_to_rotation(q / q.norm(dim=1, keepdim=True))
    r, t = frame_parts(fr)
    assert (out[:, :3] - r @ rq).abs().max() < 1e-14
    assert (out[:, 3] - (t + (r @ u[:, 3:].unsqueeze(-1)).squeeze(-1))).abs().max() < 1e-13
    assert (compose(fr, make_frame(rq, u[:, 3:])) - out).abs().max() < 1e-13


def test_frame_stop_gradient_blocks_only_the_rotation():
    g = chains([5], pair=None)
    fr = g["node.frame"].clone().requires_grad_(True)
    out = FrameStopGradient.build({}, {"node.frame": "frame"})(g, {"node.frame": fr})["node.frame"]
    out.sum().backward()
    assert not fr.grad[:, :3].any() and torch.equal(fr.grad[:, 3], torch.ones(5, 3, dtype=DT))
    fr.grad = None
    out = FrameStopGradient.build({"part": "all"}, {"node.frame": "frame"})(g, {"node.frame": fr})["node.frame"]
    assert not out.requires_grad


def test_relative_position_is_clipped_one_hot_linear():
    g = chains([40], pair=None)
    blk = RelativePosition.build({"out_dim": 5, "max_offset": 32}, {"node.residue_index": 1})
    res = torch.arange(40, dtype=torch.float32).unsqueeze(-1) * 2 + 7  # index gaps of 2
    z = blk(g, {"node.residue_index": res})["edge.z"]
    off = (res[g.dst, 0] - res[g.src, 0]).clamp(-32, 32).long() + 32
    onehot = torch.nn.functional.one_hot(off, 65).float()
    assert torch.allclose(z, blk.linear(onehot), atol=1e-6)
    assert off.min() == 0 and off.max() == 64  # both clips reached


# ------------------------------------------------------------------------- compiler rules
BASE = {"graphdl": 1, "inputs": {"node.s": 16, "node.frame": "frame", "node.residue_index": 1},
        "graph": {"kind": "complete", "self_loops": True}}


@pytest.mark.parametrize("layer,needle", [
    ({"type": "mlp", "input": "node.frame", "out_dim": 4}, "mlp is not frame-equivariant and cannot read field "
                                                           "`node.frame` of type frame"),
    ({"type": "linear", "input": "node.frame", "out_dim": 4}, "linear is not frame-equivariant"),
    ({"type": "layer_norm", "input": "node.frame"}, "layer_norm is not frame-equivariant"),
    ({"type": "dropout", "input": "node.frame"}, "dropout on `node.frame` (frame) would drop vector components"),
    ({"type": "concat", "inputs": ["node.s", "node.frame"], "output": "node.x"}, "not frame-equivariant"),
    ({"type": "readout", "input": "node.frame", "output": "graph.f"}, "not frame-equivariant"),
    ({"type": "ipa", "frame": "node.s"}, "needs `node.s` to be a rigid frame field"),
    ({"type": "ipa", "input": "node.frame"}, "is not frame-equivariant and cannot read field `node.frame`"),
])
def test_no_plain_block_touches_a_frame(layer, needle):
    with pytest.raises(SpecError) as e:
        compile_spec({**BASE, "model": {"layers": [layer]}})
    assert needle in str(e.value) and "model.layers[0]" in str(e.value)


def test_dense_lowering_needs_a_complete_graph():
    spec = {**BASE, "inputs": {**BASE["inputs"], "node.pos": "1o"}, "graph": {"kind": "knn", "k": 3},
            "model": {"layers": [{"type": "ipa", "pair": None, "lowering": "dense"}]}}
    with pytest.raises(SpecError, match="`lowering: dense` attends over all residue pairs"):
        compile_spec(spec)


@pytest.mark.parametrize("sizes", [[4, 4], [3, 5]], ids=["exact", "padded"])
def test_gradcheck_dense_custom_backward(sizes):
    """The dense path's hand-written backward (shared ∂z buffer, softmax and both weighted sums
    in one function) against finite differences, float64."""
    g = chains(sizes, single=6, pair=3, seed=8, spread=3.0)
    blk = InvariantPointAttention.build({"heads": 2, "scalar_qk": 3, "scalar_v": 2, "points_qk": 2, "points_v": 2,
                                         "lowering": "dense"}, {"node.s": 6, "node.frame": "frame", "edge.z": 3},
                                        COMPLETE).to(DT)
    randomize(blk, seed=4)

    def fn(s, fr, z):
        return blk(g, {"node.s": s, "node.frame": fr, "edge.z": z})["node.s"]

    inputs = tuple(g[k].clone().requires_grad_(True) for k in ("node.s", "node.frame", "edge.z"))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("lowering", ["dense", "sparse"])
def test_coincident_frames_and_a_single_residue_stay_finite(lowering):
    """All residues at one point (every point distance 0) and a one-residue chain: output, first
    and second derivatives with respect to the frames are finite (random weights, not the
    zero-initialised output)."""
    g = chains([4, 1], single=16, pair=8, seed=6)
    r, _ = frame_parts(g["node.frame"])
    fr = make_frame(r, torch.tensor([[1.0, -2.0, 0.5]], dtype=DT).expand(5, 3)).requires_grad_(True)
    blk = _ipa(lowering)
    out = blk(g, {**g.fields, "node.frame": fr})["node.s"]
    assert torch.isfinite(out).all()
    (d1,) = torch.autograd.grad(out.square().sum(), fr, retain_graph=True)
    assert torch.isfinite(d1).all()
    if lowering == "sparse":  # the dense backward is first-order (next test)
        (d1,) = torch.autograd.grad(out.square().sum(), fr, create_graph=True)
        (d2,) = torch.autograd.grad((d1 * torch.randn(d1.shape, dtype=DT)).sum(), fr)
        assert torch.isfinite(d2).all()


def test_second_derivatives_sparse_by_finite_differences_dense_refused():
    """The sparse lowering is twice differentiable (checked against finite differences of its
    first derivative); the dense one refuses a second derivative in one line, never a silently
    wrong one."""
    g = chains([3, 2], single=6, pair=3, seed=2, spread=3.0)
    fields = {"node.s": 6, "node.frame": "frame", "edge.z": 3}
    params = {"heads": 2, "scalar_qk": 3, "scalar_v": 2, "points_qk": 2, "points_v": 2}
    sparse = InvariantPointAttention.build({**params, "lowering": "sparse"}, fields, COMPLETE).to(DT)
    randomize(sparse, seed=4)

    def first(fr):
        out = sparse(g, {**g.fields, "node.frame": fr})["node.s"]
        return torch.autograd.grad(out.square().sum(), fr, create_graph=True)[0]

    fr = g["node.frame"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(first, (fr,), eps=1e-6, atol=1e-6, rtol=1e-5)
    dense = InvariantPointAttention.build({**params, "lowering": "dense"}, fields, COMPLETE).to(DT)
    dense.load_state_dict(sparse.state_dict())
    out = dense(g, {**g.fields, "node.frame": fr})["node.s"]
    with pytest.raises(KernelUnavailableError, match="set `lowering: sparse`"):
        torch.autograd.grad(out.square().sum(), fr, create_graph=True)
