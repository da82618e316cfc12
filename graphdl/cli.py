"""``graphdl`` command line: check | describe | schema | run | predict | verify | wl | bench | rollout | export.

Each subcommand lives with the package it drives and registers itself here through
``COMMANDS`` (name -> module path with ``add_parser(subparsers)`` and ``main(args) -> int``).
Errors a user can cause (``GraphDLError``) print one line to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from graphdl.errors import GraphDLError

# name -> module implementing `add_parser(subparsers)`; modules not present yet are skipped
COMMANDS = {
    "check": "graphdl.spec.commands",
    "describe": "graphdl.spec.commands",
    "schema": "graphdl.spec.commands",
    "run": "graphdl.train.commands",
    "predict": "graphdl.train.commands",
    "verify": "graphdl.geometric.commands",
    "wl": "graphdl.wl.commands",
    "bench": "graphdl.bench",
    "rollout": "graphdl.simulate.commands",
    "export": "graphdl.interop.commands",
}

EPILOG = """examples:
  graphdl check specs/gcn.yaml                       exit 0 when valid, 2 with file:line:col otherwise
  graphdl describe specs/gin.yaml                    every block, its fields and parameter counts
  graphdl schema -o graphdl.schema.json              JSON Schema for editor autocompletion
  graphdl run specs/molecular/mpnn_freesolv.yaml     train and evaluate, writing artefacts to runs/
  graphdl run specs/nbody/budget/egnn.yaml           the EGNN paper's N-body experiment (CPU budget)
  graphdl verify specs/nbody/egnn.yaml               rotation/reflection/translation/permutation errors
  graphdl wl check specs/wl/gin.yaml --pairs csl     which graph pairs the model tells apart, beside 1-WL/3-WL
  graphdl bench specs/gin.yaml --nodes 30            time graph building, forward and a training step
  graphdl run specs/gns/water_drop_2d.yaml --out runs/gns                  train a particle simulator (GNS)
  graphdl rollout specs/gns/water_drop_2d.yaml --checkpoint runs/gns/best.pt --render gif   watch it roll out
  graphdl export specs/gin.yaml --to dgl --out runs/gin_dgl   the model as dgl.nn layers (add --checkpoint PT)

specs that run code:
  A spec's `import:` names Python modules that register custom blocks (examples/custom_block.yaml).
  They run only when you say so: add --trust to any command, e.g.
  graphdl check --trust examples/custom_block.yaml
"""

TRUST_HELP = ("let this spec's `import:` run the Python modules it names (custom blocks); without it a spec "
              "with `import:` is refused and nothing is executed")


def _add_trust(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command that reads specs the same ``--trust`` switch."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _add_trust(child)
            return
    if "--trust" not in parser._option_string_actions:
        parser.add_argument("--trust", action="store_true", help=TRUST_HELP)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphdl",
        description="Declarative graph and equivariant neural networks: YAML spec in, verified model out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    done = set()
    for mod in dict.fromkeys(COMMANDS.values()):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue
            raise
        if mod not in done:
            m.add_parser(sub)
            done.add(mod)
    for child in dict.fromkeys(sub.choices.values()):
        _add_trust(child)
    return parser


def _rank_failed() -> bool:
    d = sys.modules.get("graphdl.train.distributed")  # (imported only by commands that train)
    return d is not None and d.failed()


def _exit_if_rank_failed(code: int) -> None:
    """A failed data-parallel rank (under torchrun) exits here, before its collectives' destructors
    can hang it (see :func:`graphdl.train.distributed.exit_now`)."""
    if _rank_failed():
        sys.modules["graphdl.train.distributed"].exit_now(code)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from graphdl.spec.loader import trusted_imports

    try:
        with trusted_imports(bool(getattr(args, "trust", False))):
            return int(args.func(args) or 0)
    except GraphDLError as e:
        if not getattr(e, "silent", False):  # a rank following another rank's failure says nothing
            print(f"error: {e}", file=sys.stderr)
        _exit_if_rank_failed(2)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        _exit_if_rank_failed(130)
        return 130
    except BrokenPipeError:  # `graphdl describe --json spec.yaml | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0
    except BaseException:  # a crash (not a user error) in a failed data-parallel rank
        if _rank_failed():
            import traceback

            traceback.print_exc()
            _exit_if_rank_failed(1)
        raise


if __name__ == "__main__":
    sys.exit(main())
