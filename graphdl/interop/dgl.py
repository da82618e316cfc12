"""Import DGL beside the running torch, and the ``DGLGraph`` of a batch for ``lowering: dgl``.

Why a loader
------------
DGL 2.1.0 (its last wheels on PyPI are built against torch <= 2.2.1) runs with current torch
except for one subpackage: ``dgl.graphbolt``, its sampling and data-loading engine, loads a C++
library built for each torch release (``dgl/graphbolt/libgraphbolt_pytorch_<torch version>.so``)
and raises ``FileNotFoundError`` when the running torch has none. ``import dgl`` reaches it
indirectly (``dgl/__init__`` imports ``dgl.distributed``, whose modules run ``from .. import
graphbolt``), so all of DGL fails to import although nothing else needs that library: the graph
object, the fused sparse kernels (``dgl.ops.gspmm`` / ``gsddmm`` / ``edge_softmax``, the builtin
message and reduce functions of ``update_all``) and ``dgl.nn.pytorch`` live in ``libdgl.so``,
which reaches torch tensors through DLPack, not through torch's C++ ABI.

What :func:`load_dgl` does
--------------------------
* DGL already imported: return it, whoever imported it.
* The graphbolt library for the running torch exists (or DGL is not installed): a plain
  ``import dgl``; nothing is patched.
* Otherwise: a stub module object (:class:`_GraphboltUnavailable`) is registered as
  ``sys.modules["dgl.graphbolt"]`` *before* ``import dgl``. Python's import system looks in
  ``sys.modules`` first, so ``from .. import graphbolt`` in ``dgl.distributed`` binds the stub
  and graphbolt's ``__init__`` (which would load the missing library) never runs. Reading any
  attribute of the stub raises :class:`GraphboltUnavailableError` (a
  :class:`~graphdl.errors.KernelUnavailableError` and an ``AttributeError``, so ``hasattr`` is
  false) naming the missing file; a :class:`DGLSamplingUnavailableWarning` is issued once per
  process. Lost: ``dgl.graphbolt`` (GraphBolt samplers and loaders) and the parts of
  ``dgl.distributed`` that use it; graphdl uses neither.

A missing or broken DGL raises :class:`~graphdl.data.convert.MissingDependencyError` (an
``ImportError``) with the ``pip install`` line.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
import warnings
from typing import Any

import torch

from graphdl.errors import KernelUnavailableError

__all__ = [
    "DGLSamplingUnavailableWarning",
    "GraphboltUnavailableError",
    "dgl_graph",
    "dgl_installed",
    "graphbolt_library",
    "load_dgl",
]

PIP = 'pip install "dgl==2.1.0" "torchdata==0.7.1"  (or pip install -e ".[test]")'


class DGLSamplingUnavailableWarning(UserWarning):
    """DGL was imported with its sampling package (graphbolt) kept out (see the module docstring)."""


class GraphboltUnavailableError(KernelUnavailableError, AttributeError):
    """``dgl.graphbolt`` was used, but it was kept from loading (no library for this torch)."""


class _GraphboltUnavailable(types.ModuleType):
    """Stands in for ``dgl.graphbolt``: every public attribute read raises a clear error."""

    def __init__(self, name: str, missing: str):
        super().__init__(name, "Stub: DGL's graphbolt has no library for this torch (see graphdl.interop.dgl).")
        self.__graphdl_missing__ = missing

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # dunder probes (pickle, inspect, copy) see a plain module
            raise AttributeError(attr)
        raise GraphboltUnavailableError(
            f"dgl.graphbolt.{attr} is unavailable: DGL's sampling package has no library for torch "
            f"{torch.__version__} (`{self.__graphdl_missing__}` does not exist), so graphdl kept it from loading; "
            f"the rest of DGL works. Use DGL's classic samplers (dgl.dataloading) or a torch release DGL ships "
            f"graphbolt for"
        )


_WARNED = False


def graphbolt_library(dgl_dir: str | None = None, torch_version: str | None = None) -> str | None:
    """Path of the graphbolt library DGL would load for ``torch_version`` (default: the running
    torch), or None when DGL is not installed. The name follows ``dgl.graphbolt.load_graphbolt``."""
    if dgl_dir is None:
        spec = importlib.util.find_spec("dgl")
        if spec is None or not spec.submodule_search_locations:
            return None
        dgl_dir = next(iter(spec.submodule_search_locations))
    vers = (torch_version or torch.__version__).split("+", 1)[0]
    if sys.platform.startswith("darwin"):
        name = f"libgraphbolt_pytorch_{vers}.dylib"
    elif sys.platform.startswith("win"):
        name = f"graphbolt_pytorch_{vers}.dll"
    else:
        name = f"libgraphbolt_pytorch_{vers}.so"
    return os.path.join(dgl_dir, "graphbolt", name)


def dgl_installed() -> bool:
    """Whether a ``dgl`` package is installed (found on the path), without importing it.

    True does not promise that it imports: :func:`load_dgl` says why when it does not. Tests use
    this to skip only when DGL is absent, and fail when an installed DGL does not load.
    """
    mod = sys.modules.get("dgl", False)
    if mod is None:  # sys.modules["dgl"] = None: imports of dgl are blocked
        return False
    return mod is not False or importlib.util.find_spec("dgl") is not None


def _missing_dgl(e: BaseException):
    from graphdl.data.convert import MissingDependencyError

    return MissingDependencyError(f"DGL cannot be imported here ({type(e).__name__}: {e}); install it with {PIP}")


def load_dgl():
    """Import and return the ``dgl`` module (see the module docstring for what is patched and when).

    Raises:
        MissingDependencyError: DGL is not installed, or fails to import for another reason.
    """
    global _WARNED
    mod = sys.modules.get("dgl")
    if mod is not None and hasattr(mod, "graph"):
        return mod
    if mod is None and "dgl" in sys.modules:  # sys.modules["dgl"] = None: imports of dgl are blocked
        raise _missing_dgl(ImportError("import of dgl halted; None in sys.modules"))
    lib = graphbolt_library()
    stub = None
    if lib is not None and not os.path.exists(lib) and "dgl.graphbolt" not in sys.modules:
        stub = _GraphboltUnavailable("dgl.graphbolt", lib)
        sys.modules["dgl.graphbolt"] = stub
    try:
        dgl = importlib.import_module("dgl")
        importlib.import_module("dgl.nn.pytorch")
    except (ImportError, OSError, RuntimeError) as e:  # not installed, or a library that does not load
        if stub is not None and sys.modules.get("dgl.graphbolt") is stub:
            del sys.modules["dgl.graphbolt"]
        raise _missing_dgl(e) from e
    if stub is not None:
        dgl.graphbolt = stub  # what `import dgl.graphbolt` / `dgl.graphbolt.x` then find
        if not _WARNED:
            _WARNED = True
            warnings.warn(
                f"DGL's sampling package (dgl.graphbolt) has no library for torch {torch.__version__} "
                f"(`{os.path.basename(lib)}` is missing); graphdl imported DGL without it. Graphs, message "
                f"passing and dgl.nn work; dgl.graphbolt does not",
                DGLSamplingUnavailableWarning, stacklevel=2,
            )
    return dgl


def dgl_graph(g) -> Any:
    """The structure of ``g`` as a ``dgl.DGLGraph`` (no features), cached on ``g``.

    Edge ``k`` of the DGLGraph is edge ``k`` of ``g`` (destination-sorted), so edge tensors pass
    between the two unchanged. Made once per batch, like the CSR (``Graph._cache``), with every
    sparse format DGL's kernels use (COO, CSR, CSC) built at once, so no layer pays for them.

    Raises:
        MissingDependencyError: DGL does not import.
        KernelUnavailableError: ``g`` lives on a device this DGL build cannot use (a CPU-only
            build and a CUDA batch).
    """
    hit = g._cache.get("dgl_graph")
    if hit is not None:
        return hit
    dgl = load_dgl()
    n, e = g.num_nodes, g.num_edges
    idtype = torch.int32 if max(n, e) < 2**31 - 1 else torch.int64
    try:
        dg = dgl.graph((g.src.to(idtype), g.dst.to(idtype)), num_nodes=n, idtype=idtype, device=g.device)
    except dgl.DGLError as err:  # e.g. a CUDA graph on a CPU-only build
        raise KernelUnavailableError(
            f"DGL cannot hold a graph on `{g.device}` ({type(err).__name__}: {err}); run `lowering: dgl` on a "
            f"device this DGL build supports (the PyPI wheel is CPU-only), or use `lowering: auto`"
        ) from None
    dg.create_formats_()
    g._cache["dgl_graph"] = dg
    return dg
