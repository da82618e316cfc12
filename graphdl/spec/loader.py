"""Load spec files: safe YAML with positions, ``extends:``, ``${...}`` references, ``import:``.

The loader keeps YAML's compose tree long enough to record where every key and value
sits (``file:line:col``), then hands out plain Python data plus a position map. Nothing
is ever evaluated: scalars go through ``yaml.SafeLoader``'s constructors only.

``import:`` is the one way a spec can run code (a module that registers custom blocks). A
spec is shared like a configuration file, so reading one must not run code that came with
it: without an explicit choice, a spec with ``import:`` is refused with one line naming the
modules, and nothing is imported. The choice is made by whoever runs graphdl, never by the
spec: ``--trust`` on the command line, ``trust=True`` to :func:`load_spec` /
:func:`graphdl.parse_spec` / :func:`graphdl.compile_spec`, or the :func:`trusted_imports`
context manager around any other API call (a run, a WL check). This is the lesson of Hydra's
``_target_`` and of ``torch.load`` without ``weights_only``.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml

from graphdl.errors import Mark, SpecError, did_you_mean

Path = tuple  # a path into the data: ("model", "layers", 2, "heads")


def format_path(path: Path) -> str:
    """``("model", "layers", 2, "heads")`` -> ``model.layers[2].heads``."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


@dataclass
class SpecDoc:
    """Plain data of a spec with the position of every key and value.

    Attributes:
        data: the resolved mapping (``extends`` merged, references substituted).
        file: the file it came from (``<string>`` for text, ``<dict>`` for data).
        marks: path -> position of the value at that path.
        key_marks: path -> position of the key naming that path.
    """

    data: dict
    file: str
    marks: dict[Path, Mark] = field(default_factory=dict)
    key_marks: dict[Path, Mark] = field(default_factory=dict)

    def mark(self, path: Path, *, key: bool = False) -> Mark | None:
        """Position of ``path`` (or of its key), falling back to the nearest parent."""
        path = tuple(path)
        if key and path in self.key_marks:
            return self.key_marks[path]
        while True:
            if path in self.marks:
                return self.marks[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: Path, message: str, *, key: bool = False) -> SpecError:
        return SpecError(message, mark=self.mark(path, key=key), path=format_path(path) or None)

    def sub(self, path: Path) -> "SpecDoc":
        """The document rooted at ``path`` (positions re-keyed), for nested validation."""
        n = len(path)
        value = get_path(self.data, path)
        marks = {p[n:]: m for p, m in self.marks.items() if p[:n] == tuple(path)}
        keys = {p[n:]: m for p, m in self.key_marks.items() if p[:n] == tuple(path)}
        return SpecDoc(value, self.file, marks, keys)

    def digest(self) -> str:
        """A stable hash of the resolved data (positions excluded)."""
        return hashlib.sha256(yaml.safe_dump(self.data, sort_keys=True).encode()).hexdigest()


def get_path(data: Any, path: Path) -> Any:
    for p in path:
        data = data[p]
    return data


# ----------------------------------------------------------------------------- YAML
def _mark(file: str, m) -> Mark:
    return Mark(file, m.line + 1, m.column + 1)


def _reader_error(e: yaml.reader.ReaderError, text: str, file: str) -> SpecError:
    """A character YAML refuses (control characters, NUL): say which one and where."""
    pos = max(0, min(int(e.position), len(text)))
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    char = e.character if isinstance(e.character, str) else chr(e.character)
    return SpecError(f"malformed YAML: the character {char!r} (U+{ord(char):04X}) is not allowed in YAML; "
                     f"remove it or write it escaped inside double quotes", mark=Mark(file, line, col))


def _marked_error(e: yaml.MarkedYAMLError, file: str) -> SpecError:
    m = e.problem_mark or e.context_mark
    what = (e.problem or "malformed YAML").strip()
    ctx = f" ({e.context.strip()})" if e.context else ""
    return SpecError(f"malformed YAML: {what}{ctx}", mark=_mark(file, m) if m else Mark(file, 1, 1))


MAX_VALUES = 200_000
"""More values than this after expanding YAML aliases is refused (an "alias bomb")."""


