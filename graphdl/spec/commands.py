"""``graphdl check | describe | schema``: validate specs, print their tables, export the JSON Schema.

Registered in :mod:`graphdl.cli` through :func:`add_parser`. A user error (a bad spec)
prints one line ``file:line:col: path: message`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from graphdl.errors import GraphDLError

CHECK_EPILOG = """examples:
  graphdl check specs/generic_gin.yaml
      ok: specs/generic_gin.yaml (3 layers, 21,826 parameters)
  graphdl check specs/*.yaml specs/**/*.yaml     check many at once (exit 2 if any fails)
  graphdl check -q specs/gcn.yaml && echo valid  no output, only the exit status

A failing spec prints one line an editor can jump to, and the run exits with status 2:
  specs/bad.yaml:12:15: model.layers[1].aggregate: expected 'sum', 'mean', 'max', 'min' or
  'softmax_attention', found `summ` (text); did you mean `sum`?
"""

DESCRIBE_EPILOG = """examples:
  graphdl describe specs/graph_network.yaml        the table of blocks, fields and parameters
  graphdl describe --json specs/gin.yaml > gin.json   the same as JSON (total_parameters, steps, ...)
  graphdl describe --dataset datasets/freesolv.yaml   a dataset's fields, channel by channel

Each row is one block application (`repeat: N` gives N rows): the fields it reads and
writes with their types (64 channels, irreps like 8x0e + 4x1o, frame) and its parameter
count; shared repeats count once. `notes` says how the block runs (e.g. `csr spmm (sum)`).
"""

SCHEMA_EPILOG = """examples:
  graphdl schema -o graphdl.schema.json           write the schema of the spec format
  graphdl schema | head -n 20                       read it

Editors with the YAML language server (VS Code "YAML" extension, neovim, Helix...) then
autocomplete and check specs that start with:
  # yaml-language-server: $schema=../graphdl.schema.json
The schema lists every block registered when it is written: import your own block modules
with --import so that theirs are in it too.
"""


def add_parser(subparsers) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "check", help="validate specs: YAML, references, block parameters and field types",
        description="Parse each SPEC, resolve `extends:`, `${...}` and `import:`, validate every\n"
                    "block's parameters and infer every field's type through the stack (no data is\n"
                    "read). An experiment spec's inputs and task are matched against the fields its\n"
                    "dataset type makes. Prints `ok: FILE (N layers, P parameters)` per valid spec.",
        epilog=CHECK_EPILOG, formatter_class=fmt)
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files (YAML)")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.set_defaults(func=cmd_check)

    p = subparsers.add_parser(
        "describe", help="print the blocks of a spec with fields, types and parameter counts",
        description="Compile SPEC and print one row per block application: fields read and\n"
                    "written with types, parameter counts and how the block is lowered.",
        epilog=DESCRIBE_EPILOG, formatter_class=fmt)
    p.add_argument("spec", metavar="SPEC", help="spec file (YAML)")
    p.add_argument("--json", action="store_true", help="print the same information as JSON")
    p.add_argument("--dataset", action="store_true",
                   help="describe the dataset instead: SPEC is a dataset spec (datasets/*.yaml) or an experiment "
                        "spec; prints its type, parameters and every field with its type and meaning")
    p.set_defaults(func=cmd_describe)

    p = subparsers.add_parser(
        "schema", help="write the JSON Schema of the spec format (editor autocompletion)",
        description="Write a JSON Schema (draft 2020-12) of model specs: top-level keys, inputs,\n"
                    "graph, sections, and every registered block (a `oneOf` on `type:`) with its\n"
                    "parameters and the step keys repeat / share_weights / residual / label.",
        epilog=SCHEMA_EPILOG, formatter_class=fmt)
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="a module (name or .py file) registering blocks to include; repeatable")
    p.add_argument("--no-references", action="store_true",
                   help="do not accept `${...}` reference strings in place of typed values")
    p.set_defaults(func=cmd_schema)


def _compile(path: str):
    from graphdl.compile import build, plan_spec
    from graphdl.spec.model import parse_spec

    plan = plan_spec(parse_spec(path))
    return build(plan)


def _check_experiment(model) -> str:
    """For a spec with `task:` and `dataset:`, match inputs and task against the dataset's fields."""
    spec = model.plan.spec
    if "task" not in spec.sections or "dataset" not in spec.sections:
        return ""
    from graphdl.train.runner import check_experiment, prepare

    return "; inputs and task match the dataset" if check_experiment(prepare(spec)) else \
        "; the dataset's fields are known only once loaded (graphdl run checks them)"


