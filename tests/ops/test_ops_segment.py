"""Segment reductions and segment softmax against plain loops and torch_geometric.utils."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphdl.errors import DataError
from graphdl.ops import (
    REDUCTIONS,
    scatter,
    segment_max,
    segment_mean,
    segment_min,
    segment_softmax,
    segment_sum,
)
from graphdl.testing.tolerance import roundoff

pyg_utils = pytest.importorskip("torch_geometric.utils")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# float64 against loops and PyG: sums of ≤ 40 rows of |x| ≤ 4.5 (randn) in any order differ by at most
# 40·eps·Σ|x| ≈ 1.6e-12 (worst case; measured ≤ 2e-15); softmax weights lie in [0, 1]. The default
# 1e-7 would pass a float32 step (≈ 6e-8).
F64 = {"rtol": 0.0, "atol": 1e-11}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: a second intra-op thread only adds OpenMP spin-waits on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_index(
    num_segments: int, num_rows: int, *, empty: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted segment ids with the first ``empty`` segments unused, and their CSR offsets."""
    gen = torch.Generator().manual_seed(seed)
    lo = min(empty, max(num_segments - 1, 0))
    if num_rows and num_segments:
        index = torch.randint(lo, num_segments, (num_rows,), generator=gen).sort().values
    else:
        index = torch.zeros(0, dtype=torch.long)
    ptr = torch.zeros(num_segments + 1, dtype=torch.long)
    ptr[1:] = torch.bincount(index, minlength=num_segments).cumsum(0)
    return index, ptr


def loop_reduce(x: torch.Tensor, index: torch.Tensor, num_segments: int, reduce: str) -> torch.Tensor:
    out = x.new_zeros((num_segments,) + tuple(x.shape[1:]))
    for s in range(num_segments):
        rows = x[index == s]
        if rows.size(0):
            op = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax, "min": torch.amin}[reduce]
            out[s] = op(rows, 0)
    return out


