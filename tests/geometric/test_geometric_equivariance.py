"""Geometric blocks and N-body/SchNet specs: equivariance in float64, refusals, detection of broken models."""

from pathlib import Path

import pytest
import torch

from graphdl.compile.compiler import plan_spec
from graphdl.errors import SpecError
from graphdl.geometric.commands import verify_spec
from graphdl.nn import egnn as egnn_mod
from graphdl.nn.base import block_type
from graphdl.testing.equivariance import (
    assert_equivariant,
    assert_permutation_equivariant,
    irreps_matrix,
    random_graph_for,
    random_rotation,
)
from graphdl.types import Irreps

ROOT = Path(__file__).resolve().parents[2]

FIELDS = {"node.h": 6, "node.pos": "1o", "node.vel": "1o", "edge.a": 2}

BLOCKS = [
    ("egnn", {"hidden": 16}),
    ("egnn", {"hidden": 16, "vel": "node.vel", "edge_input": "edge.a", "attention": True, "normalize": True}),
    ("egnn", {"hidden": 16, "out_dim": 8, "aggr": "mean", "coords_agg": "sum", "tanh": True, "coords_range": 2.0}),
    ("egnn", {"hidden": 16, "update_pos": False, "coords_agg": 0.25}),
    ("radial_field", {"hidden": 16, "vel": "node.vel", "edge_input": "edge.a"}),
    ("vector_linear", {"vectors": ["node.vel"], "output": "node.pred", "init": 0.7}),
    ("schnet", {"filters": 16, "num_rbf": 8, "cutoff": 3.0}),
    ("edge_geometry", {"basis": "gaussian", "num_basis": 8, "cutoff": 3.0}),
    ("edge_geometry", {"basis": "bessel", "num_basis": 6, "cutoff": 3.0, "envelope": "polynomial"}),
]


def _graph():
    return random_graph_for(FIELDS, sizes=(4, 6, 5), degree=3, seed=3)


@pytest.mark.parametrize("name,params", BLOCKS, ids=[f"{b}-{i}" for i, (b, _) in enumerate(BLOCKS)])
def test_block_is_equivariant_in_float64(name, params):
    cls = block_type(name)
    assert cls.equivariant and cls.needs_positions
    block = cls.build(params, FIELDS).double()
    errs = assert_equivariant(block, _graph(), trials=2)
    # the check ran on every declared output, and the outputs are not trivially constant
    assert set(errs) == set(block.sig.writes)
    out = block(_graph(), {k: v for k, v in _graph().fields.items()})
    assert all(v.abs().max() > 0 for v in out.values())


def test_broken_weight_path_is_caught(monkeypatch):
    """An EGNN whose edge network also sees a raw coordinate must fail the rotation check."""
    block = block_type("egnn").build({"hidden": 16}, FIELDS).double()
    g = _graph()
    assert_equivariant(block, g)
    real = egnn_mod._rel

    def leaky(graph, pos):
        r, d2 = real(graph, pos)
        return r, d2 + pos[graph.dst][:, :1]  # x-coordinate of the receiver: not invariant

    monkeypatch.setattr(egnn_mod, "_rel", leaky)
    with pytest.raises(AssertionError, match=r"`node\.(h|pos)` is not (rotation|reflection|translation)-equivariant"):
        assert_equivariant(block, g)
    # still permutation equivariant: the leak is per node, not per index
    assert_permutation_equivariant(block, g)


def test_permutation_check_catches_index_dependence(monkeypatch):
    block = block_type("egnn").build({"hidden": 16, "update_pos": False}, FIELDS).double()
    g = _graph()
    real = block.forward

    def by_index(graph, f):
        out = real(graph, f)
        idx = torch.arange(graph.num_nodes, dtype=torch.float64)[:, None]
        return {k: v + idx for k, v in out.items()}

    monkeypatch.setattr(block, "forward", by_index)
    with pytest.raises(AssertionError, match="permutation"):
        assert_permutation_equivariant(block, g)