def num_parameters(model) -> int:
    """Distinct parameters of a compiled model (shared repeats counted once)."""
    return sum(p.numel() for p in model.parameters())


def cmd_check(args) -> int:
    failed = 0
    for path in args.specs:
        try:
            model = _compile(path)
            matched = _check_experiment(model)
        except GraphDLError as e:
            failed += 1
            # a located error already starts with `file:line:col`; anything else gets the file
            located = getattr(e, "mark", None) is not None
            print(str(e) if located else f"{path}: {e}", file=sys.stderr)
            continue
        if not args.quiet:
            n = len(model.plan.steps)
            print(f"ok: {path} ({n} layer{'s' if n != 1 else ''}, {num_parameters(model):,} parameters{matched})")
    return 2 if failed else 0


def describe_data(model) -> dict:
    """What ``model.describe()`` prints, as plain data (for ``describe --json``)."""
    plan = model.plan
    modules: list = []
    it = iter(model.blocks)
    for s in plan.steps:
        modules.append(modules[s.shares] if s.shares is not None else next(it))
    steps = []
    seen: set[int] = set()
    for i, (s, m) in enumerate(zip(plan.steps, modules)):
        shared = id(m) in seen
        seen.add(id(m))
        extra = getattr(m, "describe_extra", lambda: "")()
        steps.append({
            "index": i,
            "layer": s.where,
            "block": s.cls.name,
            "label": s.entry.label,
            "reads": {k: str(v) for k, v in s.sig.reads.items()},
            "writes": {k: str(v) for k, v in s.sig.writes.items()},
            "parameters": 0 if shared else sum(p.numel() for p in m.parameters()),
            "shared_with": s.shares,
            "residual": s.entry.residual,
            "lowering": extra or None,
        })
    spec = plan.spec
    return {
        "name": spec.name,
        "file": spec.file,
        "graph": spec.graph.model_dump(),
        "inputs": {k: str(v) for k, v in plan.inputs.items()},
        "steps": steps,
        "outputs": {k: str(v) for k, v in plan.outputs.items()},
        "forces": plan.forces.as_spec() if plan.forces is not None else None,
        "total_parameters": num_parameters(model),
    }


def describe_dataset(path: str) -> dict:
    """Type, resolved parameters and fields (type, meaning) of a dataset spec or an experiment's dataset."""
    from graphdl.spec.loader import load_spec
    from graphdl.train.data import resolve_dataset

    doc = load_spec(path)
    import os

    base = os.path.dirname(os.path.abspath(path))
    if isinstance(doc.data, dict) and "dataset" in doc.data:
        from graphdl.train.runner import prepare

        ref = prepare(path).data
    else:
        from graphdl.train.sections import DatasetSection

        ref = resolve_dataset(DatasetSection(spec=os.path.abspath(path)), doc, base)
    fields = ref.cls.fields(ref.params)
    docs = ref.cls.field_docs(ref.params)
    return {"type": ref.cls.name, "parameters": ref.resolved(),
            "fields": None if fields is None else {k: {"type": str(t), "meaning": docs.get(k, "")}
                                                   for k, t in fields.items()}}


def cmd_describe(args) -> int:
    if args.dataset:
        d = describe_dataset(args.spec)
        if args.json:
            print(json.dumps(d, indent=2))
            return 0
        print(f"dataset type `{d['type']}`: " + ", ".join(f"{k}: {v}" for k, v in d["parameters"].items()
                                                          if k not in ("graphdl", "type") and v is not None))
        if d["fields"] is None:
            print("fields: known once the data is loaded (graphdl run prints them)")
            return 0
        width = max(len(f"{k}: {v['type']}") for k, v in d["fields"].items())
        for k, v in d["fields"].items():
            print(f"  {f'{k}: ' + v['type']:<{width}}  {v['meaning']}".rstrip())
        return 0
    model = _compile(args.spec)
    if args.json:
        print(json.dumps(describe_data(model), indent=2))
    else:
        print(model.describe())
    return 0


def cmd_schema(args) -> int:
    import os

    from graphdl.errors import SpecError
    from graphdl.spec.loader import SpecDoc, run_imports, trusted_imports
    from graphdl.spec.schema import dump_schema

    if args.imports:  # modules the user named on the command line: that is the explicit choice
        doc = SpecDoc({"import": list(args.imports)}, "--import")
        with trusted_imports():
            run_imports(doc, os.getcwd())
    text = dump_schema(references=not args.no_references)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as e:
            raise SpecError(f"cannot write the schema to `{args.output}`: {e.strerror}") from None
        print(f"wrote {args.output} ({len(text):,} bytes)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