def parse_yaml(text: str, file: str = "<string>") -> SpecDoc:
    """Parse YAML text with safe constructors, recording positions; errors are SpecErrors."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as e:
        raise _reader_error(e, text, file) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.reader.ReaderError as e:
            raise _reader_error(e, text, file) from None
        except yaml.MarkedYAMLError as e:
            raise _marked_error(e, file) from None
        except yaml.YAMLError as e:
            raise SpecError(f"malformed YAML: {e}", mark=Mark(file, 1, 1)) from None
        except RecursionError:
            raise SpecError("malformed YAML: nested too deeply to read", mark=Mark(file, 1, 1)) from None
        doc = SpecDoc({}, file)
        if node is None:
            raise SpecError("the spec is empty; expected a mapping starting with `graphdl: 1`", mark=Mark(file, 1, 1))
        try:
            data = _convert(loader, node, (), doc)
        except yaml.MarkedYAMLError as e:  # e.g. a `<<:` merge of something that is not a mapping
            raise _marked_error(e, file) from None
        except RecursionError:
            raise SpecError("the spec is nested too deeply (thousands of levels); flatten it",
                            mark=Mark(file, 1, 1)) from None
    finally:
        loader.dispose()
    doc.data = data
    return doc


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _convert(loader, node, path: Path, doc: SpecDoc) -> Any:
    doc.marks[path] = _mark(doc.file, node.start_mark)
    if len(doc.marks) > MAX_VALUES:
        raise SpecError(f"the spec expands to more than {MAX_VALUES:,} values (YAML aliases `*name` repeated "
                        f"inside each other?); write it out without nested aliases",
                        mark=_mark(doc.file, node.start_mark), path=format_path(path) or None)
    if not isinstance(node, yaml.ScalarNode) and node.tag not in _PLAIN_TAGS:
        # the safe constructors are bypassed for collections here, so refuse their tags explicitly
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise SpecError(f"cannot read value: tag `{tag}` is not allowed (specs are plain YAML; tags like "
                        f"`!!python/...` are never executed)", mark=_mark(doc.file, node.start_mark),
                        path=format_path(path) or None)
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        loader.flatten_mapping(node)
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise SpecError("mapping keys must be plain scalars", mark=_mark(doc.file, knode.start_mark),
                                path=format_path(path) or None)
            key = _scalar(loader, knode, path, doc)
            if isinstance(key, (list, dict)) or key is None:
                raise SpecError(f"invalid mapping key `{knode.value}`", mark=_mark(doc.file, knode.start_mark))
            key = key if isinstance(key, str) else str(key)
            if key in out:
                raise SpecError(
                    f"duplicate key `{key}` (first at line {doc.key_marks[path + (key,)].line}); "
                    f"YAML would silently keep only the last one—remove one of them",
                    mark=_mark(doc.file, knode.start_mark), path=format_path(path + (key,)),
                )
            doc.key_marks[path + (key,)] = _mark(doc.file, knode.start_mark)
            out[key] = _convert(loader, vnode, path + (key,), doc)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, v, path + (i,), doc) for i, v in enumerate(node.value)]
    return _scalar(loader, node, path, doc)


def _scalar(loader, node, path, doc):
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as e:
        why = (getattr(e, "problem", None) or str(e)).strip().splitlines()[0]
        raise SpecError(f"cannot read value `{node.value}`: {why} (specs are plain YAML; tags like "
                        f"`!!python/...` are never executed)", mark=_mark(doc.file, node.start_mark),
                        path=format_path(path) or None) from None


# ------------------------------------------------------------------------ extends
def _merge(base: SpecDoc, child: SpecDoc) -> SpecDoc:
    """Deep-merge ``child`` over ``base``: mappings merge key by key, anything else is replaced."""
    out = SpecDoc(copy.deepcopy(base.data), child.file, dict(base.marks), dict(base.key_marks))

    def walk(dst: dict, src: dict, path: Path) -> None:
        for k, v in src.items():
            p = path + (k,)
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                walk(dst[k], v, p)
                out.marks[p] = child.marks.get(p, out.marks.get(p))
                continue
            # replaced wholesale: drop the base's positions below p
            for q in [q for q in out.marks if q[: len(p)] == p]:
                del out.marks[q]
            for q in [q for q in out.key_marks if q[: len(p)] == p]:
                del out.key_marks[q]
            dst[k] = copy.deepcopy(v)
            for q, m in child.marks.items():
                if q[: len(p)] == p:
                    out.marks[q] = m
            for q, m in child.key_marks.items():
                if q[: len(p)] == p:
                    out.key_marks[q] = m

    walk(out.data, child.data, ())
    out.marks[()] = child.marks.get((), Mark(child.file, 1, 1))
    return out


def _display_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it (for messages), else absolute."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _load_file(path: str, chain: tuple[str, ...], do_imports: bool) -> SpecDoc:
    apath = os.path.abspath(path)
    if apath in chain:
        names = " -> ".join(os.path.relpath(p) for p in chain + (apath,))
        raise SpecError(f"`extends` cycle: {names}; remove one of the `extends:` entries",
                        mark=Mark(os.path.relpath(chain[-1]), 1, 1), path="extends")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise SpecError(f"spec file `{path}` does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read spec file `{path}`: {e}") from None
    doc = parse_yaml(text, os.path.normpath(path))
    if not isinstance(doc.data, dict):
        raise SpecError(f"a spec must be a mapping (key: value lines), found a {type(doc.data).__name__}",
                        mark=doc.mark(()))
    base_dir = os.path.dirname(apath)
    ext = doc.data.pop("extends", None)
    if ext is not None:
        bases = ext if isinstance(ext, list) else [ext]
        merged: SpecDoc | None = None
        for i, b in enumerate(bases):
            where = ("extends", i) if isinstance(ext, list) else ("extends",)
            if not isinstance(b, str):
                raise doc.error(where, f"`extends` expects a file path (or a list of them), found `{b}`")
            bpath = _display_path(os.path.join(base_dir, b))
            if not os.path.exists(bpath):
                raise doc.error(where, f"base spec `{b}` not found (looked at {os.path.relpath(bpath)})")
            base = _load_file(bpath, chain + (apath,), do_imports)
            merged = base if merged is None else _merge(merged, base)
        assert merged is not None
        doc = _merge(merged, doc)
    if do_imports:
        run_imports(doc, base_dir)
    return doc


_TRUST: contextvars.ContextVar[bool] = contextvars.ContextVar("graphdl_trust_imports", default=False)

TRUST_HINT = ("If you trust this spec, pass `--trust` (Python: `trust=True`, or "
              "`with graphdl.trusted_imports(): ...`)")


@contextlib.contextmanager
def trusted_imports(trust: bool = True):
    """Within the block, specs may run the Python modules their ``import:`` names.

    Use it around API calls that load specs for you (``graphdl.train.runner.run``, a WL
    check); ``graphdl --trust`` sets it for a command. Nested uses restore the outer value.
    """
    token = _TRUST.set(bool(trust))
    try:
        yield
    finally:
        _TRUST.reset(token)


def imports_trusted() -> bool:
    """Whether specs loaded now may run their ``import:`` modules (see :func:`trusted_imports`)."""
    return _TRUST.get()


def run_imports(doc: SpecDoc, base_dir: str) -> None:
    """Import the user modules named under ``import:`` so their blocks get registered.

    Raises:
        SpecError: at ``import:`` when imports are not trusted (nothing is imported; the
            message names every module and how to allow them), when a module is missing,
            or when it raised while importing.
    """
    imports = doc.data.get("import")
    if imports is None:
        return
    items = imports if isinstance(imports, list) else [imports]
    if not imports_trusted():
        names = ", ".join(f"`{n}`" for n in items)
        raise doc.error(("import",), f"this spec imports Python code ({names}), which would run with your "
                                     f"permissions; nothing was imported. {TRUST_HINT}")
    for i, name in enumerate(items):
        where = ("import", i) if isinstance(imports, list) else ("import",)
        if not isinstance(name, str):
            raise doc.error(where, f"`import` expects module names or .py paths, found `{name}`")
        try:
            if name.endswith(".py"):
                path = name if os.path.isabs(name) else os.path.join(base_dir, name)
                if not os.path.exists(path):
                    raise doc.error(where, f"import `{name}`: file not found (looked at {os.path.relpath(path)})")
                modname = "graphdl_user_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
                if modname not in sys.modules:
                    spec = importlib.util.spec_from_file_location(modname, path)
                    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
                    sys.modules[modname] = mod
                    try:
                        spec.loader.exec_module(mod)  # type: ignore[union-attr]
                    except BaseException:
                        del sys.modules[modname]
                        raise
            else:
                importlib.import_module(name)
        except SpecError:
            raise
        except ModuleNotFoundError as e:
            raise doc.error(where, f"import `{name}`: module not found ({e}); give a module on the "
                                   f"Python path or a .py file relative to the spec") from None
        except Exception as e:  # the user's module raised while importing
            raise doc.error(where, f"import `{name}` failed: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------- references
_REF = re.compile(r"\$\{([^{}]*)\}")


def _lookup(data: Any, ref: str) -> tuple[Any, Path]:
    """Resolve a dotted reference; keys may contain dots (``inputs.node.h``) and ``[i]`` indices."""
    tokens: list = []
    for part in ref.strip().split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", part)
        if not m:
            raise KeyError(ref)
        if m.group(1):
            tokens.append(m.group(1))
        tokens.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    path: list = []
    cur = data
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if isinstance(cur, list):
            if isinstance(t, str) and t.isdigit():
                t = int(t)
            if not isinstance(t, int) or t >= len(cur):
                raise KeyError(ref)
            cur = cur[t]
            path.append(t)
            i += 1
            continue
        if not isinstance(cur, dict):
            raise KeyError(ref)
        # longest run of dot-joined string tokens that names a key
        for j in range(len(tokens), i, -1):
            run = tokens[i:j]
            if all(isinstance(r, str) for r in run) and ".".join(run) in cur:
                key = ".".join(run)
                cur = cur[key]
                path.append(key)
                i = j
                break
        else:
            raise KeyError(ref)
    return cur, tuple(path)


def _all_paths(data: Any, prefix: str = "") -> list[str]:
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            p = f"{prefix}.{k}" if prefix else str(k)
            out.append(p)
            out += _all_paths(v, p)
    return out


def resolve_references(doc: SpecDoc) -> None:
    """Substitute every ``${path}`` in place. A whole-string reference keeps the value's type."""
    root = doc.data
    resolving: list[Path] = []

    def value_at(ref: str, at: Path) -> Any:
        try:
            target, tpath = _lookup(root, ref)
        except KeyError:
            raise doc.error(at, f"reference `${{{ref}}}` names nothing in the spec"
                                f"{did_you_mean(ref, _all_paths(root))}") from None
        if tpath in resolving:
            chain = " -> ".join(format_path(p) for p in resolving + [tpath])
            raise doc.error(at, f"reference cycle: {chain}")
        resolving.append(tpath)
        try:
            resolved = walk(target, tpath)
        finally:
            resolving.pop()
        return resolved

    def walk(v: Any, path: Path) -> Any:
        if isinstance(v, dict):
            for k in list(v):
                v[k] = walk(v[k], path + (k,))
            return v
        if isinstance(v, list):
            for i in range(len(v)):
                v[i] = walk(v[i], path + (i,))
            return v
        if isinstance(v, str) and "${" in v:
            whole = _REF.fullmatch(v.strip())
            if whole:
                return copy.deepcopy(value_at(whole.group(1), path))

            def sub(m):
                val = value_at(m.group(1), path)
                if isinstance(val, (dict, list)):
                    raise doc.error(path, f"`${{{m.group(1)}}}` is a {type(val).__name__} and cannot be "
                                          f"spliced into text; use it as the whole value")
                return str(val)

            out = _REF.sub(sub, v)
            if "${" in out:
                raise doc.error(path, f"unterminated reference in `{v}`; write `${{path.to.value}}`")
            return out
        return v

    walk(root, ())


