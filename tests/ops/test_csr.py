"""CSR construction: the row pointer agrees with counting, empty rows included."""

import torch

from graphdl.ops.csr import CSR


def test_rowptr_matches_bincount_with_empty_and_trailing_rows():
    gen = torch.Generator().manual_seed(0)
    row = torch.randint(0, 6, (40,), generator=gen) * 2  # odd rows and rows 11..14 stay empty
    col = torch.randint(0, 9, (40,), generator=gen)
    csr = CSR.from_coo(row, col, 15, 9)
    want = torch.zeros(16, dtype=torch.long)
    want[1:] = torch.bincount(row, minlength=15).cumsum(0)
    assert torch.equal(csr.rowptr, want)
    # entries are row-major, ``perm`` maps them back to the input order
    assert torch.equal(csr.row, row[csr.perm]) and torch.equal(csr.col, col[csr.perm])
    key = csr.row * 9 + csr.col
    assert bool((key[1:] >= key[:-1]).all())
    s = CSR.from_sorted_rows(row.sort().values, col, 15, 9)
    assert torch.equal(s.rowptr, want) and s.perm is None


def test_empty_graph_has_a_zero_row_pointer():
    e = torch.zeros(0, dtype=torch.long)
    assert torch.equal(CSR.from_coo(e, e, 3, 3).rowptr, torch.zeros(4, dtype=torch.long))
