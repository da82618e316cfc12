"""NVIDIA cuEquivariance lowering of the e3nn operations in ``tfn`` and ``se3_transformer``.

cuEquivariance (https://github.com/NVIDIA/cuEquivariance) describes an equivariant tensor
product as a segmented polynomial and runs it with fused CUDA kernels
(``cuequivariance-ops-torch-cu12``), or with a pure-PyTorch einsum path (``method="naive"``)
anywhere else. Its ``cue.O3`` irreps, Clebsch-Gordan coefficients, "component" irrep and
"element" path normalisation and the per-path weight order ``(mul_in1, mul_in2, mul_out)``
are e3nn's, and its ``cue.mul_ir`` layout is e3nn's field layout, so the same weights give
the same outputs (``tests/test_cueq_backend.py`` checks it to float64 round-off):

* :class:`CueqTensorProduct` ≡ ``e3nn.o3.FullyConnectedTensorProduct(in1, in2, out,
  shared_weights=False, internal_weights=False)``:
  ``out_k = Σ_paths α_path Σ_{u,v} w_{uvw} C^{l1 l2 lk} x1_u ⊗ x2_v``, weights per row;
* :class:`CueqLinear` ≡ ``e3nn.o3.Linear(in, out)`` (no biases), with the same state
  (``weight``, ``bias``, ``output_mask``), so checkpoints load in either backend.

Backend choice (:func:`choose_backend`): ``e3nn``; ``cuequivariance`` (an error naming the
pip command when the package is absent; CUDA kernels when ``cuequivariance_ops_torch`` is
importable and a GPU is present, else the torch fallback); ``auto`` = cuequivariance when
its kernels can run here (package + ops + CUDA), else e3nn, with the reason in ``describe``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from graphdl.errors import InferenceError, KernelUnavailableError
from graphdl.types import Irreps

BACKENDS = ("auto", "e3nn", "cuequivariance")
CUEQ_PIP = "pip install 'graphdl[cueq]' (= pip install cuequivariance-torch)"
CUEQ_OPS_PIP = "pip install cuequivariance-ops-torch-cu12"


def cueq_installed() -> bool:
    """``cuequivariance_torch`` is importable (pure Python: it runs everywhere, kernels or not)."""
    return importlib.util.find_spec("cuequivariance_torch") is not None


def cueq_kernels_installed() -> bool:
    """NVIDIA's compiled kernels (``cuequivariance_ops_torch``) are importable."""
    return importlib.util.find_spec("cuequivariance_ops_torch") is not None


@dataclass(frozen=True)
class BackendChoice:
    """The backend a block runs on: ``name`` e3nn|cuequivariance, ``kernels`` (CUDA kernels used), ``note``."""

    name: str
    kernels: bool = False
    note: str = ""

    def describe(self) -> str:
        return f"backend: {self.name}" + (f" ({self.note})" if self.note else "")


def choose_backend(requested: str, block: str) -> BackendChoice:
    """Resolve ``backend: auto | e3nn | cuequivariance`` for one block (see the module docstring)."""
    if requested not in BACKENDS:
        raise InferenceError(f"{block}: unknown backend `{requested}`; expected one of "
                             + ", ".join(f"`{b}`" for b in BACKENDS))
    if requested == "e3nn":
        return BackendChoice("e3nn")
    has_cueq, has_ops, has_cuda = cueq_installed(), cueq_kernels_installed(), torch.cuda.is_available()
    if requested == "auto":
        if has_cueq and has_ops and has_cuda:
            return BackendChoice("cuequivariance", True, "auto: fused_tp CUDA kernels")
        why = ("no CUDA" if not has_cuda else "cuequivariance-torch not installed" if not has_cueq
               else "cuequivariance-ops-torch not installed")
        return BackendChoice("e3nn", False, f"auto: {why}")
    if not has_cueq:
        raise KernelUnavailableError(
            f"{block}: backend `cuequivariance` needs NVIDIA cuEquivariance, which is not installed; "
            f"{CUEQ_PIP}, plus {CUEQ_OPS_PIP} for its CUDA kernels; or use `backend: e3nn` / `auto`")
    if has_ops and has_cuda:
        return BackendChoice("cuequivariance", True, "fused_tp CUDA kernels")
    why = "no CUDA" if not has_cuda else f"cuequivariance-ops-torch not installed: {CUEQ_OPS_PIP}"
    return BackendChoice("cuequivariance", False, f"torch fallback, no CUDA kernels: {why}")


def _cue_irreps(irreps):
    import cuequivariance as cue

    return cue.Irreps("O3", str(irreps))


def _constants_not_saved(module: nn.Module) -> nn.Module:
    """Make the buffers of a cuEquivariance module non-persistent.

    They are Clebsch-Gordan constants rebuilt from the irreps; kept out of ``state_dict``
    so a checkpoint holds the same keys in both backends.
    """
    for m in module.modules():
        m._non_persistent_buffers_set.update(m._buffers.keys())
    return module


