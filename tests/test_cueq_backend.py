"""cuEquivariance backend of tfn / se3_transformer: e3nn parity (outputs, gradients, checkpoints),
equivariance, backend choice, describe text, the missing-package error, and a CUDA-kernel test.

On a machine without CUDA the cuEquivariance path is its pure-torch fallback (``method="naive"``);
with CUDA and ``cuequivariance-ops-torch-cu12`` installed, ``test_cuda_kernels_match_e3nn`` compares
NVIDIA's fused kernels to e3nn: ``pytest tests/test_cueq_backend.py -m gpu``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from e3nn import o3

import graphdl.nn.cueq as cueq_mod
from graphdl.compile.compiler import compile_spec, plan_spec
from graphdl.data.graph import Graph, collate
from graphdl.errors import KernelUnavailableError, SpecError
from graphdl.nn.cueq import CueqLinear, CueqTensorProduct, choose_backend
from graphdl.nn.se3 import TFN, SE3Transformer
from graphdl.spec.model import parse_spec_text
from graphdl.testing.equivariance import assert_equivariant, random_graph_for
from graphdl.types import Irreps

pytest.importorskip("cuequivariance_torch", reason="cuequivariance-torch is not installed (pip install 'graphdl[cueq]')")

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = {"tfn": TFN, "se3_transformer": SE3Transformer}
IN = "2x0e + 1x0o + 2x1o + 1x1e + 1x2e"
OUT = "4x0e + 2x0o + 2x1o + 2x1e + 2x2e + 2x3o"  # every parity, l up to 3
FIELDS = {"node.h": IN, "node.pos": "1o", "edge.q": 1}
FALLBACK = "backend: cuequivariance (torch fallback, no CUDA kernels: no CUDA)"
# float64: both backends sum the same Clebsch-Gordan paths in another order; measured ≤ 3e-14 on outputs
# |y| ≤ 70 and ≤ 1.4e-12 on gradients up to 2.5e3 (≈ 2.5 eps·|g|), ≥ 70× below this bound, which still
# fails a float32 step (≈ 1e-7 relative)
TOL = {"atol": 1e-10, "rtol": 1e-10}


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _params(kind: str, **kw) -> dict:
    p = {"irreps_out": OUT, "lmax": 3, "edge_input": "edge.q", "num_basis": 6, "r_max": 3.0}
    p.update({"heads": 2} if kind == "se3_transformer" else {"avg_num_neighbors": 3.0})
    p.update(kw)
    return p


def _batch(seed: int = 0, dtype=torch.float64) -> Graph:
    """Two random graphs; node 0 receives no edge; one duplicated edge."""
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for n, e in ((7, 16), (5, 9)):
        src = torch.randint(0, n, (e,), generator=gen)
        dst = torch.randint(1, n, (e,), generator=gen)
        keep = src != dst
        ei = torch.stack([src[keep], dst[keep]])
        ei = torch.cat([ei, ei[:, :1]], 1)
        graphs.append(Graph(ei, n, {
            "node.h": torch.randn(n, Irreps.parse(IN).dim, generator=gen, dtype=dtype),
            "node.pos": 1.5 * torch.randn(n, 3, generator=gen, dtype=dtype),
            "edge.q": torch.randn(ei.shape[1], 1, generator=gen, dtype=dtype),
        }))
    return collate(graphs)


def _pair(kind: str, **kw):
    """The same block on e3nn and on cuEquivariance, holding e3nn's parameters."""
    torch.manual_seed(1)
    e3 = BLOCKS[kind].build(_params(kind, backend="e3nn", **kw), FIELDS)
    cu = BLOCKS[kind].build(_params(kind, backend="cuequivariance", **kw), FIELDS)
    cu.load_state_dict(e3.state_dict())  # strict: the checkpoint of one backend loads into the other
    return e3, cu


def _forward_backward(block, g: Graph):
    """Output and the gradients of a random projection of it w.r.t. parameters, features and positions."""
    fields = {k: v.clone().requires_grad_(True) for k, v in g.fields.items()}
    (out,) = block(g, fields).values()
    proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype)
    (out * proj).sum().backward()
    grads = {f"param {n}": p.grad for n, p in block.named_parameters()}
    grads.update({f"input {k}": v.grad for k, v in fields.items()})
    return out.detach(), grads


