"""BREC paired comparison (`graphdl wl check`): T² statistics, model verdicts vs WL, CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from graphdl.cli import main
from graphdl.data.graph import collate
from graphdl.nn.structural import cycle_counts
from graphdl.wl import load_pairs, pair_verdicts
from graphdl.wl._convert import graph_from_networkx
from graphdl.wl.check import SEPARATED, UNRELIABLE, CheckConfig, hotelling_t2, run_check, t2_threshold

SPECS = "specs/wl/"


@pytest.fixture(scope="module")
def csl_subset():
    pairs = load_pairs("csl")
    by_name = {c.meta["name"]: c for c in pairs}
    # s2 has triangles, s3 extra 4-cycles; s4 and s5 agree on 3- and 4-cycle counts
    return [by_name[n] for n in ("csl41_s2_vs_s3", "csl41_s3_vs_s4", "csl41_s4_vs_s5")]


def _verdicts(report):
    return [r.verdict == SEPARATED for r in report.pairs]


def test_threshold_matches_brec():
    assert t2_threshold(32, 16) == pytest.approx(72.34, abs=0.005)  # BREC prints 2 decimals: ±0.005
    with pytest.raises(Exception, match="more relabelings than output dims"):
        t2_threshold(16, 16)


def test_hotelling_t2_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(32, 4)), rng.normal(size=(32, 4)) + 0.3
    d = a - b
    want = 32 * d.mean(0) @ np.linalg.solve(np.cov(d.T) + 1e-7 * np.eye(4), d.mean(0))
    # float64, a 4×4 solve with condition ≤ ~10: ≈ 10·eps relative (two formulas); rel 1e-9 fails a float32 step
    assert hotelling_t2(torch.tensor(a), torch.tensor(b)) == pytest.approx(want, rel=1e-9)
    same = torch.tensor(a)
    assert hotelling_t2(same, same + 1e-9 * torch.randn(32, 4, dtype=torch.float64)) < 1.0


def test_cycle_counts_match_brute_force():
    rng = np.random.default_rng(1)
    graphs = [nx.gnp_random_graph(int(n), 0.4, seed=int(s)) for n, s in zip(rng.integers(5, 9, 3), range(3))]
    g = collate([graph_from_networkx(G) for G in graphs])
    got = cycle_counts(g)
    want = []
    for G in graphs:
        c4 = {v: 0 for v in G}
        # every 4-cycle as a cyclic order a-b-c-d-a, counted once
        for a, b, c, d in itertools.permutations(G, 4):
            if a < min(b, c, d) and b < d and all(G.has_edge(u, v) for u, v in ((a, b), (b, c), (c, d), (d, a))):
                for v in (a, b, c, d):
                    c4[v] += 1
        tri = nx.triangles(G)
        want += [[tri[v], c4[v]] for v in sorted(G)]
    assert got.tolist() == [[float(x) for x in row] for row in want]


def test_gin_sum_separates_exactly_what_1wl_separates():
    for pairs, n_wl1 in ((load_pairs("random", n_pairs=6), 2), (load_pairs("aggregators", n_random=0), 6)):
        report = run_check(SPECS + "gin.yaml", pairs)
        wl1 = pair_verdicts(pairs, "wl1")
        assert sum(wl1) == n_wl1 and len(pairs) == 6  # random: 2 edge_added; aggregators: all 6
        assert _verdicts(report) == wl1
        assert not any(r.verdict == UNRELIABLE for r in report.pairs)
        assert report.threshold == pytest.approx(72.34, abs=0.005)


def test_mixed_label_widths_rejected():
    pairs = load_pairs("random", n_pairs=1) + load_pairs("aggregators", n_random=0)
    with pytest.raises(Exception, match="check families with different labels separately"):
        run_check(SPECS + "gin.yaml", pairs)


def test_mean_and_max_separate_fewer_than_sum():
    pairs = load_pairs("aggregators", n_random=0)
    sums = _verdicts(run_check(SPECS + "gin.yaml", pairs))
    means = _verdicts(run_check(SPECS + "gin_mean.yaml", pairs))
    maxes = _verdicts(run_check(SPECS + "gin_max.yaml", pairs))
    kinds = [c.meta["kind"] for c in pairs]
    assert sums == [True] * 6
    assert means == [k == "mean_not_max" for k in kinds]  # 2 of 6: Xu et al.'s sum > mean
    assert maxes == [False] * 6  # mean > max
    assert sum(maxes) < sum(means) < sum(sums)


def test_csl_needs_more_than_1wl(csl_subset):
    for spec in ("gin.yaml", "gcn.yaml"):
        report = run_check(SPECS + spec, csl_subset, CheckConfig(epochs=20))
        assert _verdicts(report) == [False, False, False], spec
    report = run_check(SPECS + "gin_cycles.yaml", csl_subset, CheckConfig(epochs=20))
    assert _verdicts(report) == [True, True, False]  # s4/s5: same 3- and 4-cycle counts


def test_cli_writes_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    rc = main(["wl", "check", SPECS + "gin.yaml", "--pairs", "aggregators", "--param", "n_random=0",
               "--limit", "2", "--epochs", "10", "--out", str(out), "--plot", str(png)])
    assert rc == 0
    data = json.loads(out.read_text())
    rep = data["reports"][0]
    assert rep["family"] == "aggregators" and rep["counts"]["pairs"] == 2 and rep["counts"]["wl1"] == 2
    assert [p["verdict"] for p in rep["pairs"]] == ["separated", "separated"]
    assert rep["config"]["epochs"] == 10 and rep["config"]["out_dim"] == 16
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "aggregators" in capsys.readouterr().out


def test_cli_rejects_node_output(tmp_path, capsys):
    spec = tmp_path / "node.yaml"
    spec.write_text("graphdl: 1\ninputs: {node.x: 1}\nmodel:\n  layers:\n"
                    "    - {type: linear, input: node.x, output: node.y, out_dim: 16}\n")
    rc = main(["wl", "check", str(spec), "--pairs", "csl", "--limit", "1"])
    assert rc == 2
    assert "scalar graph output" in capsys.readouterr().err


def test_random_features_fixed_in_eval_fresh_in_training():
    from graphdl.nn.structural import RandomFeatures

    g = load_pairs("csl")[0].g1
    blk = RandomFeatures.build({"dim": 4, "seed": 3}, {})
    blk.eval()
    a, b = blk(g, {})["node.random"], blk(g, {})["node.random"]
    assert a.shape == (41, 4) and torch.equal(a, b)
    blk.train()
    assert not torch.equal(blk(g, {})["node.random"], blk(g, {})["node.random"])


def test_random_features_model_keeps_isomorphic_pairs_together(tmp_path):
    # features are i.i.d. per node of the batch, so outputs vary across relabellings but with
    # the same distribution for both graphs of an isomorphic pair: T² stays under threshold
    spec = tmp_path / "rf.yaml"
    spec.write_text(
        "graphdl: 1\ninputs: {node.x: 1}\nmodel:\n  layers:\n"
        "    - {type: random_features, output: node.r, dim: 4}\n"
        "    - {type: concat, inputs: [node.x, node.r], output: node.h}\n"
        "    - {type: gin, input: node.h, out_dim: 16, repeat: 2}\n"
        "    - {type: readout, input: node.h, output: graph.y, reduce: sum}\n")
    pairs = load_pairs("random", n_pairs=2)[1:]  # relabelled
    report = run_check(str(spec), pairs, CheckConfig(epochs=5))
    assert [r.verdict for r in report.pairs] == ["not_separated"]
    assert 0 < report.pairs[0].t2 < report.threshold and 0 < report.pairs[0].t2_reliability < report.threshold


def test_wl_section_supplies_defaults(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(Path(SPECS + "gin.yaml").read_text() + "wl: {pairs: [aggregators], epochs: 3, relabelings: 20}\n")
    out = tmp_path / "r.json"
    assert main(["wl", "check", str(spec), "--limit", "1", "-q", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())["reports"][0]
    assert rep["family"] == "aggregators" and rep["config"]["epochs"] == 3 and rep["config"]["relabelings"] == 20
    assert rep["threshold"] == pytest.approx(t2_threshold(20, 16))
    spec.write_text(Path(SPECS + "gin.yaml").read_text() + "wl: {epoch: 3}\n")
    assert main(["wl", "check", str(spec), "--pairs", "csl"]) == 2
    assert "unknown key `epoch`" in capsys.readouterr().err


def test_laplacian_pe_matches_numpy_and_pads():
    from graphdl.nn.structural import laplacian_pe

    graphs = [nx.path_graph(5), nx.path_graph(3)]
    g = collate([graph_from_networkx(G) for G in graphs])
    pe = laplacian_pe(g, 3)
    L = nx.normalized_laplacian_matrix(graphs[0]).toarray()
    want = np.abs(np.linalg.eigh(L)[1][:, 1:4])
    # float64 eigenvectors (eigen-gaps ≥ 0.1: error ~eps/gap) stored in float32: ≤ eps32/2·|v| = 4e-8
    # (measured 1.2e-8); atol 1e-6 ≈ 8 eps32
    np.testing.assert_allclose(pe[:5].numpy(), want, atol=1e-6)
    L3 = nx.normalized_laplacian_matrix(graphs[1]).toarray()
    np.testing.assert_allclose(pe[5:, :2].numpy(), np.abs(np.linalg.eigh(L3)[1][:, 1:3]), atol=1e-6)
    assert pe[5:, 2].abs().max() == 0  # 3 nodes: only 2 non-trivial eigenvectors
