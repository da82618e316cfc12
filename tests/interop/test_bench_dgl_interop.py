"""benchmarks/dgl_interop.py runs (tiny sizes) and what it measures is round-off."""

from __future__ import annotations

import importlib.util
import os

import pytest

from graphdl.interop.dgl import PIP, dgl_installed
from graphdl.nn.base import dgl_blocks

if not dgl_installed():  # the test extra installs it
    pytest.skip(f"dgl is not installed: {PIP}", allow_module_level=True)
pytest.importorskip("torch_geometric", reason="test extra: torch_geometric==2.8.1")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bench():
    spec = importlib.util.spec_from_file_location("bench_dgl_interop", os.path.join(ROOT, "benchmarks",
                                                                                   "dgl_interop.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_block_with_a_dgl_lowering_is_measured():
    assert {n for n, _ in _bench().LOWERING} == set(dgl_blocks())


def test_tiny_run_prints_three_tables_of_round_off(capsys, monkeypatch):
    bench = _bench()
    # a few rows of each table keep this fast; the full lists run in the benchmark
    monkeypatch.setattr(bench, "PARITY", [r for r in bench.PARITY if r[0] in ("gcn", "gated_gcn")])
    monkeypatch.setattr(bench, "LOWERING", [r for r in bench.LOWERING if r[0] in ("gcn", "gat", "readout")])
    monkeypatch.setattr(bench, "CLASSIC", ["gatv2"])
    out = bench.main(["--nodes", "60", "--edges", "300", "--dim", "8", "--repeats", "1", "--warmup", "0"])
    text = capsys.readouterr().out
    assert sum(line.startswith("|---|") for line in text.splitlines()) == 3
    # float64, the same function: a handful of roundings of eps64 (2.2e-16) relative to the output scale
    for row in out["parity"]:
        for to in ("dgl", "pyg"):
            if isinstance(row[to], float):
                assert row[to] <= 1e-13 * max(1.0, row["scale"]), row
    assert isinstance(out["parity"][1]["pyg"], str) and "gated_gcn" in out["parity"][1]["pyg"]  # refused, said why
    # the lowering test's bound (tests/interop/test_dgl_lowering.py: 1.1e-12)
    assert all(r["diff"] <= 1.1e-12 and r["ours"] > 0 and r["dgl"] > 0 for r in out["lowering"])
    assert {(r["spec"], r["to"]) for r in out["export"]} == {("gatv2", "dgl"), ("gatv2", "pyg")}
    assert all(r["ok"] for r in out["export"] if "refused" not in r)
    assert "edge_input" in next(r["refused"] for r in out["export"] if "refused" in r)  # gatv2 -> DGL
