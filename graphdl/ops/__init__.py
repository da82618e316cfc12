"""Kernels on plain tensors: segment reductions, CSR sparse × dense products.

Nothing here knows about specs or blocks; every function takes tensors (and a :class:`CSR`)
and returns tensors, on CPU or CUDA, without host synchronisation.
"""

from graphdl.ops.csr import CSR
from graphdl.ops.segment import (
    REDUCTIONS,
    scatter,
    segment_max,
    segment_mean,
    segment_min,
    segment_softmax,
    segment_sum,
)
from graphdl.ops.spmm import gather_scatter_reference, sddmm, spmm

__all__ = [
    "CSR",
    "REDUCTIONS",
    "gather_scatter_reference",
    "scatter",
    "sddmm",
    "segment_max",
    "segment_mean",
    "segment_min",
    "segment_softmax",
    "segment_sum",
    "spmm",
]