def loop_softmax(x: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    out = torch.empty_like(x)
    for s in range(num_segments):
        m = index == s
        if m.any():
            out[m] = torch.softmax(x[m], 0)
    return out


CASES = [  # (num_segments, num_rows)
    (9, 40),  # segments 0, 1 empty; several rows each
    (5, 5),  # some single-row segments
    (6, 0),  # no rows at all
    (1, 7),  # one segment
    (0, 0),  # nothing
]
SHAPES = [(), (3,), (20,), (2, 4)]  # 20 >= 16 takes the scatter_reduce path with ptr


@pytest.mark.parametrize("reduce", REDUCTIONS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("use_ptr", [False, True])
def test_reductions_match_loop_and_pyg(reduce, case, shape, use_ptr):
    num_segments, num_rows = case
    index, ptr = make_index(num_segments, num_rows)
    x = torch.randn((num_rows,) + shape, dtype=torch.float64)
    out = scatter(x, index, num_segments, reduce, ptr=ptr if use_ptr else None)
    assert out.shape == (num_segments,) + shape
    torch.testing.assert_close(out, loop_reduce(x, index, num_segments, reduce), **F64)
    if num_rows:
        ref = pyg_utils.scatter(x, index, 0, dim_size=num_segments, reduce=reduce)
        torch.testing.assert_close(out, ref, **F64)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("use_ptr", [False, True])
def test_integer_inputs(use_ptr):
    index, ptr = make_index(6, 30)
    x = torch.randint(-50, 50, (30, 3))
    for reduce in ("sum", "max", "min"):
        out = scatter(x, index, 6, reduce, ptr if use_ptr else None)
        assert out.dtype == torch.long
        torch.testing.assert_close(out, loop_reduce(x, index, 6, reduce))


@pytest.mark.parametrize("fn", [segment_sum, segment_mean, segment_max, segment_min])
def test_unsorted_index_without_ptr(fn):
    index = torch.tensor([3, 0, 3, 1, 0, 3, 1])
    x = torch.randn(7, 5, dtype=torch.float64)
    reduce = fn.__name__.split("_")[1]
    torch.testing.assert_close(fn(x, index, 5), loop_reduce(x, index, 5, reduce), **F64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", DEVICES)
def test_dtypes_devices(dtype, device):
    index, ptr = make_index(30, 200)
    x = torch.randn(200, 8, dtype=dtype)
    # ≤ 30 rows per segment summed in dtype, and the float64 reference rounded to dtype:
    # |out − ref| ≤ (30 + 2)·u·Σ|x|, u = eps/2 (measured ≤ 0.4 eps·max Σ|x| in float32); factor 16
    atol = roundoff(loop_reduce(x.double().abs(), index, 30, "sum"), 16, dtype)
    assert torch.bincount(index).max() <= 30
    for reduce in REDUCTIONS:
        ref = loop_reduce(x.double(), index, 30, reduce).to(dtype)
        for p in (None, ptr):
            out = scatter(x.to(device), index.to(device), 30, reduce, None if p is None else p.to(device))
            assert out.dtype == dtype
            torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=atol)


@pytest.mark.parametrize("fn", [segment_sum, segment_mean, segment_max, segment_min])
@pytest.mark.parametrize("use_ptr", [False, True])
@pytest.mark.parametrize("shape", [(), (3,), (17,)])
def test_reduction_gradcheck(fn, use_ptr, shape):
    index, ptr = make_index(7, 14)
    # distinct values: max/min are differentiable away from ties
    x = torch.randperm(14 * torch.Size(shape).numel(), dtype=torch.float64).reshape((14,) + shape) / 10
    x.requires_grad_(True)
    # gradcheck's defaults (atol 1e-5, rtol 1e-3): the reductions are piecewise linear (no truncation
    # error with values 0.1 apart and the step 1e-6), so the difference carries only round-off (≤ 5e-9)
    assert torch.autograd.gradcheck(lambda t: fn(t, index, 7, ptr if use_ptr else None), (x,))


@pytest.mark.parametrize("fn", [segment_sum, segment_mean, segment_max])
def test_reduction_double_backward(fn):
    index, ptr = make_index(6, 12)
    x = torch.randperm(36, dtype=torch.float64).reshape(12, 3).div(7).requires_grad_(True)
    for p in (None, ptr):
        assert torch.autograd.gradgradcheck(lambda t, p=p: fn(t, index, 6, p).pow(2), (x,))


@pytest.mark.parametrize("use_ptr", [False, True])
def test_max_min_gradient_split_between_ties(use_ptr):
    index = torch.tensor([0, 0, 0, 2, 2])
    ptr = torch.tensor([0, 3, 3, 5])
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0], [3.0, 0.0], [-1.0, 2.0], [-2.0, 2.0]], requires_grad=True)
    segment_max(x, index, 3, ptr if use_ptr else None).sum().backward()
    expected = torch.tensor([[0.0, 0.5], [0.5, 0.5], [0.5, 0.0], [1.0, 0.5], [0.0, 0.5]])
    torch.testing.assert_close(x.grad, expected)
    x.grad = None
    segment_min(x, index, 3, ptr if use_ptr else None).sum().backward()
    expected = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.5], [1.0, 0.5]])
    torch.testing.assert_close(x.grad, expected)


def test_empty_segments_are_zero_and_grad_finite():
    index = torch.tensor([1, 1, 3])
    ptr = torch.tensor([0, 0, 2, 2, 3, 3])
    x = torch.tensor([-5.0, -7.0, 2.0], requires_grad=True)
    for p in (None, ptr):
        for reduce in REDUCTIONS:
            out = scatter(x, index, 5, reduce, p)
            assert out[[0, 2, 4]].eq(0).all() and torch.isfinite(out).all()
            (g,) = torch.autograd.grad(out.sum(), x)
            assert torch.isfinite(g).all()
    torch.testing.assert_close(segment_max(x, index, 5), torch.tensor([0.0, -5.0, 0.0, 2.0, 0.0]))


