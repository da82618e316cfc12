"""graphdl's fused CPU edge kernels (C++, ``csrc/edge_kernels.cpp``), built on first use.

The kernels walk a CSR's rows in parallel and accumulate each destination's messages in
their own loop, so the ``(E, C)`` tensors that gather/scatter formulations allocate (the
gathered rows, the gate, the gated message) are never written:

* ``csr_sum``: ``out_i = Σ_{k ∈ row i} w_k x_{col k}`` (GCN, SAGE, GIN aggregation);
* ``relu_sum``: GINE's ``Σ_j ReLU(x_j + e_ji)``, and the edge gradient of it;
* ``gated_sum``: ResGatedGraphConv's ``Σ_j σ(k_i + q_j) ⊙ v_j`` and both sides of its gradient,
  with the gates recomputed in backward (no ``(E, C)`` tensor in forward or backward);
* ``counting_sort``: a CSR's transpose by a stable counting sort, ``O(E + N)``;
* ``gated_edge_*``: GatedGCN's ``ê``, gated numerator and denominator in one pass, and its
  backward (``∂ê`` is an ``(E, C)`` output there because ``ê`` is the layer's edge output).

Build: ``torch.utils.cpp_extension.load`` with the system C++ compiler, ``-O3 -march=native``
(the library is built on the machine that runs it) and OpenMP, into torch's extension cache
(``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``) under a name that hashes the
source, flags, torch version and CPU flags, so a changed kernel or machine builds afresh. About
30–60 s once per machine; ``python -m graphdl.build_kernels`` builds it ahead (``make test`` does).

Fallback: with ``GRAPHDL_KERNELS=0`` in the environment, on a build failure (no compiler:
one warning naming the cause), on CUDA, for dtypes other than float32/float64 and under
``torch.compile`` the callers keep their torch-op paths; the results agree to float
round-off (tests compare both, and gradcheck the kernels' autograd functions in float64).
"""

from __future__ import annotations

import hashlib
import os
import platform
import warnings
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("csrc") / "edge_kernels.cpp"
_CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
_LDFLAGS = ["-fopenmp"]
_state: dict = {}


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _name() -> str:
    h = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), " ".join(_CFLAGS + _LDFLAGS).encode(), torch.__version__.encode(),
                 _cpu_flags().encode()):
        h.update(part)
    return f"graphdl_kernels_{h.hexdigest()[:16]}"


def disabled() -> bool:
    """True when ``GRAPHDL_KERNELS`` is ``0``/``off``/``false`` (use the torch-op paths)."""
    return os.environ.get("GRAPHDL_KERNELS", "1").strip().lower() in ("0", "off", "false", "no")


def build(verbose: bool = False) -> bool:
    """Build (or load from the cache) the kernel library; True when its ops are registered.

    Never raises: a failed build warns once with the compiler's cause and returns False."""
    if "ok" in _state:
        return _state["ok"]
    ok = False
    try:
        from torch.utils.cpp_extension import load

        load(name=_name(), sources=[str(_SOURCE)], extra_cflags=_CFLAGS, extra_ldflags=_LDFLAGS,
             is_python_module=False, verbose=verbose)
        ok = hasattr(torch.ops.graphdl_kernels, "csr_sum")
    except Exception as exc:  # noqa: BLE001 - any build failure means: use the torch-op paths
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        warnings.warn(
            f"graphdl: the fused CPU edge kernels did not build ({first}); using torch ops instead "
            "(same results, slower on edge-heavy layers). Install a C++ compiler (g++) to enable "
            "them, or set GRAPHDL_KERNELS=0 to skip the attempt.",
            RuntimeWarning,
            stacklevel=2,
        )
    _state["ok"] = ok
    return ok


def usable(*tensors: torch.Tensor) -> bool:
    """True when the fused kernels apply to these tensors: CPU, float32/float64, not tracing
    under ``torch.compile``, kernels enabled and built."""
    if disabled() or torch.compiler.is_compiling():
        return False
    for t in tensors:
        if t is None:
            continue
        if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
            return False
    return build()


def usable_index(*tensors: torch.Tensor) -> bool:
    """True when the index kernels (``counting_sort``) apply: CPU tensors of one dtype, int32 or
    int64, not tracing, kernels enabled and built."""
    if disabled() or torch.compiler.is_compiling():
        return False
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1 or dtypes.pop() not in (torch.int32, torch.int64):
        return False
    if any(t.device.type != "cpu" for t in tensors):
        return False
    return build()


def index_pair(csr) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rowptr, col)`` of a CSR in one integer dtype (the kernels take int32 or int64 pairs)."""
    rowptr = csr.rowptr
    return rowptr, (csr.col if csr.col.dtype == rowptr.dtype else csr.col.to(rowptr.dtype))


def ops():
    """The registered ops (``torch.ops.graphdl_kernels``); call :func:`usable` first."""
    return torch.ops.graphdl_kernels


def main() -> int:
    """``python -m graphdl.build_kernels``: build ahead of first use; exit 1 when it cannot."""
    import time

    t0 = time.perf_counter()
    ok = build(verbose=False)
    print(f"graphdl kernels: {'ready' if ok else 'NOT built (torch-op fallback)'} "
          f"in {time.perf_counter() - t0:.1f} s ({_name()})")
    return 0 if ok else 1
