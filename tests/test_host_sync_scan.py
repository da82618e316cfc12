"""A static scan of ``graphdl/ops`` and ``graphdl/nn`` for calls that force a host sync on CUDA.

Flagged: ``.item()``, ``.tolist()``, ``.numpy()``, ``.cpu()``, ``nonzero`` (``x.nonzero()``,
``torch.nonzero``: its output size is data dependent), one-argument ``torch.where``,
``int(...)``, ``float(...)``, ``bool(...)`` of an expression holding a method call (``int(t.max())``;
``float("inf")`` and ``int(p.k)`` are not), and an ``if``/``while``/``assert`` whose test calls
``.any()``, ``.all()`` or ``.item()``. Each finding is keyed by (file, enclosing function, source
text), so moving code does not break the list; every justified one is in :data:`ALLOWED` with its
reason. A new sync in a hot path fails :func:`test_no_unlisted_host_syncs`; a listed one that
disappeared fails :func:`test_allow_list_has_no_stale_entries` (keep the list honest).
The runtime counterpart is ``tests/test_cuda_sync_free.py`` (``set_sync_debug_mode("error")``).
"""

from __future__ import annotations

import ast

from docs_runner import ROOT

PACKAGES = ("graphdl/ops", "graphdl/nn")
_GRAPH = "graph building (neighbour search), once per batch, not in a layer's forward: the edge count is data " \
         "dependent and must reach the host to size the output"
_PAD = "dense padding of a batch to its largest graph: the padded size must be known on the host; once per batch"

ALLOWED: dict[tuple[str, str, str], str] = {
    ("graphdl/ops/frames.py", "_layout", "int(counts.max())"): _PAD,
    ("graphdl/ops/neighbors.py", "_block_pairs", "int(batch.max())"): _GRAPH,
    ("graphdl/ops/neighbors.py", "_block_pairs", "int(deg.sum())"): _GRAPH + " (the edge count)",
    ("graphdl/ops/neighbors.py", "radius_graph", "int(batch.max())"): _GRAPH,
    ("graphdl/ops/neighbors.py", "radius_graph", "float((p - lo[batch]).max())"): _GRAPH + " (the cell size)",
    ("graphdl/ops/neighbors.py", "_kdtree_radius", "p.double().numpy()"): _GRAPH + " (SciPy's cKDTree: host)",
    ("graphdl/ops/neighbors.py", "_kdtree_radius", "batch.numpy()"): _GRAPH + " (SciPy's cKDTree: host)",
    ("graphdl/ops/neighbors.py", "_kdtree_radius", "int(b.max())"): "a NumPy array already on the host (cKDTree)",
    ("graphdl/ops/neighbors.py", "_kdtree_radius", "src[keep].numpy()"): _GRAPH + " (cKDTree: host)",
    ("graphdl/ops/neighbors.py", "_kdtree_radius", "dst[keep].numpy()"): _GRAPH + " (cKDTree: host)",
    ("graphdl/ops/neighbors.py", "knn_graph", "int(batch.max())"): _GRAPH,
    ("graphdl/ops/neighbors.py", "knn_graph", "int(counts.max())"): _GRAPH,
}
"""(file, enclosing function, source text) -> why that sync is acceptable."""

_METHODS = {"item", "tolist", "numpy", "cpu", "nonzero"}
_CASTS = {"int", "float", "bool"}
_TEST_CALLS = {"any", "all", "item"}


def _has_method_call(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) for n in ast.walk(node))


def _findings(path) -> list[tuple[str, str, str, int]]:
    rel = path.relative_to(ROOT).as_posix()
    text = path.read_text()
    tree = ast.parse(text)
    found = []

    def visit(node: ast.AST, func: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = node.name
        hit = None
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in _METHODS and not node.args:
                hit = node
            elif isinstance(f, ast.Attribute) and f.attr == "nonzero":
                hit = node
            elif (isinstance(f, ast.Attribute) and f.attr == "where" and isinstance(f.value, ast.Name)
                  and f.value.id == "torch" and len(node.args) == 1):
                hit = node
            elif isinstance(f, ast.Name) and f.id in _CASTS and node.args and _has_method_call(node.args[0]):
                hit = node
        elif isinstance(node, (ast.If, ast.While, ast.Assert, ast.IfExp)):
            if any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in _TEST_CALLS
                   for n in ast.walk(node.test)):
                found.append((rel, func, ast.get_source_segment(text, node.test), node.lineno))
        if hit is not None:
            found.append((rel, func, ast.get_source_segment(text, hit), hit.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, func)

    visit(tree, "<module>")
    return found


def _all_findings() -> list[tuple[str, str, str, int]]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).glob("*.py")):
            out += _findings(path)
    return out


def test_scanner_flags_the_patterns(tmp_path):
    probe = ROOT / "graphdl" / "ops" / "_probe_for_scan_test.py"  # must sit under ROOT for relative paths
    probe.write_text("import torch\n"
                     "def f(x, p):\n"
                     "    a = x.sum().item()\n    b = int(x.max())\n    c = torch.nonzero(x)\n"
                     "    d = x.tolist()\n    e = torch.where(x > 0)\n    g = float('inf')\n    h = int(p.k)\n"
                     "    if (x > 0).any():\n        pass\n")
    try:
        got = {(fn, src) for _, fn, src, _ in _findings(probe)}
    finally:
        probe.unlink()
    assert got == {("f", "x.sum().item()"), ("f", "int(x.max())"), ("f", "torch.nonzero(x)"), ("f", "x.tolist()"),
                   ("f", "torch.where(x > 0)"), ("f", "(x > 0).any()")}, got


def test_no_unlisted_host_syncs():
    bad = [f"{rel}:{line} in {fn}(): {src}" for rel, fn, src, line in _all_findings()
           if (rel, fn, src) not in ALLOWED]
    assert not bad, ("host syncs in kernels/blocks (remove them, or add them to ALLOWED in "
                     "tests/test_host_sync_scan.py with the reason):\n" + "\n".join(bad))


def test_allow_list_has_no_stale_entries():
    seen = {(rel, fn, src) for rel, fn, src, _ in _all_findings()}
    stale = [k for k in ALLOWED if k not in seen]
    assert not stale, f"ALLOWED lists syncs that are no longer in the code: {stale}"
