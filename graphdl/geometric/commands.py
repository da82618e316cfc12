"""``graphdl verify SPEC``: measure a compiled model's rotation/reflection/translation/permutation errors.

The model is built twice from the spec with the same random weights, in float64 and in
float32, and run on a random batch holding every declared input (positions ``~ N(0, s²)``,
``s`` chosen so radius graphs have neighbours). For each output field and each check the
worst scaled error over ``--trials`` random group elements is printed (see
:mod:`graphdl.testing.equivariance`). Exit 0 when every float64 error is at most
``--tol`` (default 1e-9), 1 otherwise; float32 errors are reported for information.
A model that reads node order (a ``causal`` graph, or a positional encoding of sequences) is
not meant to be permutation equivariant: its permutation rows are reported as ``n/a``.
"""

from __future__ import annotations

import argparse

import torch

from graphdl.testing.equivariance import CHECKS, equivariance_errors, random_graph_for

EPILOG = """examples:
  graphdl verify specs/nbody/egnn.yaml             exit 0: every output within 1e-9 in float64
  graphdl verify specs/nbody/gnn.yaml              exit 1: the GNN baseline reads raw coordinates
  graphdl verify specs/schnet.yaml --trials 5 --tol 1e-10
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


def verify_spec(source, *, trials: int = 3, seed: int = 0, sizes=(4, 5, 7)) -> dict[str, dict[str, dict[str, float]]]:
    """``{dtype: {output: {check: error}}}`` for a spec (path, text mapping or Spec)."""
    from graphdl.compile import compile_spec

    torch.manual_seed(seed)
    model = compile_spec(source, dtype=torch.float64)
    gs = model.spec.graph
    scale = 1.0 if gs.cutoff is None else 0.6 * float(gs.cutoff)
    graph = random_graph_for(model.input_fields, sizes, scale=scale, seed=seed)
    out = {}
    for name, dt in (("float64", torch.float64), ("float32", torch.float32)):
        m = compile_spec(model.plan, dtype=torch.float64)
        m.load_state_dict(model.state_dict())
        out[name] = equivariance_errors(m, graph, trials=trials, seed=seed, dtype=dt)
    return out


def order_dependence(source) -> str | None:
    """Why a spec's outputs depend on node order (``None`` when they should not)."""
    from graphdl.compile import plan_spec

    plan = plan_spec(source)
    if plan.spec.graph.kind == "causal":
        return "causal graph: node order is sequence order"
    readers = sorted({s.cls.name for s in plan.steps if s.cls.reads_node_order})
    return f"{', '.join(readers)} read(s) node order" if readers else None


def cmd_verify(args) -> int:
    sizes = tuple(int(s) for s in str(args.sizes).split(",") if s.strip())
    res = verify_spec(args.spec, trials=args.trials, seed=args.seed, sizes=sizes)
    ordered = order_dependence(args.spec)
    head = ("output", "check", "float64", "float32", "")
    rows = []
    ok = True
    for k, checks in res["float64"].items():
        for c in CHECKS:
            e64, e32 = checks[c], res["float32"][k][c]
            if c == "permutation" and ordered is not None:
                rows.append((k, c, f"{e64:.2e}", f"{e32:.2e}", f"n/a ({ordered})"))
                continue
            good = e64 <= args.tol
            ok &= good
            rows.append((k, c, f"{e64:.2e}", f"{e32:.2e}", "ok" if good else "FAIL"))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    print(f"verify {args.spec}: scaled max error over {args.trials} random transforms per check "
          f"(tolerance {args.tol:g} in float64)")
    for r in [head] + rows:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
    na = " (permutation: n/a, the model reads node order)" if ordered is not None else ""
    print(("equivariant" + na) if ok else "NOT equivariant: see FAIL rows")
    return 0 if ok else 1
