"""e3nn blocks (tfn, se3_transformer, irreps plumbing): symmetry, types, errors, backend seam, specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from e3nn import o3

from graphdl.compile.compiler import compile_spec, plan_spec
from graphdl.data.graph import Graph, collate
from graphdl.data.nbody import NBodyCharged, NBodyChargedParams
from graphdl.errors import InferenceError, KernelUnavailableError, SpecError
from graphdl.nn.se3 import TFN, IrrepsConcat, IrrepsSelect, SE3Transformer, VectorOut
from graphdl.spec.model import parse_spec_text
from graphdl.testing.tolerance import roundoff
from graphdl.types import VECTOR, Irreps, Scalar, parse_type

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = {"tfn": TFN, "se3_transformer": SE3Transformer}
IN = "2x0e + 1x0o + 2x1o + 1x1e"
OUT = "4x0e + 2x0o + 2x1o + 2x1e + 2x2e"  # every parity and l<=2, so a wrong D or gate order shows
FIELDS = {"node.h": IN, "node.pos": "1o", "edge.q": 1}


@pytest.fixture(autouse=True)
def _float64():
    # e3nn computes its Clebsch-Gordan buffers in the default dtype: build in float64, not .double()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _params(kind: str, **kw) -> dict:
    p = {"irreps_out": OUT, "lmax": 2, "edge_input": "edge.q", "num_basis": 6, "r_max": 3.0}
    if kind == "se3_transformer":
        p["heads"] = 2
    else:
        p["avg_num_neighbors"] = 3.0
    p.update(kw)
    return p


def _random_batch(seed: int = 0) -> Graph:
    """Two random graphs (7 and 5 nodes) with a node of in-degree 0 and one duplicated edge."""
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for n, e in ((7, 16), (5, 9)):
        src = torch.randint(0, n, (e,), generator=gen)
        dst = torch.randint(1, n, (e,), generator=gen)  # node 0 receives nothing
        keep = src != dst
        ei = torch.stack([src[keep], dst[keep]])
        ei = torch.cat([ei, ei[:, :1]], 1)  # a multi-edge
        fields = {
            "node.h": torch.randn(n, Irreps.parse(IN).dim, generator=gen, dtype=torch.float64),
            "node.pos": torch.randn(n, 3, generator=gen, dtype=torch.float64),
            "edge.q": torch.randn(ei.shape[1], 1, generator=gen, dtype=torch.float64),
        }
        graphs.append(Graph(ei, n, fields))
    return collate(graphs)


def _build(kind: str, **kw):
    torch.manual_seed(1)
    return BLOCKS[kind].build(_params(kind, **kw), FIELDS).double()


def _run(block, g: Graph) -> torch.Tensor:
    (out,) = block(g, dict(g.fields)).values()
    return out


def _D(irreps: str, R: torch.Tensor) -> torch.Tensor:
    return o3.Irreps(irreps).D_from_matrix(R)


# ----------------------------------------------------------------------------- symmetry
def assert_e3_equivariant(block, g: Graph, irreps_in: str, irreps_out: str, R: torch.Tensor, t: torch.Tensor):
    """out(D_in h, R x + t) == D_out out(h, x), with edge scalars unchanged."""
    out = _run(block, g)
    moved = g.replace(node__h=g["node.h"] @ _D(irreps_in, R).T, node__pos=g["node.pos"] @ R.T + t)
    out_moved = _run(block, moved)
    expect = out @ _D(irreps_out, R).T
    assert out.abs().max() > 1e-3  # a zero output would pass trivially
    # float64, |out| ≤ 7: measured ≤ 4e-15 ≈ 3 eps·|out|; 1e-10 (≈ 7e4 eps·|out|) still fails a
    # float32 step
    torch.testing.assert_close(out_moved, expect, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("kind", list(BLOCKS))
@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "rotoreflection"])
@pytest.mark.parametrize("gate", [True, False], ids=["gate", "linear"])
def test_rotation_reflection_translation_equivariance(kind, improper, gate):
    torch.manual_seed(2)
    R = o3.rand_matrix(dtype=torch.float64)
    if improper:
        R = -R
    block = _build(kind, gate=gate)
    assert_e3_equivariant(block, _random_batch(), IN, OUT, R, torch.randn(3, dtype=torch.float64) * 5)


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_parity_odd_channels_flip_under_inversion(kind):
    """Inversion flips exactly the odd channels: a check the D-matrix test relies on."""
    block = _build(kind)
    g = _random_batch()
    out = _run(block, g)
    inv = _run(block, g.replace(node__h=g["node.h"] @ _D(IN, -torch.eye(3, dtype=torch.float64)).T,
                                node__pos=-g["node.pos"]))
    sign = torch.cat([torch.full((m * (2 * l + 1),), float(p)) for m, (l, p) in o3.Irreps(OUT)]).double()
    assert (sign < 0).any()
    # as in assert_e3_equivariant (exact here)
    torch.testing.assert_close(inv, out * sign, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_permutation_equivariance(kind):
    block = _build(kind)
    g = _random_batch()
    n = g.num_nodes
    perm = torch.randperm(n)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)
    fields = {k: (v[perm] if k.startswith("node.") else v) for k, v in g.fields.items()}
    gp = Graph(inv[g.edge_index], n, fields, batch=g.batch[perm], num_graphs=g.num_graphs)
    # the same sums in another order: measured ≤ 2e-16 at |out| ≤ 7; 1e-12 ≈ 650 eps·|out|
    torch.testing.assert_close(_run(block, gp), _run(block, g)[perm], atol=1e-12, rtol=1e-10)


def test_isolated_node_gets_self_interaction_only():
    block = _build("tfn")
    g = _random_batch()
    assert not (g.dst == 0).any()
    out = _run(block, g)
    expect = block._finish(g["node.h"][:1], torch.zeros(1, block.irreps_pre.dim, dtype=torch.float64))
    torch.testing.assert_close(out[:1], expect)


def test_se3_attention_weights_sum_to_one_per_head():
    """With values = 1 on every edge the aggregate is 1 per head where a node has in-edges."""
    block = _build("se3_transformer", gate=False, self_interaction=False)
    g = _random_batch()
    with torch.no_grad():
        h, y, emb = block._edge_inputs(g, dict(g.fields))
        w = block.radial(emb)
        k = block.tp_k(h[g.src], y, w[:, : block.n_k])
        q = block.q(h)[g.dst]
        from graphdl.ops.segment import segment_softmax, segment_sum

        alpha = segment_softmax((q * k) @ block.key_heads * block.scale, g.dst, g.num_nodes)
        total = segment_sum(alpha, g.dst, g.num_nodes)
    has_in = torch.bincount(g.dst, minlength=g.num_nodes) > 0
    # softmax weights over ≤ 17 in-edges sum to 1 up to ≤ 17 eps (float64); factor 64
    torch.testing.assert_close(total[has_in], torch.ones(int(has_in.sum()), 2, dtype=torch.float64),
                               rtol=0, atol=roundoff(1.0, 64))
    assert (total[~has_in] == 0).all()


# ----------------------------------------------------------------------------- backend seam
@pytest.mark.parametrize("kind", list(BLOCKS))
def test_auto_backend_equals_e3nn(kind, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # auto takes cuEquivariance on CUDA
    auto, e3 = _build(kind, backend="auto"), _build(kind, backend="e3nn")
    assert auto.backend == e3.backend == "e3nn"
    assert auto.describe_extra() == "backend: e3nn (auto: no CUDA)"
    assert e3.describe_extra() == "backend: e3nn"
    g = _random_batch()
    torch.testing.assert_close(_run(auto, g), _run(e3, g), atol=0, rtol=0)


def test_cuequivariance_request_raises_naming_the_package(monkeypatch):
    import graphdl.nn.cueq

    monkeypatch.setattr(graphdl.nn.cueq, "cueq_installed", lambda: False)  # more in tests/test_cueq_backend.py
    with pytest.raises(KernelUnavailableError, match=r"tfn: backend `cuequivariance`.*pip install cuequivariance-torch"):
        TFN.build(_params("tfn", backend="cuequivariance"), FIELDS)


def test_unknown_backend_is_a_spec_error():
    text = """
