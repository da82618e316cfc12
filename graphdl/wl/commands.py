"""``graphdl wl check SPEC --pairs FAMILY`` and ``graphdl wl compare SPEC... --pairs FAMILY``.

BREC's reliable paired comparison (see :mod:`graphdl.wl.check`) of a model spec on graph
pair families, beside the 1-WL and 3-WL verdicts. Prints one line per pair and a table per
family; ``--out`` writes JSON, ``--plot`` a PNG of the per-family counts.
"""

from __future__ import annotations

import json
import os
import sys

from graphdl.errors import DataError

_FLAGS = ("epochs", "lr", "relabelings", "threshold", "seed")


def _common(p) -> None:
    p.add_argument("--pairs", nargs="+", metavar="FAMILY",
                   help="pair families (csl, srg, cfi, random, aggregators, ...) or graph6 pair files; "
                        "default: the spec's `wl.pairs`")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a family parameter: KEY=VALUE for every family that has KEY, FAMILY.KEY=VALUE for one "
                        "(e.g. random.n_pairs=6); repeatable")
    p.add_argument("--seed", type=int, default=None, help="seed of relabellings and initialisation (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="training steps per pair (default 40)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    p.add_argument("--relabelings", type=int, default=None, help="relabellings per graph, n of T² (default 32)")
    p.add_argument("--threshold", type=float, default=None,
                   help="T² threshold (default (n-1)p/(n-p) F_{p,n-p}(0.95) = 72.34 for n=32, p=16)")
    p.add_argument("--limit", type=int, default=None, help="check only the first N pairs of each family")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for small batches)")
    p.add_argument("--out", metavar="FILE.json", help="write the per-pair results as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="bar plot of pairs separated per family")
    p.add_argument("-q", "--quiet", action="store_true", help="only the table (no per-pair lines, no progress)")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("wl", help="Weisfeiler-Leman expressiveness checks of a model on graph pairs",
                              description="Which graph pairs a model separates, by BREC's paired T² test "
                                          "(Wang & Zhang 2023), beside the 1-WL and 3-WL verdicts.")
    sub = p.add_subparsers(dest="wl_command", metavar="WL_COMMAND")
    c = sub.add_parser("check", help="which pairs of a family a model separates (BREC paired T² test)")
    c.add_argument("spec", help="model spec with one scalar graph output (e.g. specs/wl/gin.yaml)")
    _common(c)
    c.set_defaults(func=cmd_check)
    m = sub.add_parser("compare", help="several specs side by side on the same families")
    m.add_argument("specs", nargs="+", help="model specs")
    _common(m)
    m.set_defaults(func=cmd_compare)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])


def _params(items: list[str]) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise DataError(f"--param expects KEY=VALUE, found `{it}`")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _config(args, spec: str):
    from graphdl.spec.model import parse_spec
    from graphdl.wl.check import CheckConfig

    section = parse_spec(spec).sections.get("wl")
    values = {}
    for k in _FLAGS:
        v = getattr(args, k)
        if v is None and section is not None:
            v = getattr(section, k)
        if v is not None:
            values[k] = v
    families = args.pairs or (list(section.pairs) if section is not None else [])
    if not families:
        raise DataError(f"no pairs to check for {spec}: pass --pairs FAMILY (e.g. --pairs csl) or set `wl.pairs`")
    return CheckConfig(**values), families


def _run(args, specs: list[str]) -> int:
    from graphdl.wl.check import SEPARATED, format_table, plot_counts, run_check

    params = _params(args.param)
    reports = []
    for spec in specs:
        cfg, families = _config(args, spec)
        for fam in families:
            r = run_check(spec, fam, cfg, family_params=_family_params(fam, params),
                          progress=not args.quiet and sys.stderr.isatty(), limit=args.limit, threads=args.threads)
            reports.append(r)
            if not args.quiet:
                print(f"# {spec} on {fam}: T² threshold {r.threshold:.2f}, {cfg.epochs} epochs, "
                      f"{cfg.relabelings} relabelings, {r.seconds:.1f} s")
                print("  (+ separated, - not separated, ? unreliable; T²: the paired test of the two graphs' "
                      "outputs; reliability T²: the same test between relabellings of one graph)")
                for pr, w1, w3 in zip(r.pairs, r.wl1, r.wl3):
                    mark = "+" if pr.verdict == SEPARATED else "?" if pr.verdict == "unreliable" else "-"
                    print(f"  {mark} {pr.name:32s} {pr.verdict:14s} T²={pr.t2:10.3g}  "
                          f"reliability T²={pr.t2_reliability:8.3g}  1-WL={'yes' if w1 else 'no':3s} "
                          f"3-WL={'yes' if w3 else 'no':3s}  "
                          f"max|Δ|={pr.max_diff:8.2g} (round-off tol {pr.tolerance:.2g})")
    print(format_table(reports))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump({"reports": [r.to_json() for r in reports], "table": format_table(reports)}, fh, indent=1)
        print(f"wrote {args.out}")
    if args.plot:
        plot_counts(reports, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _family_params(fam: str, params: dict) -> dict | None:
    """The --param entries for ``fam``: ``FAMILY.KEY=V`` for it, plain ``KEY=V`` where it has KEY."""
    import inspect

    from graphdl.wl.families import FAMILIES

    if fam not in FAMILIES:
        return None
    names = set(inspect.signature(FAMILIES[fam]).parameters)
    out = {k: v for k, v in params.items() if "." not in k and k in names}
    out.update({k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(fam + ".")})
    return out


def cmd_check(args) -> int:
    return _run(args, [args.spec])


def cmd_compare(args) -> int:
    return _run(args, list(args.specs))