# ----------------------------------------------------------------------------- operations
@pytest.mark.parametrize("irreps_out", [OUT, "3x0e + 1x1o + 4x0e"])
def test_tensor_product_matches_e3nn_values_and_gradients(irreps_out):
    sh = "1x0e + 1x1o + 1x2e + 1x3o"
    e3 = o3.FullyConnectedTensorProduct(IN, sh, irreps_out, shared_weights=False, internal_weights=False)
    cu = CueqTensorProduct(Irreps.parse(IN), Irreps.parse(sh), Irreps.parse(irreps_out))
    assert cu.weight_numel == e3.weight_numel
    gen = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(11, e3.irreps_in1.dim, generator=gen), torch.randn(11, e3.irreps_in2.dim, generator=gen)
    w = torch.randn(11, e3.weight_numel, generator=gen)
    outs, grads = [], []
    for tp in (e3, cu):
        args = [t.clone().requires_grad_(True) for t in (x1, x2, w)]
        out = tp(*args)
        out.pow(2).sum().backward()
        outs.append(out.detach())
        grads.append([a.grad for a in args])
    assert outs[0].abs().max() > 1.0
    torch.testing.assert_close(outs[1], outs[0], **TOL)
    for ge, gc in zip(*grads):
        torch.testing.assert_close(gc, ge, **TOL)


def test_linear_matches_e3nn_with_the_same_state():
    ir_in, ir_out = "3x0e + 2x1o + 1x2e + 1x0e", "4x0e + 3x1o + 2x2e + 1x1e + 2x0o"  # 1e, 0o: no input path
    e3 = o3.Linear(ir_in, ir_out)
    cu = CueqLinear(Irreps.parse(ir_in), Irreps.parse(ir_out))
    assert {k: v.shape for k, v in cu.state_dict().items()} == {k: v.shape for k, v in e3.state_dict().items()}
    torch.testing.assert_close(cu.output_mask, e3.output_mask, atol=0, rtol=0)
    cu.load_state_dict(e3.state_dict())
    x = torch.randn(6, e3.irreps_in.dim)
    out = cu(x)
    torch.testing.assert_close(out, e3(x), **TOL)
    assert (out[:, e3.output_mask == 0] == 0).all() and out.abs().max() > 0.5


@pytest.mark.filterwarnings("ignore:cuequivariance_ops_torch is not available")
def test_kernel_dispatch_keeps_cpu_tensors_on_the_fallback_and_kernel_dtypes_fixed():
    """With ``kernels=True`` CPU tensors still take the torch path; ``.double()`` leaves the kernels' math dtype."""
    ir = Irreps.parse("2x0e + 1x1o")
    tp = CueqTensorProduct(ir, Irreps.parse("1x0e + 1x1o"), ir, kernels=True).double()
    ops = tp.ops
    x = torch.randn(3, ir.dim)
    assert ops.pick(x) is ops.naive
    dtypes = lambda m: {b.dtype for b in m.buffers() if b.is_floating_point()}
    assert dtypes(ops.fused32) == {torch.float32} and dtypes(ops.fused64) == {torch.float64}
    assert tp.state_dict() == {}
    e3 = o3.FullyConnectedTensorProduct("2x0e + 1x1o", "1x0e + 1x1o", "2x0e + 1x1o", shared_weights=False,
                                        internal_weights=False)
    y, w = torch.randn(3, 4), torch.randn(3, e3.weight_numel)
    torch.testing.assert_close(tp(x, y, w), e3(x, y, w), **TOL)