graphdl: 1
inputs: {node.h: 4, node.pos: 1o}
model:
  layers:
    - {type: tfn, irreps_out: "4x0e", backend: cueq}
"""
    with pytest.raises(SpecError, match=r"backend.*(auto|e3nn|cuequivariance)"):
        plan_spec(parse_spec_text(text, "t.yaml"))


# ----------------------------------------------------------------------------- types
@pytest.mark.parametrize("kind", list(BLOCKS))
def test_scalar_input_is_read_as_0e_and_output_type_is_irreps_out(kind):
    block = BLOCKS[kind].build({"irreps_out": "8x0e + 4x1o", "heads": 4} if kind != "tfn" else
                               {"irreps_out": "8x0e + 4x1o"}, {"node.h": 5, "node.pos": "1o"})
    assert block.sig.writes == {"node.h": Irreps.parse("8x0e + 4x1o")}
    assert block.irreps_in == Irreps.parse("5x0e")
    g = _random_batch()
    g = g.replace(node__h=torch.randn(g.num_nodes, 5, dtype=torch.float64))
    assert _run(block.double(), g).shape == (g.num_nodes, 8 + 12)


def test_output_order_follows_irreps_out_with_gate():
    # gate output is scalars first; the block restores the written order (checked by equivariance above)
    block = TFN.build({"irreps_out": "2x1o + 3x0e"}, {"node.h": "2x0e + 1x1o", "node.pos": "1o"})
    assert block.perm is not None and block.sig.writes["node.h"] == Irreps.parse("2x1o + 3x0e")
    R = o3.rand_matrix(dtype=torch.float64)
    assert_e3_equivariant(block.double(), _random_batch().replace(node__h=torch.randn(12, 5, dtype=torch.float64)),
                          "2x0e + 1x1o", "2x1o + 3x0e", R, torch.zeros(3, dtype=torch.float64))


def test_irreps_concat_select_and_vector_out_types_and_values():
    cat = IrrepsConcat.build({"inputs": ["node.a", "node.b", "node.v"], "output": "node.h"},
                             {"node.a": 1, "node.b": 2, "node.v": "1o"})
    assert cat.sig.writes == {"node.h": Irreps.parse("3x0e + 1x1o")}
    sel = IrrepsSelect.build({"input": "node.h", "output": "node.s"}, {"node.h": "2x0e + 1x1o + 1x0e"})
    assert sel.sig.writes == {"node.s": Scalar(3)}
    h = torch.arange(7.0).reshape(1, 7)
    torch.testing.assert_close(sel(None, {"node.h": h})["node.s"], torch.tensor([[0.0, 1.0, 5.0]]))
    vec = IrrepsSelect.build({"input": "node.h", "select": "1o"}, {"node.h": "2x0e + 1x1o"})
    assert vec.sig.writes == {"node.h": VECTOR}
    out = VectorOut.build({"input": "node.h", "add": "node.pos", "learned": False},
                          {"node.h": "2x0e + 1x1o + 1x2e", "node.pos": "1o"})
    assert out.sig.writes == {"node.pos_pred": VECTOR}
    h = torch.arange(10.0).reshape(1, 10)
    pos = torch.tensor([[100.0, 200.0, 300.0]])
    torch.testing.assert_close(out(None, {"node.h": h, "node.pos": pos})["node.pos_pred"],
                               torch.tensor([[102.0, 203.0, 304.0]]))
    learned = VectorOut.build({"input": "node.h"}, {"node.h": "2x0e + 3x1o"})
    R = o3.rand_matrix()
    h = torch.randn(4, 11)
    # float32 (and e3nn's float32 D): one linear map of 11 inputs, |out| ≤ 5: ≤ ~30 eps32·|out|;
    # 1e-5 ≈ 84 eps32
    torch.testing.assert_close(learned(None, {"node.h": h @ _D("2x0e + 3x1o", R).T})["node.pos_pred"],
                               learned(None, {"node.h": h})["node.pos_pred"] @ R.T, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kind", list(BLOCKS))
def test_positions_must_be_1o(kind):
    with pytest.raises(InferenceError, match=r"positions `node.pos` of type 1o.*found 3"):
        BLOCKS[kind].build(_params(kind), {**FIELDS, "node.pos": 3})
    with pytest.raises(InferenceError, match=r"positions `node.x` of type 1o.*found 1x1e"):
        BLOCKS[kind].build(_params(kind, positions="node.x"), {**FIELDS, "node.x": "1e"})


def test_unreachable_irreps_out_and_frame_input():
    with pytest.raises(InferenceError, match=r"irreps_out term 2e cannot be made from the input irreps 4x0e.*lmax=1"):
        TFN.build({"irreps_out": "4x0e + 1x2e", "lmax": 1}, {"node.h": 4, "node.pos": "1o"})
    with pytest.raises(InferenceError, match=r"reads `node.h` as e3nn irreps, but it is of type frame"):
        TFN.build({"irreps_out": "4x0e"}, {"node.h": "frame", "node.pos": "1o"})
    with pytest.raises(InferenceError, match=r"divisible by heads=4, but 2x1o is not"):
        SE3Transformer.build({"irreps_out": "8x0e + 2x1o"}, {"node.h": 4, "node.pos": "1o"})


def test_irreps_in_mismatch_in_a_stack_is_a_spec_error_with_place():
    head = """
