"""The Weisfeiler-Lehman subtree kernel (Shervashidze et al., JMLR 12, 2011).

    k(G, G') = Σ_{t=0..h} <φ_t(G), φ_t(G')>

where ``φ_t(G)`` counts the nodes of ``G`` of each colour after ``t`` rounds of colour
refinement, colours shared by all graphs (one joint refinement). The feature map
``φ = [φ_0, ..., φ_h]`` is a sparse ``(B, Σ_t K_t)`` count matrix, so the kernel matrix is
``Φ Φᵀ``: symmetric positive semi-definite by construction. With ``normalize=True`` it is
divided by ``sqrt(k(G, G) k(G', G'))`` (cosine normalisation; a graph without nodes keeps a
zero row).

The paper's kernel on labelled graphs uses the node labels as ``φ_0``; unlabelled graphs
start from one colour, so ``φ_0`` counts nodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from graphdl.errors import DataError
from graphdl.wl.refine import wl_refine


def wl_feature_matrix(
    graphs: Any,
    iterations: int = 3,
    *,
    node_labels: str | bool | None = None,
    edge_labels: str | bool | None = None,
) -> sp.csr_matrix:
    """The sparse ``(B, Σ_t K_t)`` matrix of colour counts ``[φ_0 | φ_1 | ... | φ_h]`` (float64)."""
    if iterations < 0:
        raise DataError(f"iterations must be >= 0, found {iterations}")
    res = wl_refine(graphs, iterations, node_labels=node_labels, edge_labels=edge_labels)
    batch = res.batch.numpy()
    rows, cols, offset = [], [], 0
    for t in range(iterations + 1):
        rows.append(batch)
        cols.append(res.colors[t].numpy() + offset)
        offset += res.num_colors[t]
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    m = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(res.num_graphs, offset))
    return m.tocsr()  # duplicates (several nodes of one colour) are summed


def wl_subtree_kernel(
    graphs: Any,
    iterations: int = 3,
    *,
    normalize: bool = False,
    node_labels: str | bool | None = None,
    edge_labels: str | bool | None = None,
) -> Tensor:
    """The ``(B, B)`` float64 WL subtree kernel matrix of a list of graphs, ``h = iterations``.

    Args:
        graphs: graphdl ``Graph`` objects (or a batch) or networkx graphs.
        iterations: ``h``, rounds of refinement (features of rounds ``0..h`` are summed).
        normalize: cosine-normalise to a unit diagonal.
        node_labels, edge_labels: label sources as in :func:`graphdl.wl.wl_refine`.

    Shapes: output ``(B, B)``, ``B`` = number of graphs.
    """
    phi = wl_feature_matrix(graphs, iterations, node_labels=node_labels, edge_labels=edge_labels)
    k = np.asarray((phi @ phi.T).toarray(), dtype=np.float64)
    if normalize:
        # k_ij / sqrt(k_ii k_jj), not k_ij / sqrt(k_ii) / sqrt(k_jj): the counts are integers
        # (exact in float64 below 2^53), so k_ii k_jj is exact and its square root is correctly
        # rounded; two graphs with equal feature vectors get exactly 1, and so does the diagonal.
        d = np.diag(k)
        denom = np.sqrt(np.outer(d, d))
        denom[denom == 0] = 1.0  # a graph without nodes keeps a zero row
        k = k / denom
    return torch.from_numpy(k)
