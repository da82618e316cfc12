"""`model.forces: autograd`: F = −∂E/∂positions, its symmetry, its graph, and its spec errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from graphdl.compile.compiler import compile_spec, plan_spec
from graphdl.data.graph import Graph
from graphdl.errors import SpecError
from graphdl.geometric.commands import verify_spec
from graphdl.spec.model import parse_spec_text
from graphdl.testing.equivariance import assert_equivariant, random_rotation
from graphdl.testing.tolerance import central_difference_bound, roundoff
from graphdl.types import VECTOR

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "mmff" / "egnn.yaml"

# acetic acid with hydrogens: C C O O H H H H, bonds and a slightly distorted geometry (Å)
POS = [[0.00, 0.00, 0.00], [1.51, 0.02, -0.01], [2.12, 1.07, 0.03], [2.15, -1.18, -0.02],
       [-0.38, 1.02, 0.05], [-0.37, -0.53, 0.88], [-0.36, -0.49, -0.91], [3.10, -1.05, 0.01]]
ELEM = [1, 1, 3, 3, 0, 0, 0, 0]  # index into H C N O ...
BONDS = [(0, 1, 1.0), (1, 2, 2.0), (1, 3, 1.0), (0, 4, 1.0), (0, 5, 1.0), (0, 6, 1.0), (3, 7, 1.0)]


def molecule(dtype=torch.float64) -> Graph:
    src = [a for a, b, _ in BONDS] + [b for a, b, _ in BONDS]
    dst = [b for a, b, _ in BONDS] + [a for a, b, _ in BONDS]
    order = [o for *_, o in BONDS] * 2
    atom = torch.zeros(len(ELEM), 10, dtype=dtype)
    atom[torch.arange(len(ELEM)), torch.tensor(ELEM)] = 1.0
    return Graph(torch.tensor([src, dst]), len(ELEM),
                 {"node.pos": torch.tensor(POS, dtype=dtype), "node.atom": atom,
                  "edge.bond_order": torch.tensor(order, dtype=dtype).unsqueeze(-1)})


def two_molecules(dtype=torch.float64) -> Graph:
    from graphdl.data.graph import collate

    a = molecule(dtype)
    b = a.replace(node__pos=a["node.pos"] * 1.02 + 0.1)
    return collate([a, b])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    m = compile_spec(SPEC, dtype=torch.float64)
    # the untrained energy is nearly flat; larger weights make the checks below non-trivial
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)
    return m.eval()


def test_forces_equal_minus_finite_difference_of_energy(model):
    g = molecule()
    out = model(g)
    f = out["node.forces"]
    assert f.shape == (8, 3) and out["graph.energy"].shape == (1, 1)
    assert not f.requires_grad  # eval outside a grad context: nothing kept
    assert f.abs().max() > 1e-2  # not a flat energy
    pos = g["node.pos"]
    # Central differences D(h) = −(E(x+h) − E(x−h)) / 2h differ from −∂E/∂x by
    #   round-off  ≤ c·eps·|E|/h   (each E carries ≤ c·eps·|E|; measured c ≈ 8 from the h → 0 noise, and
    #              E spreads by ≤ 13 eps·|E| over rotations; c = 64 leaves 8× for other BLAS orders)
    #   truncation = h²/6·|E‴|     (estimated per coordinate from D(2h) − D(h) = 3 × truncation, ×2)
    # |E| ≈ 4.6e3 and |E‴| ≤ 1.5e5 here: h = (3c·eps·|E| / 2|E‴|)^(1/3) ≈ 1e-5 balances the two,
    # a bound of ≤ 1.2e-5. (The old h = 1e-6 with atol 1e-8 + rtol 1e-6 sat below its own round-off,
    # up to 4e-6 measured, 6e-5 bound: it failed on other BLAS orders.)
    h = 1e-5
    fd = {}
    for step in (h, 2 * h):
        fd[step] = torch.zeros_like(pos)
        for i in range(pos.size(0)):  # test-side loop over coordinates
            for k in range(3):
                d = torch.zeros_like(pos)
                d[i, k] = step
                ep = model(g.replace(node__pos=pos + d))["graph.energy"].sum()
                em = model(g.replace(node__pos=pos - d))["graph.energy"].sum()
                fd[step][i, k] = -(ep - em) / (2 * step)
    energy = float(out["graph.energy"].detach().abs().max())
    bound = central_difference_bound(fd[h], fd[2 * h], h, energy, factor=64)
    err = (f - fd[h]).abs()
    worst = int((err / bound).argmax())
    assert (err <= bound).all(), (float(err.flatten()[worst]), float(bound.flatten()[worst]))
    # the check can fail: a force off by ≥ 1e-3 of itself (or of the wrong sign) is > 2·bound from F,
    # so > bound from FD
    assert (2 * bound < 1e-3 * f.abs()).all(), float((bound / f.abs()).max())
    # translation invariance of E: the forces of a graph sum to zero up to the round-off of summing
    # 8 forces built from per-edge terms (measured ≤ 1.3 eps·max|F|; factor 64)
    torch.testing.assert_close(f.sum(0), torch.zeros(3, dtype=f.dtype), rtol=0, atol=roundoff(f, factor=64))


def test_forces_are_differentiable_in_the_positions(model):
    """Positions that require grad get forces with their own graph (Hessian-vector products)."""
    g = molecule()
    pos = g["node.pos"].clone().requires_grad_(True)

    def forces(x):
        return model(g.replace(node__pos=x))["node.forces"]

    assert forces(pos).requires_grad
    # ∂F/∂x by autograd through the forces' own graph, against central differences of F. The bound
    # comes from the same run, not from constants measured on one model: round-off c·eps·max|F|/h
    # (c = 256: F is itself a backward pass, measured c ≈ 28 from the h → 0 noise) plus the truncation
    # h²/6·|F‴| estimated per entry by Richardson from the steps h and 2h (×2).
    jac = torch.autograd.functional.jacobian(lambda x: forces(x).reshape(-1), pos).reshape(24, 24)
    h = 1e-5
    fd = {}
    with torch.no_grad():
        f0 = forces(pos.detach())
        for step in (h, 2 * h):
            cols = []
            for j in range(24):  # test-side loop over coordinates
                d = torch.zeros(24, dtype=pos.dtype)
                d[j] = step
                d = d.reshape(8, 3)
                cols.append(((forces(pos.detach() + d) - forces(pos.detach() - d)) / (2 * step)).reshape(-1))
            fd[step] = torch.stack(cols, 1)
    bound = central_difference_bound(fd[h], fd[2 * h], h, float(f0.abs().max()), factor=256)
    err = (jac - fd[h]).abs()
    worst = int((err / bound).argmax())
    assert (err <= bound).all(), (float(err.flatten()[worst]), float(bound.flatten()[worst]))
    # the check can fail: a Hessian off by 1e-3 of its scale is beyond twice every entry's bound
    assert float(2 * bound.max()) < 1e-3 * float(jac.abs().max()), (float(bound.max()), float(jac.abs().max()))


def test_batched_forces_match_one_graph_at_a_time(model):
    b = two_molecules()
    out = model(b)
    one = model(molecule())
    # same sums in another order (batched matmuls): measured ≤ 16 eps·max|F|; factor 256
    atol = roundoff(one["node.forces"], factor=256)
    torch.testing.assert_close(out["node.forces"][:8], one["node.forces"], rtol=0, atol=atol)
    assert (out["node.forces"][8:] - one["node.forces"]).abs().max() > 1e-4


def test_energy_invariant_forces_rotate(model):
    b = two_molecules()
    errs = assert_equivariant(model, b, trials=3)
    assert set(errs) == {"graph.energy", "node.forces"}
    # the check is not vacuous: rotated inputs give different force vectors, equal to R F
    rot = random_rotation(torch.float64, torch.Generator().manual_seed(1), improper=True)
    f = model(b)["node.forces"]
    f_rot = model(b.replace(node__pos=b["node.pos"] @ rot.T + 1.5))["node.forces"]
    assert (f_rot - f).abs().max() > 1e-3
    # rounding of R·x + t moves the forces by ~eps·|x|·|∂F/∂x|: measured ≤ 65 eps·max|F| over 30
    # rotations; factor 1024
    torch.testing.assert_close(f_rot, f @ rot.T, rtol=0, atol=roundoff(f, factor=1024))


def test_verify_checks_forces_as_vectors():
    plan = plan_spec(SPEC)
    assert plan.outputs["node.forces"] == VECTOR and plan.stack_outputs == ["graph.energy"]
    res = verify_spec(SPEC, trials=2)
    assert set(res["float64"]) == {"graph.energy", "node.forces"}
    # verify's float64 default; errors are relative to max(1, max|F|): measured ≤ 65 eps = 1.4e-14,
    # a broken symmetry gives O(1)
    assert all(e <= 1e-9 for e in res["float64"]["node.forces"].values())


def test_verify_cli_exit_zero(capsys):
    from graphdl.cli import main

    assert main(["verify", str(SPEC), "--trials", "1"]) == 0
    out = capsys.readouterr().out
    assert "node.forces   rotation" in out and "equivariant" in out


def test_training_mode_keeps_the_graph_of_the_forces(model):
    """A loss on the forces alone reaches every weight (create_graph while training)."""
    m = compile_spec(model.plan, dtype=torch.float64)
    m.load_state_dict(model.state_dict())
    m.train()
    out = m(molecule())
    assert out["node.forces"].requires_grad
    out["node.forces"].pow(2).sum().backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    # the atomwise MLP's output bias shifts every energy by a constant: forces do not see it
    assert grads.pop("blocks.6.mlp.2.bias") is None
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads.values()), \
        [n for n, g in grads.items() if g is None or float(g.abs().sum()) == 0]


def test_no_grad_callers_get_forces_and_no_graph(model):
    with torch.no_grad():
        out = model(molecule())
    assert out["node.forces"].abs().max() > 1e-2 and not out["node.forces"].requires_grad
    torch.testing.assert_close(out["node.forces"], model(molecule())["node.forces"])


def test_describe_and_resolved_spec_name_the_forces():
    m = compile_spec(SPEC)
    text = m.describe()
    assert "node.forces: 1x1o" in text and "node.forces = −∂graph.energy/∂node.pos, computed by autograd" in text


# ------------------------------------------------------------------------ spec errors
BASE = """graphdl: 1
inputs: {{node.atom: 10, node.pos: 1o, node.vel: 1o}}
graph: {{kind: radius, cutoff: 4.0}}
model:
  layers:
    - {{type: linear, input: node.atom, output: node.h, out_dim: 8}}
    - {{type: egnn, input: node.h, pos: node.pos, hidden: 8, update_pos: false}}
    - {{type: readout, input: node.h, output: graph.h, reduce: sum}}
    - {{type: linear, input: graph.h, output: graph.energy, out_dim: {width}}}
  outputs: {outputs}
  forces: {forces}
