"""``graphdl verify SPEC``: measure a compiled model's rotation/reflection/translation/permutation errors.

The model is built twice from the spec with the same random weights (parameters that are
all zero at initialisation, such as zero-initialised output layers, get small random values
so that every path is exercised), in float64 and in float32, and run on a random batch holding every declared input (positions ``~ N(0, s²)``,
``s`` chosen so radius graphs have neighbours). For each output field and each check the
worst scaled error over ``--trials`` random group elements is printed (see
:mod:`graphdl.testing.equivariance`). Exit 0 when every float64 error is at most
``--tol`` (default 1e-9), 1 otherwise; float32 errors are reported for information.
A model with ``frame`` inputs or outputs (IPA) gets proper rotations and translations of
every frame; its reflection rows read ``n/a``: a reflected frame is left-handed, so an
improper rotation is not a symmetry of frames (and is not counted as a failure).
"""

from __future__ import annotations

import argparse

import torch

from graphdl.testing.equivariance import (
    CHECKS,
    equivariance_errors,
    has_directions,
    locate_break,
    random_graph_for,
)

EPILOG = """examples:
  graphdl verify specs/nbody/egnn.yaml             exit 0: every output within 1e-9 in float64
  graphdl verify specs/nbody/gnn.yaml              exit 1: the GNN baseline reads raw coordinates
  graphdl verify specs/schnet.yaml --trials 5 --tol 1e-10
  graphdl verify specs/ipa/structure_module.yaml   frames: reflection rows read n/a (not a symmetry)
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="measure rotation, reflection, translation and permutation equivariance of a spec",
        description=__doc__.split("\n\n", 1)[1], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="SPEC", help="spec file (YAML)")
    p.add_argument("--trials", type=int, default=3, help="random group elements per check (default 3)")
    p.add_argument("--tol", type=float, default=1e-9, help="float64 tolerance on the scaled error (default 1e-9)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and group elements")
    p.add_argument("--sizes", default="4,5,7", help="node counts of the random batch's graphs (default 4,5,7)")
    p.set_defaults(func=cmd_verify)


def _setup(source, seed: int, sizes):
    from graphdl.compile import compile_spec

    torch.manual_seed(seed)
    model = compile_spec(source, dtype=torch.float64)
    _fill_zero_parameters(model, seed)
    gs = model.spec.graph
    scale = 1.0 if gs.cutoff is None else 0.6 * float(gs.cutoff)
    graph = random_graph_for(model.input_fields, sizes, scale=scale, seed=seed)
    return model, graph


def verify_spec(source, *, trials: int = 3, seed: int = 0, sizes=(4, 5, 7),
                checks=CHECKS) -> dict[str, dict[str, dict[str, float]]]:
    """``{dtype: {output: {check: error}}}`` for a spec (path, text mapping or Spec)."""
    model, graph = _setup(source, seed, sizes)
    return _errors(model, graph, trials, seed, checks)


def _errors(model, graph, trials: int, seed: int, checks) -> dict:
    from graphdl.compile import compile_spec

    out = {}
    for name, dt in (("float64", torch.float64), ("float32", torch.float32)):
        m = compile_spec(model.plan, dtype=torch.float64)
        m.load_state_dict(model.state_dict())
        out[name] = equivariance_errors(m, graph, trials=trials, seed=seed, dtype=dt, checks=checks)
    return out


def _fill_zero_parameters(model, seed: int) -> None:
    """Give parameter tensors that are all zero at initialisation small random values.

    Zero-initialised layers (AF2's IPA output projection and backbone update, which make a
    residual structure module start as the identity; zero biases) would otherwise make the
    check vacuous: an output that does not depend on the input is trivially equivariant. The
    check is about the architecture (equivariant for every weight), so any weights will do.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel() and not bool(p.any()):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * 0.1)


def cmd_verify(args) -> int:
    sizes = tuple(int(s) for s in str(args.sizes).split(",") if s.strip())
    model, graph = _setup(args.spec, args.seed, sizes)
    checks = CHECKS
    print(f"verify {args.spec}: scaled max error over {args.trials} random transforms per check "
          f"(tolerance {args.tol:g} in float64)")
    if not has_directions(model.input_fields):
        checks = ("permutation",)
        print("no input carries a direction (no 1o or l > 0 irreps field): rotations, reflections and translations "
              "act trivially on every input, so they are symmetries of any model; checking node permutations only")
    res = _errors(model, graph, args.trials, args.seed, checks)
    head = ("output", "check", "float64", "float32", "")
    rows = []
    failed = []
    for k, errs in res["float64"].items():
        for c in checks:
            e64, e32 = errs[c], res["float32"][k][c]
            if e64 is None:
                rows.append((k, c, "n/a", "n/a", "not a symmetry of frames"))
                continue
            good = e64 <= args.tol
            if not good and c not in failed:
                failed.append(c)
            rows.append((k, c, f"{e64:.2e}", f"{e32:.2e}", "ok" if good else "FAIL"))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)] + [0]
    for r in [head] + rows:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
    if not failed:
        print("equivariant")
        return 0
    for c in failed:
        where = locate_break(model, graph, c, seed=args.seed, tol=args.tol)
        if where is not None:
            step, field, err = where
            print(f"{c}: first broken by {step}, which writes `{field}` (error {err:.2e})")
    print("NOT equivariant: see FAIL rows")
    return 1