# ---------------------------------------------------------------------- entry points
def load_spec(source: str | os.PathLike | dict, *, imports: bool = True, trust: bool | None = None) -> SpecDoc:
    """Load a spec from a file path, or from an already-parsed mapping (tests, Python users).

    Applies ``extends:`` (relative to the file), runs ``import:`` and resolves ``${...}``.
    ``trust=True`` allows ``import:`` to run the modules it names (see the module docstring);
    ``None`` keeps the current setting (:func:`trusted_imports`, ``--trust``), untrusted by default.
    """
    if trust is not None:
        with trusted_imports(trust):
            return load_spec(source, imports=imports)
    if isinstance(source, dict):
        doc = SpecDoc(copy.deepcopy(source), "<dict>", {(): Mark("<dict>", 1, 1)})
        if "extends" in doc.data:
            raise SpecError("`extends` needs a spec file (paths are relative to it)", path="extends")
        if imports:
            run_imports(doc, os.getcwd())
    else:
        doc = _load_file(os.fspath(source), (), imports)
    resolve_references(doc)
    return doc


def load_spec_text(text: str, file: str = "<string>", *, base_dir: str | None = None,
                   trust: bool | None = None) -> SpecDoc:
    """Load a spec from YAML text (no ``extends``), e.g. for tests and fuzzing (``trust`` as :func:`load_spec`)."""
    if trust is not None:
        with trusted_imports(trust):
            return load_spec_text(text, file, base_dir=base_dir)
    doc = parse_yaml(text, file)
    if not isinstance(doc.data, dict):
        raise SpecError(f"a spec must be a mapping (key: value lines), found a {type(doc.data).__name__}",
                        mark=doc.mark(()))
    if "extends" in doc.data:
        raise doc.error(("extends",), "`extends` needs a spec file (paths are relative to it)")
    run_imports(doc, base_dir or os.getcwd())
    resolve_references(doc)
    return doc
