"""Shared helpers of the IPA tests: random chains on the complete graph with self-loops."""

from __future__ import annotations

import torch

from graphdl.data.graph import Graph, collate
from graphdl.nn.base import BuildContext
from graphdl.ops.frames import make_frame
from graphdl.ops.neighbors import complete_graph

COMPLETE = BuildContext(graph_kind="complete", self_loops=True)


def random_rotations(n: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """``n`` uniformly random proper rotations ``(n, 3, 3)``."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    q = q * torch.det(q).sign().view(-1, 1, 1)
    return q.to(dtype)


def random_frames(n: int, gen: torch.Generator, spread: float = 10.0, dtype=torch.float64) -> torch.Tensor:
    return make_frame(random_rotations(n, gen, dtype), (torch.randn(n, 3, generator=gen, dtype=torch.float64)
                                                        * spread).to(dtype))


def chains(sizes, *, single: int = 16, pair: int | None = 8, seed: int = 0, spread: float = 10.0,
           dtype=torch.float64, self_loops: bool = True) -> Graph:
    """A batch of chains on the complete graph (with self-loops): ``node.s``, ``node.frame``, ``edge.z``."""
    gen = torch.Generator().manual_seed(seed)
    graphs = [Graph(None, n, {"node.s": torch.randn(n, single, generator=gen, dtype=torch.float64).to(dtype),
                              "node.frame": random_frames(n, gen, spread, dtype)}) for n in sizes]
    b = collate(graphs)
    g = Graph(complete_graph(b.batch, b.num_graphs), b.num_nodes, b.fields, batch=b.batch,
              num_graphs=b.num_graphs, validate=False)
    if self_loops:
        g = g.add_self_loops()
    if pair is not None:
        g.fields["edge.z"] = torch.randn(g.num_edges, pair, generator=gen, dtype=torch.float64).to(dtype)
    return g


def randomize(block: torch.nn.Module, seed: int = 1, std: float = 0.3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_((torch.randn(p.shape, generator=gen, dtype=torch.float64) * std).to(p.dtype))