# ----------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("kind", list(BLOCKS))
@pytest.mark.parametrize("gate", [True, False], ids=["gate", "linear"])
def test_block_outputs_and_gradients_match_e3nn(kind, gate):
    e3, cu = _pair(kind, gate=gate)
    assert (e3.backend, cu.backend) == ("e3nn", "cuequivariance")
    assert type(cu.tp_v if kind == "se3_transformer" else cu.tp) is CueqTensorProduct
    assert type(cu.self_int) is CueqLinear
    g = _batch()
    out_e, grads_e = _forward_backward(e3, g)
    out_c, grads_c = _forward_backward(cu, g)
    assert out_e.abs().max() > 1e-2
    torch.testing.assert_close(out_c, out_e, **TOL)
    assert grads_c.keys() == grads_e.keys()
    for k in grads_e:
        assert grads_e[k] is not None and grads_e[k].abs().max() > 0, k
        torch.testing.assert_close(grads_c[k], grads_e[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")


def test_se3_queries_without_a_linear_path_match_e3nn():
    """Keys of an irrep the input lacks (3o): the query map has no weights and is zero on both backends."""
    e3, cu = _pair("se3_transformer", irreps_key="2x3o")
    assert cu.q.weight.numel() == 0 and e3.q.weight.numel() == 0
    g = _batch(2)
    out_e, grads_e = _forward_backward(e3, g)
    out_c, grads_c = _forward_backward(cu, g)
    torch.testing.assert_close(out_c, out_e, **TOL)
    for k in grads_e:
        torch.testing.assert_close(grads_c[k], grads_e[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_parameters_are_the_same_and_checkpoints_load_both_ways(kind):
    e3, cu = _pair(kind)
    shapes = lambda m: [(n, tuple(p.shape)) for n, p in m.named_parameters()]
    assert shapes(cu) == shapes(e3)  # same names, shapes and order: optimizer states carry over too
    # cuEquivariance -> e3nn: a fresh e3nn block takes the cuEquivariance block's state (strict)
    torch.manual_seed(9)
    e3_fresh = BLOCKS[kind].build(_params(kind, backend="e3nn"), FIELDS)
    g = _batch(1)
    assert not torch.allclose(e3_fresh(g, dict(g.fields))["node.h"], e3(g, dict(g.fields))["node.h"])
    e3_fresh.load_state_dict(cu.state_dict())
    torch.testing.assert_close(e3_fresh(g, dict(g.fields))["node.h"], e3(g, dict(g.fields))["node.h"],
                               atol=0, rtol=0)
    # a missing learned parameter is still an error
    sd = cu.state_dict()
    del sd["radial.0.weight"]
    with pytest.raises(RuntimeError, match="radial.0.weight"):
        e3_fresh.load_state_dict(sd)


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_cueq_block_is_e3_equivariant(kind):
    _, cu = _pair(kind)
    g = random_graph_for(FIELDS, sizes=(5, 6), scale=1.5)
    errs = assert_equivariant(cu, g, trials=1)  # graphdl.testing reads the block's declared types
    assert set(errs["node.h"]) == {"rotation", "reflection", "translation", "permutation"}


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_graph_without_edges(kind):
    e3, cu = _pair(kind)
    g = Graph(None, 4, {"node.h": torch.randn(4, Irreps.parse(IN).dim), "node.pos": torch.randn(4, 3),
                        "edge.q": torch.zeros(0, 1)})
    out = cu(g, dict(g.fields))["node.h"]
    torch.testing.assert_close(out, e3(g, dict(g.fields))["node.h"], **TOL)
    torch.testing.assert_close(out, cu._finish(g["node.h"], torch.zeros(4, cu.irreps_pre.dim)), **TOL)


def test_float32_inputs_run_in_float32():
    _, cu = _pair("tfn")
    cu = cu.float()
    g = _batch(dtype=torch.float32)
    out = cu(g, dict(g.fields))["node.h"]
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# ----------------------------------------------------------------------------- full specs
def _spec_with_backend(name: str, backend: str) -> dict:
    data = yaml.safe_load((ROOT / "specs" / name).read_text())
    data.pop("dataset", None)  # relative to the spec file; not needed to build the model
    for layer in data["model"]["layers"]:
        if layer["type"] in BLOCKS:
            layer["backend"] = backend
    return data


@pytest.mark.parametrize("name", ["nbody/tfn.yaml", "nbody/se3_transformer.yaml"])
def test_full_spec_parity_equivariance_and_describe(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    torch.manual_seed(0)
    e3 = compile_spec(_spec_with_backend(name, "e3nn"))
    cu = compile_spec(_spec_with_backend(name, "cuequivariance"))
    cu.load_state_dict(e3.state_dict())
    n_blocks = sum(1 for m in cu.modules() if isinstance(m, tuple(BLOCKS.values())))
    assert n_blocks >= 4
    assert cu.describe().count(FALLBACK) == n_blocks
    assert e3.describe().count("backend: e3nn") == n_blocks and "cuequivariance" not in e3.describe()
    auto = compile_spec(_spec_with_backend(name, "auto"))
    assert auto.describe().count("backend: e3nn (auto: no CUDA)") == n_blocks

    g = random_graph_for(e3.input_fields, sizes=(5, 5, 5), scale=2.0)
    outs = []
    for model in (e3, cu):
        model.zero_grad()
        out = model(g)["node.pos_pred"]
        (out - g["node.pos"]).pow(2).sum().backward()
        outs.append((out.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (out_e, gr_e), (out_c, gr_c) = outs
    assert (out_e - g["node.pos"]).abs().max() > 1e-3
    torch.testing.assert_close(out_c, out_e, **TOL)
    assert gr_c.keys() == gr_e.keys()
    for k in gr_e:
        torch.testing.assert_close(gr_c[k], gr_e[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")
    errs = assert_equivariant(cu, random_graph_for(cu.input_fields, sizes=(4, 5), scale=2.0), trials=1)
    assert set(errs["node.pos_pred"]) == {"rotation", "reflection", "translation", "permutation"}


# ----------------------------------------------------------------------------- backend choice
def _env(monkeypatch, cueq: bool, ops: bool, cuda: bool):
    monkeypatch.setattr(cueq_mod, "cueq_installed", lambda: cueq)
    monkeypatch.setattr(cueq_mod, "cueq_kernels_installed", lambda: ops)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)


@pytest.mark.parametrize("cueq, ops, cuda, auto, explicit", [
    (True, True, True, "backend: cuequivariance (auto: fused_tp CUDA kernels)",
     "backend: cuequivariance (fused_tp CUDA kernels)"),
    (True, False, True, "backend: e3nn (auto: cuequivariance-ops-torch not installed)",
     ("backend: cuequivariance (torch fallback, no CUDA kernels: cuequivariance-ops-torch not installed: "
      "pip install cuequivariance-ops-torch-cu12)")),
    (True, True, False, "backend: e3nn (auto: no CUDA)", FALLBACK),
    (True, False, False, "backend: e3nn (auto: no CUDA)", FALLBACK),
    (False, False, True, "backend: e3nn (auto: cuequivariance-torch not installed)", None),
])
def test_backend_choice(monkeypatch, cueq, ops, cuda, auto, explicit):
    _env(monkeypatch, cueq, ops, cuda)
    assert choose_backend("auto", "tfn").describe() == auto
    assert choose_backend("e3nn", "tfn").describe() == "backend: e3nn"
    if explicit is None:
        with pytest.raises(KernelUnavailableError):
            choose_backend("cuequivariance", "tfn")
    else:
        got = choose_backend("cuequivariance", "tfn")
        assert got.describe() == explicit
        assert got.kernels == (ops and cuda)


def test_missing_package_error_names_the_pip_command(monkeypatch):
    _env(monkeypatch, False, False, False)
    with pytest.raises(KernelUnavailableError,
                       match=r"^tfn: backend `cuequivariance` needs NVIDIA cuEquivariance, which is not installed; "
                             r"pip install 'graphdl\[cueq\]' \(= pip install cuequivariance-torch\), plus pip "
                             r"install cuequivariance-ops-torch-cu12 for its CUDA kernels; or use `backend: e3nn`"):
        TFN.build(_params("tfn", backend="cuequivariance"), FIELDS)
    text = """
graphdl: 1
inputs: {node.h: 4, node.pos: 1o}
model:
  layers:
    - {type: se3_transformer, irreps_out: "4x0e", backend: cuequivariance}
"""
    with pytest.raises(SpecError, match=r"t.yaml:6.*se3_transformer: backend `cuequivariance`.*pip install "
                                        r"'graphdl\[cueq\]'"):
        plan_spec(parse_spec_text(text, "t.yaml"))


# ----------------------------------------------------------------------------- CUDA kernels
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.skipif(not cueq_mod.cueq_kernels_installed(),
                    reason="needs cuequivariance-ops-torch-cu12 (pip install cuequivariance-ops-torch-cu12)")
@pytest.mark.parametrize("kind", list(BLOCKS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_cuda_kernels_match_e3nn(kind, dtype):
    e3, cu = _pair(kind)
    assert cu.backend_choice.kernels and cu.describe_extra() == "backend: cuequivariance (fused_tp CUDA kernels)"
    auto = BLOCKS[kind].build(_params(kind, backend="auto"), FIELDS)
    assert auto.backend == "cuequivariance"  # auto takes the kernels on CUDA
    e3, cu = e3.to("cuda", dtype), cu.to("cuda", dtype)
    tp = cu.tp_v if kind == "se3_transformer" else cu.tp
    assert tp.ops.pick(torch.zeros(1, device="cuda", dtype=dtype)) is not tp.ops.naive
    g = _batch(dtype=dtype).to("cuda")
    out_e, grads_e = _forward_backward(e3, g)
    out_c, grads_c = _forward_backward(cu, g)
    # float32 CUDA kernels: ~depth·eps32·|y| ≈ 1e-6 expected; 1e-4 ≈ 840 eps32 (not measured: no GPU here)
    tol = TOL if dtype == torch.float64 else {"atol": 1e-4, "rtol": 1e-4}
    torch.testing.assert_close(out_c, out_e, **tol)
    for k in grads_e:
        torch.testing.assert_close(grads_c[k], grads_e[k], **tol, msg=lambda m, k=k: f"{k}: {m}")