class _Dispatch(nn.Module):
    """One cuEquivariance operation per execution path: the torch einsum fallback always,
    NVIDIA's ``fused_tp`` kernels (float32 and float64 math) when ``kernels``.

    The kernel path is taken for CUDA tensors only, so a model moved to the CPU still runs
    (the fallback's layout transposes are torch too: ``use_fallback=True``). ``make(method,
    math_dtype, use_fallback)`` builds one operation.
    """

    def __init__(self, make, kernels: bool):
        super().__init__()
        self.kernels = kernels
        self.naive = _constants_not_saved(make("naive", None, True))
        if kernels:
            self.fused32 = _constants_not_saved(make("fused_tp", torch.float32, None))
            self.fused64 = _constants_not_saved(make("fused_tp", torch.float64, None))

    def _apply(self, fn, recurse=True):
        # model.double() / .half() must not recast the kernels' constants: their math dtype is fixed
        super()._apply(fn, recurse)
        if self.kernels:
            for mod, dt in ((self.fused32, torch.float32), (self.fused64, torch.float64)):
                for m in mod.modules():
                    for k, b in m._buffers.items():
                        if b is not None and b.is_floating_point() and b.dtype != dt:
                            m._buffers[k] = b.to(dt)
        return self

    def pick(self, x: Tensor) -> nn.Module:
        if self.kernels and x.is_cuda:
            return self.fused64 if x.dtype == torch.float64 else self.fused32
        return self.naive


class CueqTensorProduct(nn.Module):
    """Fully connected tensor product with per-row weights, on cuEquivariance.

    ``out = x1 ⊗_w x2`` exactly as ``o3.FullyConnectedTensorProduct(irreps_in1, irreps_in2,
    irreps_out, shared_weights=False, internal_weights=False)`` (same weight order and
    normalisation, e3nn ``mul_ir`` layout in and out).

    Shapes: ``x1 (B, dim in1)``, ``x2 (B, dim in2)``, ``weight (B, weight_numel)`` → ``(B, dim out)``.
    """

    def __init__(self, irreps_in1: Irreps, irreps_in2: Irreps, irreps_out: Irreps, kernels: bool = False):
        super().__init__()
        import cuequivariance as cue
        import cuequivariance_torch as cuet

        a, b, c = (_cue_irreps(x) for x in (irreps_in1, irreps_in2, irreps_out))

        def make(method, math_dtype, use_fallback):
            return cuet.FullyConnectedTensorProduct(a, b, c, layout=cue.mul_ir, shared_weights=False,
                                                    internal_weights=False, method=method,
                                                    math_dtype=math_dtype, use_fallback=use_fallback)

        self.ops = _Dispatch(make, kernels)
        self.weight_numel: int = self.ops.naive.weight_numel
        self.out_dim = c.dim

    def forward(self, x1: Tensor, x2: Tensor, weight: Tensor) -> Tensor:
        if x1.shape[0] == 0:  # cuEquivariance wants a non-empty batch
            return x1.new_zeros(0, self.out_dim)
        return self.ops.pick(x1)(x1, x2, weight)


class CueqLinear(nn.Module):
    """Equivariant linear map on cuEquivariance, a drop-in for ``o3.Linear(irreps_in, irreps_out)``.

    ``out_k = Σ_{i: ir_i = ir_k} (1/√fan_in_k) W_{ik} x_i`` (e3nn's "element" normalisation);
    state ``weight (weight_numel,)``, ``bias (0,)`` and ``output_mask (dim out,)`` as e3nn's.

    Shapes: ``(B, dim in) -> (B, dim out)``.
    """

    def __init__(self, irreps_in: Irreps, irreps_out: Irreps, kernels: bool = False):
        super().__init__()
        import cuequivariance as cue
        import cuequivariance_torch as cuet

        a, c = _cue_irreps(irreps_in), _cue_irreps(irreps_out)

        def make(method, math_dtype, use_fallback):
            return cuet.Linear(a, c, layout=cue.mul_ir, shared_weights=True, internal_weights=False,
                               method=method, math_dtype=math_dtype, use_fallback=use_fallback)

        # a map without paths (queries of irreps the input lacks) is zero; cuEquivariance cannot build it
        numel = sum(m_in * m_out for m_in, l_in, q_in in irreps_in.terms
                    for m_out, l_out, q_out in irreps_out.terms if (l_in, q_in) == (l_out, q_out))
        self.ops = _Dispatch(make, kernels) if numel else None
        self.weight = nn.Parameter(torch.randn(numel))
        self.register_buffer("bias", torch.empty(0))
        # e3nn's mask: 1 on the output terms some input term of the same irrep feeds
        ins = {(l, q) for _, l, q in irreps_in.terms}
        mask = [torch.full((m * (2 * l + 1),), float((l, q) in ins)) for m, l, q in irreps_out.terms]
        self.register_buffer("output_mask", torch.cat(mask) if mask else torch.ones(0))
        self.out_dim = c.dim

    def forward(self, x: Tensor) -> Tensor:
        if self.ops is None or x.shape[0] == 0:
            return x.new_zeros(*x.shape[:-1], self.out_dim)
        return self.ops.pick(x)(x, weight=self.weight.unsqueeze(0))


__all__ = ["BACKENDS", "BackendChoice", "CueqLinear", "CueqTensorProduct", "choose_backend", "cueq_installed",
           "cueq_kernels_installed"]
