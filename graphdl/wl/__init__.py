"""Weisfeiler-Leman tools: colour refinement (1-WL), k-WL and k-FWL, the WL subtree kernel,
and generated graph-pair families for expressiveness checks (dataset type ``wl_pairs``).

Importing this package registers the ``wl_pairs`` dataset type.
"""

from graphdl.wl.dataset import WLPairs, dataset_pairs, pairs_digest
from graphdl.wl.families import (
    FAMILIES,
    PairCase,
    load_pairs,
    pair_to_networkx,
    pair_verdicts,
    permute_nodes,
    read_pair_file,
)
from graphdl.wl.kernel import wl_feature_matrix, wl_subtree_kernel
from graphdl.wl.kwl import TupleColoring, kwl_distinguishes, kwl_equivalence, kwl_refine
from graphdl.wl.refine import WLColoring, wl_distinguishes, wl_equivalence, wl_histograms, wl_refine

__all__ = [
    "FAMILIES",
    "PairCase",
    "TupleColoring",
    "WLColoring",
    "WLPairs",
    "dataset_pairs",
    "kwl_distinguishes",
    "kwl_equivalence",
    "kwl_refine",
    "load_pairs",
    "pair_to_networkx",
    "pair_verdicts",
    "pairs_digest",
    "permute_nodes",
    "read_pair_file",
    "wl_distinguishes",
    "wl_equivalence",
    "wl_feature_matrix",
    "wl_histograms",
    "wl_refine",
    "wl_subtree_kernel",
]
