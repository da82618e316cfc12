"""Coincident points, a single point and large coordinates: geometric blocks and specs stay finite.

Every norm, direction and ``sin(x)/x`` of a geometric quantity goes through
:mod:`graphdl.ops.geometry` (a smooth floor ``sqrt(‖r‖² + ε²)``), so outputs, first derivatives
(positions, vector inputs, every parameter) and second derivatives (what a force loss trains
through) are finite where points coincide. The default ``egnn`` stays finite, bounded and
trainable on coordinates up to 1e3.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from graphdl.compile.compiler import compile_spec, plan_spec
from graphdl.data.graph import Graph, collate
from graphdl.nn.base import BLOCKS, load_builtin_blocks
from graphdl.ops.geometry import SAFE_NORM_EPS, safe_norm, safe_sqrt, safe_unit, smooth_sinc
from graphdl.ops.neighbors import complete_graph
from graphdl.types import Irreps, parse_type, split_key

ROOT = Path(__file__).resolve().parents[2]
DTYPES = [torch.float64, torch.float32]


def _finite(t) -> bool:
    return t is None or bool(torch.isfinite(t).all())


# ----------------------------------------------------------------------------- the helpers
@pytest.mark.parametrize("dtype", DTYPES)
def test_safe_norm_value_and_derivatives_at_and_near_zero(dtype):
    r = torch.tensor([[0.0, 0.0, 0.0], [1e-30, 0.0, 0.0], [3e-6, -4e-6, 0.0], [3.0, -4.0, 12.0]], dtype=dtype,
                     requires_grad=True)
    d = safe_norm(r)
    exact = torch.tensor([0.0, 1e-30, 5e-6, 13.0], dtype=torch.float64)
    # bias 0 < ‖r‖_ε − ‖r‖ ≤ min(ε, ε²/(2‖r‖)), plus round-off of one sqrt of a sum of 3 squares
    bound = torch.minimum(torch.full_like(exact, SAFE_NORM_EPS), SAFE_NORM_EPS**2 / (2 * exact))
    eps = torch.finfo(dtype).eps
    assert ((d.double() - exact).abs() <= bound + 4 * eps * exact).all()
    (g,) = torch.autograd.grad(d.sum(), r, create_graph=True)
    assert torch.equal(g[0].detach(), torch.zeros(3, dtype=dtype))  # r / ‖r‖_ε at r = 0
    assert (g.detach().norm(dim=-1) <= 1 + 4 * eps).all()  # |∇‖r‖_ε| < 1 everywhere
    (h,) = torch.autograd.grad((g * torch.tensor([1.0, 2.0, 3.0], dtype=dtype)).sum(), r)
    assert _finite(h)
    # Hessian of ‖r‖_ε at 0 is I/ε: the second derivative of v·∇ along v = (1, 2, 3) is v/ε
    torch.testing.assert_close(h[0].double(), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64) / SAFE_NORM_EPS,
                               rtol=4 * eps, atol=0)


def test_safe_sqrt_eps_never_underflows_to_zero():
    x = torch.zeros(2, dtype=torch.float16, requires_grad=True)  # ε² = 1e-16 is 0 in float16
    y = safe_sqrt(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert (y > 0).all() and _finite(g)


@pytest.mark.parametrize("dtype", DTYPES)
def test_safe_unit_is_unit_away_from_zero_and_zero_at_zero(dtype):
    v = torch.tensor([[0.0, 0.0, 0.0], [0.6, 0.0, -0.8], [2e-3, 0.0, 0.0]], dtype=dtype, requires_grad=True)
    u = safe_unit(v)
    assert torch.equal(u[0].detach(), torch.zeros(3, dtype=dtype))
    # |u| = ‖v‖/‖v‖_ε = 1 − ε²/(2‖v‖²) to first order: 1.25e-11 at ‖v‖ = 2e-3; plus round-off
    norms = u[1:].detach().double().norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones(2, dtype=torch.float64), rtol=0,
                               atol=1.25e-11 + 4 * torch.finfo(dtype).eps)
    (g,) = torch.autograd.grad(u.sum(), v, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), v)
    assert _finite(g) and _finite(h)


def test_smooth_sinc_matches_torch_sinc_and_is_twice_differentiable_at_zero():
    x = torch.cat([torch.linspace(-3, 3, 6001, dtype=torch.float64), torch.tensor([0.0, 1e-300, 0.159, 0.16])])
    x.requires_grad_()
    y = smooth_sinc(x)
    # Taylor branch remainder (πx)^14/15! < 5e-17 at |πx| = 0.5; both sides are O(1): a few ulp
    torch.testing.assert_close(y, torch.sinc(x), rtol=0, atol=4 * torch.finfo(torch.float64).eps)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)
    assert _finite(g) and _finite(h)
    xd = x.detach()
    at0 = xd == 0
    assert torch.equal(g[at0].detach(), torch.zeros_like(g[at0]))
    # sinc''(0) = −π²/3; analytic sinc'' elsewhere; both branches to ~1e-13 (16 ulp of 2/y³ ≤ 16 at the switch,
    # times π² from the chain rule)
    torch.testing.assert_close(h[at0], torch.full_like(h[at0], -math.pi**2 / 3), rtol=1e-13, atol=0)
    far = xd.abs() > 0.1
    yy = math.pi * xd[far]
    ref = math.pi**2 * (-torch.sin(yy) / yy - 2 * torch.cos(yy) / yy**2 + 2 * torch.sin(yy) / yy**3)
    torch.testing.assert_close(h[far], ref, rtol=0, atol=1e-11)


# ----------------------------------------------------------------------------- every geometric block
FIELDS = {"node.h": 5, "node.h3": 3, "node.pos": "1o", "node.vel": "1o", "node.f": "2x0e + 1x1o + 1x2e",
          "edge.a": 1, "node.frame": "frame", "node.pos_backbone": "3x1o", "edge.z": 2}

CASES = {
    "egnn": [{"hidden": 8},
             {"hidden": 8, "vel": "node.vel", "edge_input": "edge.a", "attention": True, "norm_constant": 0.0},
             {"hidden": 8, "distance_feature": "squared", "normalize": False, "tanh": False}],
    "radial_field": [{"hidden": 8, "vel": "node.vel", "edge_input": "edge.a"}],
    "vector_linear": [{"vectors": ["node.vel"]}],
    "raw_coordinates": [{"inputs": ["node.pos", "node.vel"], "output": "node.raw"}],
    "as_vector": [{"input": "node.h3", "output": "node.v", "base": "node.pos"}],
    "edge_geometry": [{"num_basis": 6}, {"basis": "bessel", "envelope": "polynomial", "num_basis": 6},
                      {"basis": "bessel", "envelope": "none", "num_basis": 6}],
    "schnet": [{"filters": 8, "num_rbf": 6}],
    "tfn": [{"irreps_out": "4x0e + 2x1o + 1x2e", "edge_input": "edge.a", "num_basis": 4, "radial_hidden": [8]},
            {"input": "node.f", "irreps_out": "2x0e + 2x1o + 2x2e + 1x3o", "lmax": 3, "basis": "bessel",
             "num_basis": 4, "radial_hidden": [8]}],
    "se3_transformer": [{"irreps_out": "4x0e + 2x1o", "heads": 2, "edge_input": "edge.a", "num_basis": 4,
                         "radial_hidden": [8]},
                        {"input": "node.f", "irreps_out": "2x0e + 2x1o + 2x2e", "heads": 2, "basis": "bessel",
                         "num_basis": 4, "radial_hidden": [8]}],
    "irreps_concat": [{"inputs": ["node.h", "node.pos", "node.vel"], "output": "node.g"}],
    "irreps_select": [{"input": "node.f", "select": "1o", "output": "node.sel"}],
    "vector_out": [{"input": "node.f", "output": "node.vo", "add": "node.pos"}],
    "edge_displacement": [{"input": "node.pos", "output": "edge.disp", "scale": 0.5}],
    "vector_norm": [{"input": "node.vel", "output": "node.speed"}],
    "vector_dot": [{"inputs": ["node.vel", "node.pos"], "output": "node.vp"}],
    # frames: every residue's origin at the one point (coincident frames), its N, CA and C there too
    "ipa": [{"input": "node.h", "pair": "edge.z", "heads": 2, "points_qk": 2, "points_v": 2},
            {"input": "node.h", "pair": None, "heads": 1}],
    "frames_from_backbone": [{"input": "node.pos_backbone", "output": "node.fr"}],
    "backbone_update": [{"input": "node.h"}],
    "frame_stop_gradient": [{}],
}


def _geometric_blocks() -> set[str]:
    load_builtin_blocks()
    return {name for name, cls in BLOCKS.items()
            if cls.needs_positions or cls.equivariant or cls.family in ("geometric", "equivariant")}


def test_every_geometric_block_of_the_registry_is_covered():
    missing = _geometric_blocks() - set(CASES)
    assert not missing, f"add degenerate-geometry cases for {sorted(missing)}"


GEOMETRIES = ("coincident", "coincident_at_rest", "nearly_coincident", "single")


def _batch(dtype) -> Graph:
    """One batch of the :data:`GEOMETRIES` (graphs are independent: a NaN in any reaches the parameters)."""
    return collate([_graph(kind, dtype) for kind in GEOMETRIES])


def _graph(kind: str, dtype) -> Graph:
    """3 nodes at one point (complete graph), the same with every vector 0, 1e-6 apart, or 1 node alone."""
    gen = torch.Generator().manual_seed(7 + GEOMETRIES.index(kind))
    n = 1 if kind == "single" else 3
    ei = complete_graph(torch.zeros(n, dtype=torch.long))
    fields = {}
    for k, t in FIELDS.items():
        t = parse_type(t)
        rows = n if split_key(k)[0] == "node" else ei.size(1)
        fields[k] = torch.randn((rows,) + t.shape(), generator=gen, dtype=torch.float64)
    fields["node.pos"] = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64).expand(n, 3).clone()
    if kind == "nearly_coincident":
        fields["node.pos"] += 1e-6 * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.det(q).sign().view(-1, 1, 1)  # proper rotations, origins at the positions
    fields["node.frame"] = torch.cat([q, fields["node.pos"].unsqueeze(1)], 1)
    fields["node.pos_backbone"] = fields["node.pos"].repeat(1, 3)  # N, CA, C coincident
    if kind == "coincident_at_rest":
        fields["node.vel"] = torch.zeros(n, 3, dtype=torch.float64)
    return Graph(ei, n, {k: v.to(dtype) for k, v in fields.items()})


def _check_derivatives(outputs: dict, wrt: list, params: list, pos, what: str) -> None:
    """Outputs finite; d(loss)/d(wrt, params) finite; d(v · ∂loss/∂pos)/d(wrt, params) finite."""
    for k, v in outputs.items():
        assert _finite(v), f"{what}: output {k} is not finite"
    gen = torch.Generator().manual_seed(3)
    loss = sum((v * torch.randn(v.shape, generator=gen, dtype=torch.float64).to(v.dtype)).sum()
               for v in outputs.values() if v.requires_grad)
    if not torch.is_tensor(loss):
        return  # nothing depends on the inputs or parameters (plumbing of constant fields)
    grads = torch.autograd.grad(loss, wrt + params, create_graph=True, allow_unused=True)
    for i, gr in enumerate(grads):
        assert _finite(gr), f"{what}: first derivative wrt {'input' if i < len(wrt) else 'parameter'} #{i} not finite"
    g_pos = grads[next(i for i, w in enumerate(wrt) if w is pos)]
    if g_pos is None or not g_pos.requires_grad:
        return  # linear in the positions: no second derivative to speak of
    v = torch.randn(g_pos.shape, generator=gen, dtype=torch.float64).to(g_pos.dtype)
    second = torch.autograd.grad((g_pos * v).sum(), wrt + params, allow_unused=True)
    for i, gr in enumerate(second):
        assert _finite(gr), f"{what}: second derivative wrt {'input' if i < len(wrt) else 'parameter'} #{i} " \
                            f"not finite"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, params", [(n, p) for n, ps in CASES.items() for p in ps])
def test_geometric_block_is_finite_with_derivatives_at_degenerate_geometry(name, params, dtype):
    torch.manual_seed(0)
    block = BLOCKS[name].build(params, FIELDS).to(dtype)
    g = _batch(dtype)
    f = {k: (v.requires_grad_() if v.is_floating_point() else v) for k, v in g.fields.items()}
    wrt = [f[k] for k in block.sig.reads
           if parse_type(FIELDS[k]) in (Irreps.parse("1o"), Irreps.parse("3x1o"), parse_type("frame"))]
    pos = f["node.pos"]
    if not any(w is pos for w in wrt):
        wrt.append(pos)
    out = block(g, dict(f))
    _check_derivatives(out, wrt, [p for p in block.parameters() if p.requires_grad], pos,
                       f"{name} {params} ({dtype})")


# ----------------------------------------------------------------------------- every N-body / MMFF spec
SPECS = sorted(str(p.relative_to(ROOT / "specs")) for d in ("nbody", "mmff") for p in (ROOT / "specs" / d).glob("*.yaml"))
BUDGET = sorted(str(p.relative_to(ROOT / "specs")) for p in (ROOT / "specs" / "nbody" / "budget").glob("*.yaml"))


def _model_of(plan) -> tuple:
    s = plan.spec
    return [entry.raw for entry in s.layers], plan.inputs, s.graph, s.outputs, s.forces


def test_spec_lists_and_budget_specs_share_their_base_model():
    assert {"nbody/egnn.yaml", "nbody/tfn.yaml", "nbody/se3_transformer.yaml", "nbody/radial_field.yaml",
            "mmff/egnn.yaml", "mmff/schnet.yaml"} <= set(SPECS)
    assert len(BUDGET) >= 5
    # the budget specs change training only, so the checks of their base specs below cover their models
    for name in BUDGET:
        base = "nbody/" + Path(name).name
        assert base in SPECS and _model_of(plan_spec(str(ROOT / "specs" / name))) == \
            _model_of(plan_spec(str(ROOT / "specs" / base))), f"{name} has its own model: check it below too"


SPEC_GEOMETRIES = ("coincident", "coincident_at_rest", "single")


def _spec_graph(plan, kind: str) -> Graph:
    gen = torch.Generator().manual_seed(11 + SPEC_GEOMETRIES.index(kind))
    n = 1 if kind == "single" else 3
    ei = complete_graph(torch.zeros(n, dtype=torch.long))
    fields = {}
    for k, t in plan.inputs.items():
        rows = n if split_key(k)[0] == "node" else ei.size(1)
        fields[k] = torch.randn((rows,) + t.shape(), generator=gen, dtype=torch.float64)
        if isinstance(t, Irreps) and t.is_vector and kind == "coincident_at_rest":
            fields[k] = torch.zeros_like(fields[k])
    pos = plan.spec.graph.positions
    fields[pos] = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64).expand(n, 3).clone()
    return Graph(ei, n, fields)


@pytest.mark.parametrize("name", SPECS)
def test_spec_is_finite_with_derivatives_at_degenerate_geometry(name):
    """One batch: 3 coincident points; the same with every vector input 0; a single point."""
    plan = plan_spec(str(ROOT / "specs" / name))
    torch.manual_seed(0)
    model = compile_spec(plan, dtype=torch.float64).train()
    g = collate([_spec_graph(plan, kind) for kind in SPEC_GEOMETRIES])
    pos_key = plan.forces.positions if plan.forces is not None else plan.spec.graph.positions
    vectors = [k for k, t in plan.inputs.items() if isinstance(t, Irreps) and t.is_vector]
    fields = {k: (v.requires_grad_() if k in vectors else v) for k, v in g.fields.items()}
    out = model(Graph(g.edge_index, g.num_nodes, fields, batch=g.batch, num_graphs=g.num_graphs))
    # models with `forces: autograd` return −∂E/∂x already: the check's "second derivative" is then
    # the third of the energy, beyond what training needs; their first-order check covers E'' (forces in the loss)
    _check_derivatives(out, [fields[k] for k in vectors], list(model.parameters()), fields[pos_key],
                       name)


# ----------------------------------------------------------------------------- egnn at large coordinates
def _egnn_stack(**params):
    spec = {"graphdl": 1, "name": "egnn-scale", "inputs": {"node.h": 8, "node.pos": "1o"},
            "graph": {"kind": "complete"},
            "model": {"layers": [{"type": "egnn", "hidden": 32, "repeat": 4, **params}],
                      "outputs": ["node.h", "node.pos"]}}
    return compile_spec(spec)


SCALES = (1.0, 10.0, 100.0, 1000.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_default_egnn_is_finite_and_bounded_at_coordinate_scales_up_to_1e3(seed):
    torch.manual_seed(seed)
    model = _egnn_stack()  # float32, the default dtype
    gen = torch.Generator().manual_seed(seed)
    h, x0 = torch.randn(10, 8, generator=gen), torch.randn(10, 3, generator=gen)
    h_max = {}
    for s in SCALES:
        x = (x0 * s).requires_grad_()
        out = model(Graph(None, 10, {"node.h": h, "node.pos": x}))
        assert _finite(out["node.h"]) and _finite(out["node.pos"])
        # a layer moves a node by the mean over its neighbours of r/(‖r‖ + 1) · 15 tanh(·), each of norm
        # < coords_range = 15: 4 layers move it by less than 60, at any scale
        assert (out["node.pos"] - x).norm(dim=-1).max() < 4 * 15.0
        h_max[s] = float(out["node.h"].detach().abs().max())
        loss = out["node.h"].pow(2).mean() + (out["node.pos"] / s).pow(2).mean()
        grads = torch.autograd.grad(loss, [x, *model.parameters()], allow_unused=True)
        assert all(_finite(gr) for gr in grads), f"non-finite gradient at scale {s}"
    # h sees the scale only through log(1 + ‖r‖²): its largest value over the pairs grows from ≈ 3 at scale 1 to
    # ≈ 17 at 1e3 (a factor < 6), and the untrained network's response to it is at most about proportional, so
    # max |h| may grow by < 10 over three decades (measured: < 1.5). The paper's layer grows 80x by scale 10 alone.
    assert max(h_max.values()) < 10 * h_max[1.0], h_max


def test_paper_egnn_layer_blows_up_at_large_coordinates():
    """The behaviour the defaults avoid (why they differ from the paper): so this test can fail."""
    torch.manual_seed(0)
    model = _egnn_stack(distance_feature="squared", normalize=False, tanh=False)
    gen = torch.Generator().manual_seed(0)
    h, x0 = torch.randn(10, 8, generator=gen), torch.randn(10, 3, generator=gen)
    with torch.no_grad():
        small = model(Graph(None, 10, {"node.h": h, "node.pos": x0}))["node.h"].abs().max()
        big = model(Graph(None, 10, {"node.h": h, "node.pos": x0 * 100}))["node.h"].abs().max()
    assert not (big < 1e6 * small)  # 1e16 or NaN


def test_default_egnn_trains_at_coordinate_scale_100():
    """Learn an equivariant contraction towards the centroid, on 4 systems of 10 points at scale 100."""
    torch.manual_seed(0)
    model = _egnn_stack()
    gen = torch.Generator().manual_seed(5)
    s = 100.0
    graphs, targets = [], []
    for _ in range(4):
        x = torch.randn(10, 3, generator=gen) * s
        graphs.append(Graph(None, 10, {"node.h": torch.randn(10, 8, generator=gen), "node.pos": x}))
        targets.append(x.mean(0) + 0.8 * (x - x.mean(0)))
    g, y = collate(graphs), torch.cat(targets)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = ((model(g)["node.pos"] - y) / s).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    # the untrained model barely moves the points: loss ≈ 0.04 · E‖x − c‖²/(3 s²) ≈ 0.03. Measured after 30 Adam
    # steps: ≈ 1e-3; asserting a halving leaves room for another seed or BLAS. (The paper's layer: inf at step 0.)
    assert min(losses[-5:]) < 0.5 * losses[0], losses
