"""``CSR.from_sorted_cols`` (the transpose of a dst-sorted Graph) equals ``CSR.from_coo``."""

from __future__ import annotations

import pytest
import torch

from graphdl.data.graph import Graph
from graphdl.ops.csr import CSR


@pytest.mark.parametrize("n,e,seed", [(1, 0, 0), (5, 12, 1), (40, 300, 2), (7, 60, 3)])
def test_from_sorted_cols_equals_from_coo(n, e, seed):
    gen = torch.Generator().manual_seed(seed)
    ei = torch.randint(n, (2, e), generator=gen)  # repeated edges and self-loops included at these densities
    g = Graph(ei, n)  # sorts by destination
    a = CSR.from_sorted_cols(g.src, g.dst, n, n)
    b = CSR.from_coo(g.src, g.dst, n, n)
    for k in ("rowptr", "col", "row", "perm"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k  # integer indices: exact
    assert torch.equal(g.csr_t().perm, b.perm)
