"""`graphdl wl check` decides round-off before T²: a 1-WL-bounded model (GIN, GCN, GAT)
separates no pair 1-WL does not, and still separates what it should."""

from __future__ import annotations

import pytest
import torch

from graphdl.wl import FAMILIES, load_pairs, pair_verdicts
from graphdl.wl.check import (
    NOT_SEPARATED,
    SEPARATED,
    U32,
    U64,
    CheckConfig,
    paired_t2,
    roundoff_tolerance,
    run_check,
    t2_threshold,
)

SPECS = "specs/wl/"
BOUNDED = ("gin", "gcn", "gat")  # message passing with sum / normalised sum / attention: <= 1-WL
# The issue's two 10-node pairs: 1-WL tells neither apart; the second gave T² = 83.1 > 72.34
# (float32 embeddings, differences of round-off only) and "unreliable" for seeds 12 and 16.
ISSUE_PAIRS = "ICZJvZsNg ICrbut{{W\nIEzf~~~~w IQzV~~~~w\n"


def test_tolerance_formula():
    z64 = torch.tensor([[3.0, -4.0], [1.0, 0.5]], dtype=torch.float64)
    z32 = (z64 + torch.tensor([[0.0, 2.0 ** -20], [0.0, 0.0]], dtype=torch.float64)).float()
    # estimate (u64 / u32) E32 = 2^-29 · 2^-20 against the floor u64 · 4 = 2^-51: the estimate wins
    assert roundoff_tolerance(z64, z32) == 2.0 ** 8 * 2.0 ** -49
    exact = z64.float()  # float32 happened to be exact: the floor, 2^8 ulps of the scale 4
    assert roundoff_tolerance(z64, exact) == 2.0 ** 8 * U64 * 4.0
    assert U64 / U32 == 2.0 ** -29


def test_paired_t2_is_zero_within_tolerance_only():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(32, 4, generator=g, dtype=torch.float64)
    tol = 1e-12
    # a systematic shift at round-off size: T² is scale-free and would call it a separation
    tiny = a + 0.5e-12 * (1 + torch.rand(32, 4, generator=g, dtype=torch.float64) * 1e-3)
    assert paired_t2(a, tiny, tol) == (0.0, pytest.approx(float((a - tiny).abs().max())))
    assert paired_t2(a, tiny, 0.0)[0] > t2_threshold(32, 4)
    shifted = a + 1e-6 * (1 + 0.1 * torch.randn(32, 4, generator=g, dtype=torch.float64))
    t2, diff = paired_t2(a, shifted, tol)
    assert diff > tol and t2 > t2_threshold(32, 4)
    nan = shifted.clone()
    nan[0, 0] = float("nan")
    assert paired_t2(a, nan, tol)[0] != paired_t2(a, nan, tol)[0]  # NaN, never "equal"


@pytest.mark.parametrize("seed", [0, 12])
def test_issue_pair_file_not_separated(tmp_path, seed):
    path = tmp_path / "pairs.txt"
    path.write_text(ISSUE_PAIRS)
    report = run_check(SPECS + "gin.yaml", str(path), CheckConfig(seed=seed))
    assert report.wl1 == [False, False]
    for r in report.pairs:
        assert r.verdict == NOT_SEPARATED, r
        assert r.t2 == 0.0 and r.t2_reliability == 0.0
        # round-off (float64) is far below the tolerance: measured ratio < 1e-2
        assert 0.0 < r.max_diff < 0.1 * r.tolerance


def _subset(tmp_path) -> list:
    """Unlabelled pairs 1-WL does not separate, most of them with float64 embeddings that
    differ by round-off (not exactly equal, as those of regular graphs are): the issue's kind.
    Then two pairs 1-WL separates."""
    by_name = {c.meta["name"]: c for c in load_pairs("3wl")}
    out = [by_name[n] for n in ("decalin_vs_bicyclopentyl", "hexagon_vs_2triangles", "rook4x4_vs_shrikhande")]
    path = tmp_path / "pairs.txt"
    path.write_text(ISSUE_PAIRS)
    out += load_pairs(str(path))
    rnd = load_pairs("random", n_pairs=5)  # edge_added, relabelled, regular, edge_added, relabelled
    return out + [rnd[1], rnd[2], rnd[4], rnd[0], rnd[3]]


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    cases = _subset(tmp_path_factory.mktemp("pairs"))
    wl1 = pair_verdicts(cases, "wl1")
    assert wl1 == [False] * 8 + [True, True]
    return cases, wl1


@pytest.mark.parametrize("spec", BOUNDED)
def test_bounded_models_separate_nothing_1wl_does_not(subset, spec):
    cases, wl1 = subset
    report = run_check(SPECS + spec + ".yaml", cases, CheckConfig(epochs=40))
    for r, w in zip(report.pairs, wl1):
        if not w:
            assert r.verdict == NOT_SEPARATED and r.t2 == 0.0, (spec, r)
            assert r.max_diff <= r.tolerance
    if spec == "gin":  # no over-correction: GIN (sum) still separates what 1-WL separates
        for r in report.pairs[8:]:
            assert r.verdict == SEPARATED, r
            assert r.max_diff > 1e6 * r.tolerance  # measured: >= 1e10 on these pairs


@pytest.mark.slow
@pytest.mark.parametrize("spec", BOUNDED)
def test_bounded_models_on_every_family(spec):
    """Every built-in family: the model separates a subset of what 1-WL separates, so zero
    pairs where 1-WL separates zero (csl, srg, cfi, molecular, regular, 3wl). About 2 to 5
    minutes per spec on one core."""
    for fam in FAMILIES:
        cases = load_pairs(fam)
        wl1 = pair_verdicts(cases, "wl1")
        report = run_check(SPECS + spec + ".yaml", cases)
        got = [r.verdict == SEPARATED for r in report.pairs]
        assert not any(g and not w for g, w in zip(got, wl1)), (spec, fam, got, wl1)
        assert all(r.verdict != "unreliable" for r in report.pairs), (spec, fam)
        if spec == "gin":
            assert got == wl1, (fam, got, wl1)


def test_model_that_cannot_run_in_float64_is_named(monkeypatch):
    from graphdl.errors import DataError
    from graphdl.wl import check

    cases = load_pairs("random", n_pairs=2)[1:]
    monkeypatch.setattr(check, "_float64", lambda g: g.replace(node__x=g["node.x"].half()))
    # the model's own input check names a wrong input dtype; switch it off to reach a block failing inside torch
    from graphdl.compile.compiler import GraphModel

    monkeypatch.setattr(GraphModel, "check_inputs", lambda self, g: None)
    with pytest.raises(DataError, match="failed in float64 .*follow the model's dtype"):
        run_check(SPECS + "gin.yaml", cases, CheckConfig(epochs=1))
    monkeypatch.setattr(check, "_float64", lambda g: g)
    monkeypatch.setattr(torch.nn.Module, "double", lambda self: self)  # a model stuck in float32
    with pytest.raises(DataError, match="stays torch.float32 after model.double"):
        run_check(SPECS + "gin.yaml", cases, CheckConfig(epochs=1))