"""


def plan_of(forces="autograd", outputs="[graph.energy]", width=1, inputs=None):
    text = BASE.format(forces=forces, outputs=outputs, width=width)
    if inputs is not None:
        text = text.replace("{node.atom: 10, node.pos: 1o, node.vel: 1o}", inputs)
    return plan_spec(parse_spec_text(text, "f.yaml"))


def test_short_and_long_forms():
    for forces in ("autograd", "{type: autograd}", "{energy: graph.energy, positions: node.pos, output: node.forces}"):
        p = plan_of(forces)
        assert (p.forces.energy, p.forces.positions, p.forces.output) == ("graph.energy", "node.pos", "node.forces")
    p = plan_of("{type: autograd, output: node.f}")
    assert list(p.outputs) == ["graph.energy", "node.f"] and p.outputs["node.f"] == VECTOR
    # positions: the graph's positions among several 1o inputs
    p = plan_of("autograd", inputs="{node.atom: 10, node.vel: 1o, node.pos: 1o}")
    assert p.forces.positions == "node.pos"


@pytest.mark.parametrize("kw, where, words", [
    (dict(width=4), "model.forces",
     ("needs an energy output (a graph-level scalar of width 1), but the model outputs `graph.energy: 4`")),
    (dict(forces="{energy: graph.energy}", width=4), "model.forces.energy",
     ("the energy `graph.energy` of `forces: autograd` must be a graph-level scalar of width 1, found 4 channels "
      "(`graph.energy: 4`)")),
    (dict(forces="{energy: node.h}", outputs="[graph.energy, node.h]"), "model.forces.energy",
     "must be a graph-level scalar of width 1, found a node-level field (`node.h: 8`)"),
    (dict(forces="{energy: graph.e}"), "model.forces.energy",
     "the energy `graph.e` of `forces: autograd` is not an output"),
    (dict(outputs="[node.h]"), "model.forces", "`forces: autograd` needs an energy output"),
    (dict(outputs="[graph.energy, graph.h]"), "model.forces", None),
    (dict(forces="{positions: node.atom}"), "model.forces.positions",
     "the positions `node.atom` of `forces: autograd` must be a `1o` node input, found node field of type 10"),
    (dict(forces="{positions: node.x}"), "model.forces.positions",
     "the positions `node.x` of `forces: autograd` are not an input of the spec"),
    (dict(forces="{output: node.h}"), "model.forces.output", "the forces output `node.h` is already a field"),
    (dict(forces="{output: graph.f}"), "model.forces.output", "must be a node field"),
    (dict(forces="autodiff"), "model.forces", "expected 'autograd', found `autodiff` (text); did you mean `autograd`"),
    (dict(forces="{enrgy: graph.energy}"), "model.forces.enrgy", "unknown key `enrgy`"),
])
def test_compile_errors(kw, where, words):
    if words is None:  # graph.h has 8 channels: graph.energy is the only candidate
        assert plan_of(**kw).forces.energy == "graph.energy"
        return
    with pytest.raises(SpecError) as e:
        plan_of(**kw)
    msg = str(e.value)
    assert msg.startswith("f.yaml:11:") and f": {where}: " in msg, msg  # the line of `forces:`, the key
    assert words in msg, msg
    assert "\n" not in msg


def test_two_energies_or_two_position_inputs_need_the_long_form():
    text = BASE.format(forces="autograd", outputs="[graph.energy, graph.e2]", width=1)
    text = text.replace("  outputs:", "    - {type: linear, input: graph.h, output: graph.e2, out_dim: 1}\n  outputs:")
    with pytest.raises(SpecError) as e:
        plan_spec(parse_spec_text(text, "f.yaml"))
    assert ("found several graph-level scalar outputs of width 1 (`graph.energy`, `graph.e2`); name the energy "
            "with `forces: {type: autograd, energy: graph.energy}`") in str(e.value)
    text = BASE.format(forces="autograd", outputs="[graph.energy]", width=1)
    text = text.replace("{node.atom: 10, node.pos: 1o, node.vel: 1o}", "{node.atom: 10, node.a: 1o, node.b: 1o}")
    text = text.replace("graph: {kind: radius, cutoff: 4.0}\n", "").replace("pos: node.pos", "pos: node.a")
    with pytest.raises(SpecError) as e:
        plan_spec(parse_spec_text(text, "f.yaml"))
    assert ("cannot tell which `1o` input holds the positions (`node.a`, `node.b`); name it with "
            "`forces: {type: autograd, positions: node.a}`") in str(e.value)
    plan = plan_spec(parse_spec_text(text.replace("forces: autograd", "forces: {positions: node.b}"), "f.yaml"))
    assert plan.forces.positions == "node.b"


def test_no_position_input():
    text = BASE.format(forces="autograd", outputs="[graph.energy]", width=1)
    text = text.replace("{node.atom: 10, node.pos: 1o, node.vel: 1o}", "{node.atom: 10}")
    text = text.replace("graph: {kind: radius, cutoff: 4.0}\n", "")
    text = text.replace("    - {type: egnn, input: node.h, pos: node.pos, hidden: 8, update_pos: false}\n", "")
    with pytest.raises(SpecError) as e:
        plan_spec(parse_spec_text(text, "f.yaml"))
    assert "declares no `1o` node input; declare one, e.g. `node.pos: 1o` under `inputs:`" in str(e.value)