@settings(max_examples=30, deadline=None)
@given(
    num_segments=st.integers(0, 12),
    num_rows=st.integers(0, 40),
    width=st.sampled_from([1, 2, 16]),
    seed=st.integers(0, 2**16),
    reduce=st.sampled_from(REDUCTIONS),
)
def test_reductions_property(num_segments, num_rows, width, seed, reduce):
    if num_segments == 0:
        num_rows = 0
    index, ptr = make_index(num_segments, num_rows, empty=seed % 3, seed=seed)
    x = torch.randn(num_rows, width, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    ref = loop_reduce(x, index, num_segments, reduce)
    torch.testing.assert_close(scatter(x, index, num_segments, reduce), ref, **F64)
    torch.testing.assert_close(scatter(x, index, num_segments, reduce, ptr), ref, **F64)


# ------------------------------------------------------------------------------- softmax
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", [(), (4,), (20,)])
@pytest.mark.parametrize("use_ptr", [False, True])
def test_softmax_matches_loop_and_pyg(case, shape, use_ptr):
    num_segments, num_rows = case
    index, ptr = make_index(num_segments, num_rows)
    x = 5 * torch.randn((num_rows,) + shape, dtype=torch.float64)
    out = segment_softmax(x, index, num_segments, ptr if use_ptr else None)
    assert out.shape == x.shape
    torch.testing.assert_close(out, loop_softmax(x, index, num_segments), **F64)
    if num_rows:
        torch.testing.assert_close(out, pyg_utils.softmax(x, index, num_nodes=num_segments), **F64)
        sums = segment_sum(out, index, num_segments)
        nonempty = torch.bincount(index, minlength=num_segments) > 0
        torch.testing.assert_close(sums[nonempty], torch.ones_like(sums[nonempty]), **F64)


@pytest.mark.parametrize("use_ptr", [False, True])
@pytest.mark.parametrize("shape", [(), (3,)])
def test_softmax_gradcheck_and_double_backward(use_ptr, shape):
    index, ptr = make_index(6, 12)
    x = torch.randn((12,) + shape, dtype=torch.float64, requires_grad=True)
    p = ptr if use_ptr else None
    # gradcheck's defaults (atol 1e-5, rtol 1e-3) over O(1) Jacobians: truncation h²/6·|f‴| ≈ 1e-13 and
    # round-off eps/h ≈ 2e-10 at h = 1e-6 (measured ≤ 1e-10)
    assert torch.autograd.gradcheck(lambda t: segment_softmax(t, index, 6, p), (x,))
    assert torch.autograd.gradgradcheck(lambda t: segment_softmax(t, index, 6, p), (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_never_nan(dtype):
    inf = float("inf")
    # segments: 0 empty, 1 single row, 2 huge logits, 3 all -inf, 4 mixed -inf, 5 +inf, 6 empty
    index = torch.tensor([1, 2, 2, 3, 3, 4, 4, 5, 5, 5])
    x = torch.tensor([3.0, 1e30, -1e30, -inf, -inf, -inf, 2.0, inf, 0.0, inf], dtype=dtype)
    x2 = torch.stack([x, -x.nan_to_num(posinf=0)], 1)
    for logits in (x, x2):
        logits = logits.clone().requires_grad_(True)
        for p in (None, torch.tensor([0, 0, 1, 3, 5, 7, 10, 10])):
            y = segment_softmax(logits, index, 7, p)
            assert torch.isfinite(y).all()
            (g,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), logits)
            assert torch.isfinite(g).all()
    y = segment_softmax(x, index, 7)
    expected = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.5, 0.0, 0.5], dtype=dtype)
    torch.testing.assert_close(y, expected)


def test_softmax_large_logits_float32_stable():
    index, ptr = make_index(10, 80)
    x = 1e4 * torch.randn(80, 2)
    ref = loop_softmax(x.double(), index, 10).float()
    # same float32 logits on both sides: a weight w = exp(−δ) gets ≤ u·δ·w ≤ u/e from rounding
    # δ = max − x, plus a few u from the normalisation (u = eps32/2): float32's default atol 1e-5
    # ≈ 80 eps32 (exact here)
    torch.testing.assert_close(segment_softmax(x, index, 10, ptr), ref)


# -------------------------------------------------------------------------------- errors
def test_scatter_unknown_reduce_lists_valid_names():
    x, index = torch.ones(3, 2), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="did you mean `max`.*`max`, `mean`, `min`, `sum`"):
        scatter(x, index, 1, "maxx")
    with pytest.raises(ValueError, match="valid names are `max`, `mean`, `min`, `sum`"):
        scatter(x, index, 1, "prod")


def test_bad_inputs_raise_data_error():
    x = torch.ones(3, 2)
    with pytest.raises(DataError, match="x has 3 rows but index has 2"):
        segment_sum(x, torch.zeros(2, dtype=torch.long), 1)
    with pytest.raises(DataError, match="int64"):
        segment_max(x, torch.zeros(3, dtype=torch.int32), 1)
    with pytest.raises(DataError, match="1-D"):
        segment_mean(x, torch.zeros(3, 1, dtype=torch.long), 1)
    with pytest.raises(DataError, match=r"ptr must have shape \(2,\)"):
        segment_sum(x, torch.zeros(3, dtype=torch.long), 1, ptr=torch.tensor([0, 3, 3]))
    with pytest.raises(DataError, match="floating point"):
        segment_softmax(torch.ones(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), 1)