def test_irreps_matrix_is_a_representation():
    gen = torch.Generator().manual_seed(0)
    t = Irreps.parse("2x0e + 1x1o + 1x2e + 1x0o + 1x3o")
    a, b = random_rotation(generator=gen), random_rotation(generator=gen, improper=True)
    da, db, dab = irreps_matrix(t, a), irreps_matrix(t, b), irreps_matrix(t, a @ b)
    # float64 Wigner blocks solved by least squares (l ≤ 3, dim 18): measured 8e-16 ≈ 4 eps;
    # 1e-12 ≈ 4500 eps
    assert torch.allclose(da @ db, dab, atol=1e-12, rtol=0)
    assert torch.allclose(da @ da.T, torch.eye(t.dim, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.equal(irreps_matrix(Irreps.parse("1o"), b), b)
    # 0o flips sign, 2e does not, under an improper element
    assert irreps_matrix(Irreps.parse("0o"), b).item() == -1.0
    from e3nn import o3

    # e3nn's D_from_matrix goes through float32 constants: ~eps32 = 1.2e-7 per entry (measured 9e-7 for
    # l ≤ 3, |D| ≤ 1); atol 1e-5 ≈ 84 eps32
    assert torch.allclose(irreps_matrix(t, b), o3.Irreps(str(t)).D_from_matrix(b), atol=1e-5)


def _geometric_specs() -> list[str]:
    """Every spec under specs/ that declares a vector or irreps input, except the baselines that
    opt out of equivariance on purpose (`raw_coordinates`; checked to be reported below)."""
    import json

    from graphdl.spec.loader import load_spec

    found = []
    for path in sorted((ROOT / "specs").rglob("*.yaml")):
        data = load_spec(str(path)).data  # `extends:` resolved
        if "raw_coordinates" in json.dumps(data.get("model")):
            continue
        inputs = data.get("inputs") or {}
        if any(isinstance(t, str) and ("1o" in t or "1e" in t or "x" in t) for t in inputs.values()):
            found.append(str(path.relative_to(ROOT / "specs")))
    return found


GEOMETRIC_SPECS = _geometric_specs()


def test_the_geometric_spec_list_is_complete():
    for name in ("nbody/egnn.yaml", "nbody/radial_field.yaml", "nbody/linear.yaml", "nbody/tfn.yaml",
                 "nbody/se3_transformer.yaml", "nbody/budget/egnn.yaml", "schnet.yaml", "tfn.yaml"):
        assert name in GEOMETRIC_SPECS, name
    assert "nbody/gnn.yaml" not in GEOMETRIC_SPECS and "nbody/budget/gnn.yaml" not in GEOMETRIC_SPECS
    assert "gcn.yaml" not in GEOMETRIC_SPECS


@pytest.mark.parametrize("spec", GEOMETRIC_SPECS)
def test_geometric_specs_pass_verify(spec):
    res = verify_spec(ROOT / "specs" / spec, trials=2)
    # errors are relative to max(1, max|out|). float64: measured ≤ 1e-15 (≈ 5 eps64) for every spec since
    # compile_spec builds a float64 model under float64 as the default dtype (e3nn's constants exact in it);
    # 1e-12 ≈ 4500 eps64 allows a deep stack's accumulated rounding and still fails a float32 step (≥ 1e-8).
    # float32: ≤ 4.2e-7 ≈ 3.5 eps32; 1e-4 ≈ 840 eps32 leaves room for deeper specs added later (a broken
    # symmetry gives O(1) in float64 anyway)
    for out, checks in res["float64"].items():
        for check, err in checks.items():
            if err is None:  # n/a: reflections of a model with frames (IPA), not a symmetry of frames
                assert check == "reflection" and spec.startswith("ipa/"), (spec, out, check)
                continue
            assert err < 1e-12, (spec, out, check, err)
        for check, err in res["float32"][out].items():
            assert err is None or err < 1e-4, (spec, out, check, err)


def test_gnn_baseline_is_reported_not_equivariant():
    res = verify_spec(ROOT / "specs" / "nbody" / "gnn.yaml", trials=2)["float64"]["node.pred"]
    assert res["rotation"] > 1e-2 and res["reflection"] > 1e-2 and res["translation"] > 1e-2
    assert res["permutation"] < 1e-9  # verify's float64 default; measured 2e-16


def test_broken_spec_is_refused_naming_block_and_field():
    with pytest.raises(SpecError) as e:
        plan_spec(str(ROOT / "tests" / "geometric" / "broken_mlp_on_positions.yaml"))
    msg = str(e.value)
    assert "mlp" in msg and "`node.pos`" in msg and "1x1o" in msg and ":10:" in msg


def test_verify_cli_exit_codes(capsys):
    from graphdl.cli import main

    assert main(["verify", str(ROOT / "specs" / "nbody" / "linear.yaml"), "--trials", "1"]) == 0
    assert "equivariant" in capsys.readouterr().out
    assert main(["verify", str(ROOT / "specs" / "nbody" / "gnn.yaml"), "--trials", "1"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_vector_blocks_refuse_scalar_positions():
    with pytest.raises(Exception, match="vector field of type 1o"):
        block_type("egnn").build({}, {"node.h": 4, "node.pos": 3})