graphdl: 1
inputs: {node.h: 4, node.pos: 1o}
model:
  layers:
    - {type: tfn, irreps_out: "8x0e + 4x1o"}
"""
    with pytest.raises(SpecError, match=r"t.yaml:7.*residual.*8x0e \+ 4x1o -> 8x0e \+ 2x1o"):
        plan_spec(parse_spec_text(head + '    - {type: tfn, irreps_out: "8x0e + 2x1o", residual: true}\n', "t.yaml"))
    with pytest.raises(SpecError, match=r"t.yaml:7.*is not equivariant and cannot read field `node.h` of type "
                                        r"8x0e \+ 4x1o"):
        plan_spec(parse_spec_text(head + "    - {type: linear, out_dim: 2}\n", "t.yaml"))
    ok = plan_spec(parse_spec_text(head + "    - {type: irreps_select, output: node.s}\n"
                                   "    - {type: linear, input: node.s, out_dim: 2}\n", "t.yaml"))
    assert ok.outputs == {"node.s": Scalar(2)}


def test_bad_irreps_string_is_a_spec_error():
    text = """
graphdl: 1
inputs: {node.h: 4, node.pos: 1o}
model:
  layers:
    - {type: tfn, irreps_out: "8x0q"}
"""
    with pytest.raises(SpecError, match=r"irreps_out.*not an irreps string"):
        plan_spec(parse_spec_text(text, "t.yaml"))


# ----------------------------------------------------------------------------- specs
def _nbody_batch(tmp_path) -> Graph:
    params = NBodyChargedParams(n_train=4, n_val=2, n_test=2, frame_stride=10, input_frame=3, target_frame=4)
    ds = NBodyCharged.load(params, cache_dir=str(tmp_path))
    return collate([ds.graphs[i] for i in range(4)])


@pytest.mark.parametrize("name", ["nbody/tfn.yaml", "nbody/se3_transformer.yaml"])
def test_nbody_specs_plan_forward_and_symmetry(name, tmp_path):
    from graphdl.testing.equivariance import assert_equivariant, random_graph_for

    plan = plan_spec(str(ROOT / "specs" / name))
    assert plan.outputs == {"node.pos_pred": VECTOR}
    assert plan.spec.graph.kind == "complete"
    model = compile_spec(plan)  # float64 (fixture)
    desc = model.describe()  # auto: cuEquivariance on a CUDA machine with its kernels, else e3nn
    assert "backend: e3nn" in desc or "backend: cuequivariance" in desc
    # graphdl.testing's type-driven checks: rotation, reflection, translation, permutation
    errs = assert_equivariant(model, random_graph_for(model.input_fields, sizes=(4, 5), scale=2.0), trials=1)
    assert set(errs["node.pos_pred"]) == {"rotation", "reflection", "translation", "permutation"}
    model = model.float()  # the dataset is float32
    batch = _nbody_batch(tmp_path)
    out = model(batch)["node.pos_pred"]
    assert out.shape == (20, 3) and out.dtype == torch.float32 and torch.isfinite(out).all()
    loss = ((out - batch["node.target_pos"]) ** 2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(gr is not None and torch.isfinite(gr).all() for gr in grads)


def test_tfn_spec_graph_output_is_invariant():
    plan = plan_spec(str(ROOT / "specs" / "tfn.yaml"))
    assert plan.outputs == {"graph.y": Scalar(1)}
    model = compile_spec(plan, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    g = collate([Graph(None, n, {"node.h": torch.randn(n, 16, generator=gen, dtype=torch.float64),
                                 "node.pos": 2 * torch.randn(n, 3, generator=gen, dtype=torch.float64)})
                 for n in (6, 9)])
    y = model(g)["graph.y"]
    R = -o3.rand_matrix(dtype=torch.float64)
    y2 = model(g.replace(node__pos=g["node.pos"] @ R.T + 3.0))["graph.y"]
    assert y.shape == (2, 1)
    torch.testing.assert_close(y2, y, atol=1e-10, rtol=1e-9)  # float64 invariance, as above (exact here)


def test_parse_type_roundtrip_of_written_irreps():
    assert parse_type(str(Irreps.parse(OUT))) == Irreps.parse(OUT)



@pytest.mark.parametrize("kind", list(BLOCKS))
def test_graph_without_edges_gives_self_interaction(kind):
    block = _build(kind)
    n = 4
    g = Graph(None, n, {"node.h": torch.randn(n, Irreps.parse(IN).dim), "node.pos": torch.randn(n, 3),
                        "edge.q": torch.zeros(0, 1)})
    out = _run(block, g)
    torch.testing.assert_close(out, block._finish(g["node.h"], torch.zeros(n, block.irreps_pre.dim)))
    assert out.abs().max() > 1e-3
