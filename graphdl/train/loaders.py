"""What the runner iterates: training batches and evaluation sets, for one rank or many.

``train.loader`` picks how a spec's examples become batches::

    train:
      loader: {type: graphs}                          # default: whole graphs, train.batch_size per batch
      loader: {type: neighbor, fanouts: [15, 10], batch_size: 1024, eval: full}

``neighbor`` trains a node task on one large graph with GraphSAGE-sampled subgraphs of
``batch_size`` seed nodes (:mod:`graphdl.data.sampling`); the split must select nodes
(``node_random`` or ``node_mask``). Evaluation is either ``full`` (the model runs on the whole
graph, layer after layer, as a full-batch run does) or ``sampled`` (seed batches of the split's
nodes with ``eval_fanouts``, default the training fanouts); the two agree for ``fanouts: all``.

Every training loader is wrapped in :class:`graphdl.train.distributed.RankLoader` (the identity
for one process), and every evaluation set knows which share of its batches this rank runs.
"""

from __future__ import annotations

import math

import torch

from graphdl.data.graph import Graph, collate
from graphdl.data.loader import GraphLoader, StepLoader
from graphdl.data.sampling import NeighborLoader
from graphdl.errors import DataError
from graphdl.train import distributed as D
from graphdl.train.sections import NeighborSampling

# blocks of these families never read a neighbour (element-wise, dense, norms, readouts)
_LOCAL_FAMILIES = {"basic", "norm", "readout", "misc"}


def message_passing_steps(plan) -> list[str]:
    """Where each step of ``plan`` that reads neighbours sits (``model.layers[i] (type)``)."""
    return [f"{s.where} ({s.label})" for s in plan.steps if getattr(s.cls, "family", "misc") not in _LOCAL_FAMILIES]


def check_loader(exp) -> None:
    """Spec-level checks of ``train.loader`` (before any data is read).

    Raises:
        SpecError: fanouts that do not match the model's message-passing layers.
    """
    spec = exp.train.loader
    if not isinstance(spec, NeighborSampling):
        return
    steps = message_passing_steps(exp.plan)
    doc = exp.spec.doc
    if exp.spec.graph.kind != "given":
        raise doc.error(("graph", "kind"), f"neighbour sampling draws edges of the dataset's graph; graph kind "
                                           f"`{exp.spec.graph.kind}` builds its own edges per batch; use "
                                           f"`kind: given` or `train.loader: {{type: graphs}}`")
    for key in ("fanouts", "eval_fanouts"):
        f = getattr(spec, key)
        if isinstance(f, list) and len(f) != len(steps):
            raise doc.error(("train", "loader", key), f"{len(f)} fanout(s) for a model with {len(steps)} "
                                                      f"message-passing layer(s) ({', '.join(steps) or 'none'}); "
                                                      f"give one fanout per layer, so that every layer's "
                                                      f"neighbourhood is sampled")


def fanouts(spec: NeighborSampling, plan, which: str = "fanouts") -> list[int]:
    f = getattr(spec, which)
    if f is None:
        f = spec.fanouts
    return [-1] * len(message_passing_steps(plan)) if f == "all" else list(f)


def whole_graph(graphs: list[Graph]) -> Graph:
    """The one graph of a node-sampled dataset (:func:`check_data` refuses more)."""
    return graphs[0]


def train_loader(exp, task, graphs, train_examples, phase, device) -> D.RankLoader:
    """This rank's training batches (see the module docstring)."""
    tr = exp.train
    w = D.world()
    spec = tr.loader
    if isinstance(spec, NeighborSampling):
        g = whole_graph(graphs)
        seeds = g[phase["train"]].reshape(-1).nonzero().squeeze(1)
        base = NeighborLoader(g, seeds, fanouts(spec, exp.plan), spec.batch_size or tr.batch_size, shuffle=True,
                              seed=tr.seed, mask_key=phase["train"], pin_memory=device.type == "cuda")
    else:
        base = GraphLoader(train_examples, tr.batch_size, shuffle=True, seed=tr.seed)
    if tr.steps_per_epoch is not None:
        base = StepLoader(base, tr.steps_per_epoch)
    return D.RankLoader(base, w.rank, w.size)


def to_device(batch: Graph, device: torch.device) -> Graph:
    """``batch`` on ``device``; to a GPU through page-locked memory with an asynchronous copy."""
    if device.type != "cuda":
        return batch if batch.device == device else batch.to(device)
    if not batch.edge_index.is_pinned():
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


def shardable(task) -> bool:
    """Whether a split's evaluation may be cut into per-rank shares: the task uses the default
    evaluation (per-batch :meth:`collect`, then :meth:`metrics` of the gathered rows)."""
    from graphdl.train.tasks import Task

    return task is not None and type(task).evaluate is Task.evaluate


