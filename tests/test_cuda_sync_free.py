"""No host syncs in a block's forward + backward on CUDA.

Each block family's spec (``specs/*.yaml`` and the geometric ones below) is compiled, run once on a
random batch (the first call may build and cache the CSR, the graph of the spec, e3nn code), then run
again under ``torch.cuda.set_sync_debug_mode("error")``: any ``.item()``, ``int(tensor)``,
``nonzero`` without a size or device-to-host copy in the second forward + backward raises. Without
CUDA the GPU test skips; the CPU test runs the same harness, so a spec it cannot run fails here
rather than on the first GPU.
"""

from __future__ import annotations

import pytest
import torch
from docs_runner import ROOT

from graphdl.compile import compile_spec
from graphdl.testing.equivariance import random_graph_for

SPECS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "specs").glob("*.yaml")) + [
    "specs/nbody/egnn.yaml", "specs/nbody/se3_transformer.yaml", "specs/ipa/backbone_ipa.yaml", "specs/mmff/schnet.yaml", "specs/gns/nbody.yaml"]


def _step(model, g) -> torch.Tensor:
    out = model(g)
    loss = sum(v.float().pow(2).mean() for v in out.values() if v.is_floating_point())
    loss.backward()
    return loss


def _prepared(spec: str, device: str):
    torch.manual_seed(0)
    model = compile_spec(str(ROOT / spec)).to(device)
    g = random_graph_for(model.input_fields, (5, 6, 7), degree=3, dtype=torch.float32).to(device)
    g = model.prepare(g)
    _step(model, g)  # warm: caches (CSR, transpose, normalisation) are built here, syncs allowed
    model.zero_grad(set_to_none=True)
    return model, g


@pytest.mark.parametrize("spec", SPECS)
def test_harness_runs_each_spec_on_cpu(spec):
    model, g = _prepared(spec, "cpu")
    loss = _step(model, g)
    assert torch.isfinite(loss), f"{spec}: loss {loss}"
    assert any(p.grad is not None for p in model.parameters()), f"{spec}: no parameter got a gradient"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", SPECS)
def test_forward_backward_has_no_host_sync_on_cuda(spec):
    model, g = _prepared(spec, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = _step(model, g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss.detach().cpu()), f"{spec}: loss {loss}"
