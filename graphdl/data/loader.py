"""``GraphLoader``: iterate a list of graphs as collated batches.

Shuffling draws from its own ``torch.Generator`` seeded by ``(seed, epoch)``, so the order
of every epoch is reproducible from the seed alone, whatever else consumed random numbers
in between, and a restarted run can resume an epoch with :meth:`GraphLoader.set_epoch`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from graphdl.data.graph import Graph, collate
from graphdl.errors import DataError

__all__ = ["GraphLoader", "StepLoader"]

_MIX = 1_000_003  # (seed, epoch) -> one generator seed, distinct for distinct pairs of small ints


class GraphLoader:
    """Batches of graphs, each the disjoint union :func:`~graphdl.data.graph.collate` builds.

    Args:
        graphs: a sequence of :class:`Graph`, or a dataset with a ``.graphs`` list.
        batch_size: graphs per batch (the last batch may be smaller).
        shuffle: a new permutation every epoch; ``False`` keeps the given order.
        seed: seed of the shuffle; ``None`` draws one from torch's global generator (so
            ``torch.manual_seed`` makes it reproducible too).
        drop_last: leave out a last batch smaller than ``batch_size``.
        num_workers: collate in worker processes through ``torch.utils.data.DataLoader``
            (``0``: in this process).

    ``len(loader)`` is the number of batches per epoch.
    """

    def __init__(
        self,
        graphs: Sequence[Graph],
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
        num_workers: int = 0,
    ):
        if hasattr(graphs, "graphs"):
            graphs = graphs.graphs
        if not hasattr(graphs, "__len__") or not hasattr(graphs, "__getitem__"):
            graphs = list(graphs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, found {batch_size!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise DataError(f"num_workers must be an integer >= 0, found {num_workers!r}")
        self.graphs = graphs
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        self.drop_last = bool(drop_last)
        self.num_workers = num_workers
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.graphs)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its shuffle order depends on it)."""
        self.epoch = int(epoch)

    def batch_indices(self, epoch: int | None = None) -> list[list[int]]:
        """The graph indices of each batch of ``epoch`` (default: the next one to iterate)."""
        epoch = self.epoch if epoch is None else int(epoch)
        n = len(self.graphs)
        if self.shuffle:
            gen = torch.Generator().manual_seed((self.seed * _MIX + epoch) % (2**63))
            order = torch.randperm(n, generator=gen).tolist()
        else:
            order = list(range(n))
        bs = self.batch_size
        batches = [order[i : i + bs] for i in range(0, n, bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[Graph]:
        batches = self.batch_indices(self.epoch)
        self.epoch += 1
        if self.num_workers == 0:
            return (collate([self.graphs[i] for i in b]) for b in batches)
        loader = torch.utils.data.DataLoader(
            self.graphs, batch_sampler=batches, collate_fn=collate, num_workers=self.num_workers
        )
        return iter(loader)

    def __repr__(self) -> str:
        return (
            f"GraphLoader({len(self.graphs)} graphs, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"seed={self.seed}, drop_last={self.drop_last}, num_workers={self.num_workers})"
        )


class StepLoader:
    """A fixed number of batches per epoch drawn from a :class:`GraphLoader`'s endless sequence
    of shuffled passes (``train.steps_per_epoch``): epoch ``e`` yields batches ``e·k .. e·k + k − 1``
    of pass after pass, so a model that trains by steps (GNS: millions of steps over a few
    thousand windows) is validated every ``k`` steps, and a resumed run continues the same
    sequence (each pass's order depends only on the loader's seed and the pass number).
    """

    def __init__(self, loader: GraphLoader, steps: int):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise DataError(f"steps per epoch must be a positive integer, found {steps!r}")
        if len(loader) == 0:
            raise DataError("the training set gives no batch (empty, or smaller than batch_size with drop_last)")
        self.loader = loader
        self.steps = steps
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Graph]:
        per_pass = len(self.loader)
        first = self.epoch * self.steps
        self.epoch += 1
        cache: dict[int, list[list[int]]] = {}
        for b in range(first, first + self.steps):
            p, i = divmod(b, per_pass)
            if p not in cache:
                cache.clear()
                cache[p] = self.loader.batch_indices(p)
            yield collate([self.loader.graphs[j] for j in cache[p][i]])