class EvalSet:
    """A split's dataset graphs collated once, in order, on the device (reused every epoch: the CSR and
    other per-batch caches are built once too). Drawing nothing from torch's generator (the
    loader gets a seed), it leaves the training's random stream as it was.

    With several ranks and a task using the default evaluation, each rank holds a contiguous share
    of the batches (:attr:`sharded`; :attr:`first` is the index of its first batch among
    :attr:`total`), and :func:`graphdl.train.runner.evaluate` gathers the rows."""

    def __init__(self, graphs: list, index: list[int], batch_size: int, device, task=None, split: str = "val"):
        self.index = list(index)
        self.split = split
        """``val`` or ``test`` (a task may evaluate them differently: short or full rollouts)."""
        w = D.world()
        self.sharded = w.active and shardable(task)
        examples = task.examples(graphs, self.index, training=False) if task is not None else \
            [graphs[i] for i in self.index]
        groups = GraphLoader(examples, batch_size, shuffle=False, seed=0).batch_indices(0)
        starts, s = [], 0
        for grp in groups:
            starts.append(s)
            s += sum(examples[i].num_graphs for i in grp)
        self.total = len(groups)
        mine = list(range(self.total))
        if self.sharded:
            mine = D.shard(mine, w.rank, w.size)
        self.first = mine[0] if mine else self.total
        ids_all = torch.tensor(self.index, dtype=torch.long)
        self.batches: list[tuple] = []
        for b in mine:
            batch = collate([examples[i] for i in groups[b]])
            n = batch.num_graphs
            self.batches.append((to_device(batch, device), ids_all[starts[b]:starts[b] + n].to(device)))


class _SampledBatches:
    """The sampled batches of a split, drawn again on every pass with the same keys (so every
    evaluation sees the same subgraphs) instead of being held in memory."""

    def __init__(self, loader: NeighborLoader, parts: list[int], device, code: int):
        self.loader, self.parts, self.device, self.code = loader, parts, device, code
        self.groups = loader.batch_indices(0)

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self):
        ids = torch.zeros(1, dtype=torch.long, device=self.device)
        for b in self.parts:
            yield to_device(self.loader.make_batch(self.groups[b], (-1, b, self.code)), self.device), ids


class NodeEvalSet:
    """A node split of one large graph: the whole graph once (``eval: full``) or sampled seed batches
    (``eval: sampled``). Same interface as :class:`EvalSet` (``index``, ``batches``, ``split``,
    ``sharded``, ``first``, ``total``)."""

    def __init__(self, exp, graphs, mask_key: str, device, split: str, cache: dict):
        spec = exp.train.loader
        w = D.world()
        self.index = [0]
        self.split = split
        self.sharded = w.active
        g = whole_graph(graphs)
        if spec.eval == "full":  # one batch, the whole graph: rank 0 runs it
            self.total = 1
            mine = D.shard([0], w.rank, w.size) if w.active else [0]
            self.first = mine[0] if mine else 1
            if mine and "full" not in cache:  # val and test share the graph on the device
                cache["full"] = to_device(g, device)
            self.batches = [(cache["full"], torch.zeros(1, dtype=torch.long, device=device))] if mine else []
            return
        seeds = g[mask_key].reshape(-1).nonzero().squeeze(1)
        bs = exp.train.eval_batch_size or spec.batch_size or exp.train.batch_size
        loader = NeighborLoader(g, seeds, fanouts(spec, exp.plan, "eval_fanouts"), bs, shuffle=False,
                                seed=exp.train.seed, mask_key=mask_key, pin_memory=device.type == "cuda")
        self.total = math.ceil(seeds.numel() / bs)
        mine = list(range(self.total))
        if w.active:
            mine = D.shard(mine, w.rank, w.size)
        self.first = mine[0] if mine else self.total
        self.batches = _SampledBatches(loader, mine, device, {"val": 0, "test": 1}.get(split, 2))


def eval_set(exp, task, graphs, index, split: str, mask_key, device, cache: dict):
    """The evaluation set of ``split`` for this run's loader (``cache`` shares the on-device full graph)."""
    if isinstance(exp.train.loader, NeighborSampling):
        return NodeEvalSet(exp, graphs, mask_key, device, split, cache)
    return EvalSet(graphs, index, exp.train.eval_batch_size or exp.train.batch_size, device, task, split)


def check_data(exp, task, dataset, masks, doc) -> None:
    """Data-level checks of ``train.loader`` (the split and task it needs).

    Raises:
        SpecError: a neighbour loader with a graph-level split or task.
    """
    spec = exp.train.loader
    if not isinstance(spec, NeighborSampling):
        return
    if masks is None:
        raise doc.error(("train", "loader"), f"neighbour sampling trains on nodes of one graph; the "
                                             f"`{exp.data.split.type}` split selects graphs; use "
                                             f"`split: {{type: node_random}}` or `{{type: node_mask}}`")
    if getattr(task, "level", "node") != "node":
        raise doc.error(("train", "loader"), "neighbour sampling needs a node-level task target (`node.*`)")
    if len(dataset.graphs) != 1:
        raise DataError(f"neighbour sampling draws from one graph; dataset `{dataset.meta.get('name', '?')}` holds "
                        f"{len(dataset.graphs)}; train it with `train.loader: {{type: graphs}}`")


__all__ = ["EvalSet", "NodeEvalSet", "check_data", "check_loader",
           "eval_set", "fanouts", "message_passing_steps", "shardable", "to_device", "train_loader", "whole_graph"]
