"""graphdl.interop.dgl: DGL imports beside the running torch; graphbolt is stubbed only when its
library for this torch is missing, with one warning; nothing is patched otherwise.

The patched and unpatched paths run in fresh interpreters (an import can happen once per process):
once on the installed DGL, once on a minimal fake ``dgl`` package laid out like the real one
(``dgl/__init__`` imports ``graphbolt``, whose ``__init__`` raises when its library is absent).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from graphdl.data.convert import MissingDependencyError
from graphdl.interop.dgl import PIP, GraphboltUnavailableError, dgl_installed, graphbolt_library, load_dgl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = textwrap.dedent("""
    import json, sys, warnings
    from graphdl.interop.dgl import DGLSamplingUnavailableWarning, load_dgl
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = load_dgl()
        second = load_dgl()
    gb = sys.modules.get("dgl.graphbolt")
    print(json.dumps({
        "same": first is second,
        "warnings": [str(w.message) for w in caught if w.category is DGLSamplingUnavailableWarning],
        "stub": type(gb).__name__ == "_GraphboltUnavailable",
        "loaded": bool(getattr(gb, "LOADED", False)) if type(gb).__name__ != "_GraphboltUnavailable" else False,
        "file": getattr(first, "__file__", ""),
    }))
""")


def _probe(pythonpath: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fake_dgl(tmp_path, with_library: bool) -> str:
    """A package `dgl` whose graphbolt raises FileNotFoundError without its library, as DGL 2.1's does."""
    pkg = tmp_path / "dgl"
    (pkg / "graphbolt").mkdir(parents=True)
    (pkg / "nn" / "pytorch").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import graphbolt as gb\n\ndef graph(*args, **kwargs):\n    return None\n")
    (pkg / "nn" / "__init__.py").write_text("")
    (pkg / "nn" / "pytorch" / "__init__.py").write_text("")
    lib = graphbolt_library(str(pkg))
    (pkg / "graphbolt" / "__init__.py").write_text(textwrap.dedent(f"""
        import os
        if not os.path.exists({lib!r}):
            raise FileNotFoundError("Cannot find DGL C++ graphbolt library at {lib}")
        LOADED = True
    """))
    if with_library:
        open(lib, "w").close()
    return str(tmp_path)


def test_library_present_means_plain_import_nothing_patched(tmp_path):
    res = _probe([_fake_dgl(tmp_path, with_library=True), ROOT])
    assert res["file"].startswith(str(tmp_path))  # the fake package was the one imported
    assert res == {**res, "same": True, "warnings": [], "stub": False, "loaded": True}


def test_library_missing_means_stub_and_one_warning(tmp_path):
    res = _probe([_fake_dgl(tmp_path, with_library=False), ROOT])
    assert res["file"].startswith(str(tmp_path))
    assert res["same"] and res["stub"] and not res["loaded"]
    assert len(res["warnings"]) == 1, res["warnings"]  # two loads, one warning
    assert "dgl.graphbolt" in res["warnings"][0] and torch.__version__ in res["warnings"][0]


# the test extra installs DGL; only its absence skips (an installed DGL that fails to import is an error)
needs_dgl = pytest.mark.skipif(not dgl_installed(), reason=f"dgl is not installed: {PIP}")


def test_blocked_dgl_is_not_installed_and_load_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dgl", None)
    assert not dgl_installed()
    with pytest.raises(MissingDependencyError, match=r'pip install "dgl==2\.1\.0" "torchdata==0\.7\.1"'):
        load_dgl()


def test_fake_package_counts_as_installed(tmp_path):
    out = subprocess.run([sys.executable, "-c", "from graphdl.interop.dgl import dgl_installed; "
                          "print(dgl_installed())"], capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([_fake_dgl(tmp_path, True), ROOT])})
    assert out.stdout.strip() == "True", out.stderr[-2000:]


@needs_dgl
def test_installed_dgl_loads_and_is_patched_only_if_its_library_is_missing():
    res = _probe([ROOT])
    missing = not os.path.exists(graphbolt_library())
    assert res["same"] and res["stub"] is missing
    assert len(res["warnings"]) == (1 if missing else 0)


@needs_dgl
def test_dgl_core_works_and_graphbolt_says_why_it_is_missing():
    dgl = load_dgl()
    g = dgl.graph((torch.tensor([0, 1, 2, 2]), torch.tensor([1, 2, 0, 0])), num_nodes=4)
    x = torch.arange(8, dtype=torch.float64).reshape(4, 2).requires_grad_(True)
    out = dgl.ops.copy_u_sum(g, x)  # a builtin message + reduce kernel, with autograd
    assert torch.equal(out.detach(), torch.tensor([[8.0, 10.0], [0.0, 1.0], [2.0, 3.0], [0.0, 0.0]], dtype=torch.float64))
    out.sum().backward()
    assert torch.equal(x.grad[:, 0], torch.tensor([1.0, 1.0, 2.0, 0.0], dtype=torch.float64))  # out-degrees
    if not os.path.exists(graphbolt_library()):
        assert not hasattr(dgl.graphbolt, "ItemSampler")
        with pytest.raises(GraphboltUnavailableError, match=r"no library for torch .*libgraphbolt_pytorch"):
            _ = dgl.graphbolt.ItemSampler
