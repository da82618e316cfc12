"""WL subtree kernel: Φ Φᵀ of colour histograms, symmetric PSD, normalisation."""

import networkx as nx
import numpy as np
import torch

from graphdl.testing.tolerance import roundoff
from graphdl.wl import wl_feature_matrix, wl_histograms, wl_subtree_kernel
from graphdl.wl._convert import graph_from_networkx
from graphdl.wl.constructions import cycles


def _graphs(seed=0, count=12):
    rng = np.random.default_rng(seed)
    gs = [nx.gnp_random_graph(int(rng.integers(1, 12)), float(rng.random()), seed=int(rng.integers(2**31)))
          for _ in range(count)]
    return gs + [cycles(6), cycles(3, 3), nx.Graph()]


def test_kernel_is_sum_of_histogram_dot_products():
    gs = _graphs()
    for h in (0, 1, 3):
        K = wl_subtree_kernel(gs, h)
        hists = wl_histograms(gs, iterations=h)
        ref = sum(x.double() @ x.double().T for x in hists)
        assert torch.equal(K, ref)


def test_kernel_symmetric_psd_and_normalised():
    gs = _graphs(1, 20)
    K = wl_subtree_kernel(gs, 3)
    assert torch.equal(K, K.T)
    # a PSD matrix's computed eigenvalues are ≥ −c·eps·‖K‖ with ‖K‖ ≤ n·max|K| (n = 20): ~−1e-14·max|K|;
    # −1e-8·max|K| still fails a genuinely indefinite kernel
    assert torch.linalg.eigvalsh(K).min() > -1e-8 * K.abs().max()
    Kn = wl_subtree_kernel(gs, 3, normalize=True)
    # K_ij / sqrt(K_ii K_jj): a few ulps of values ≤ 1 (measured 1 ulp); factor 8
    assert torch.allclose(Kn, Kn.T, rtol=0, atol=roundoff(1.0, 8))
    d = torch.diag(Kn)
    nonempty = torch.tensor([g.number_of_nodes() > 0 for g in gs])
    ones = torch.ones(int(nonempty.sum()), dtype=torch.float64)
    assert torch.allclose(d[nonempty], ones, rtol=0, atol=roundoff(1.0, 8))
    assert (d[~nonempty] == 0).all()
    assert torch.linalg.eigvalsh(Kn).min() > -1e-10  # as above, with max|Kn| = 1


def test_kernel_values_by_hand():
    K = wl_subtree_kernel([cycles(6), cycles(3, 3), nx.path_graph(3)], 1)
    # C6 and 2C3: 6 nodes of one colour in rounds 0 and 1 -> 36 + 36
    assert K[0, 1] == 72 and K[0, 0] == 72
    # P3 vs C6: round 0: 3 x 6; round 1: P3's middle node has the cycle nodes' signature
    # (colour 0 with two colour-0 neighbours) -> 1 x 6
    assert K[0, 2] == 18 + 6
    assert K[2, 2] == 9 + 1 + 4


def test_feature_matrix_and_graph_inputs():
    gs = _graphs(2, 6)
    phi = wl_feature_matrix(gs, 2)
    assert phi.shape[0] == len(gs)
    assert np.array_equal(np.asarray(phi.sum(1)).ravel(), 3 * np.array([g.number_of_nodes() for g in gs]))
    K_graph = wl_subtree_kernel([graph_from_networkx(g) for g in gs], 2)
    assert torch.equal(K_graph, wl_subtree_kernel(gs, 2))
