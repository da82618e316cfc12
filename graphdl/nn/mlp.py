"""Shared building pieces for blocks: activations by name, the MLP every family uses, and the
batch norm every block uses (:class:`BatchNorm1d`, which takes a batch of one row)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphdl.ops.segment import segment_sum

ActName = Literal["relu", "elu", "gelu", "silu", "swish", "leaky_relu", "tanh", "sigmoid", "softplus", "identity"]
ACTIVATIONS = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


class BatchNorm1d(nn.BatchNorm1d):
    """``torch.nn.BatchNorm1d`` that also trains on a batch with one row (or none).

    A batch's variance is undefined for one value per channel, and torch raises
    ``ValueError: Expected more than 1 value per channel when training``. A batch of one row
    is legal, though: the last batch of an epoch (513 graphs in batches of 64 leave one
    graph; with a ``graph.*`` field or a one-atom molecule such as methane that is one row),
    or ``batch_size: 1``. As PyTorch Geometric's ``BatchNorm(allow_single_element=True)``
    (``torch_geometric.nn.norm.BatchNorm``), such a batch is normalised as in evaluation:

        ``y = γ (x − running_mean) / √(running_var + eps) + β``,

    and the running statistics (and ``num_batches_tracked``) are left as they are, since an
    unbiased variance of one value (the running-variance update divides by ``N − 1``) does not
    exist. Gradients reach ``x``, ``γ`` and ``β`` as in evaluation mode. Batches of two or more
    values per channel, and evaluation mode, are exactly torch's. DGL's layers use torch's
    ``BatchNorm1d`` and raise; graphdl never crashes a run on a legal batch.

    The parameters and buffers are torch's, under torch's names, so state dicts and
    checkpoints written with ``nn.BatchNorm1d`` load unchanged.

    **Data parallel** (a run of several ranks, :mod:`graphdl.train.distributed`): in training the
    statistics are those of the *global* batch, all ranks' rows together (torch's
    ``SyncBatchNorm``, which torch 2.13 runs on GPUs only; here on any device, through
    :func:`graphdl.train.distributed.global_sum`): the mean from the ranks' summed rows and
    counts, then the variance from the summed squared deviations from it (two passes, as a
    one-process batch norm computes it). Both sums are differentiable, so every rank's gradient
    is the one-process gradient, and N processes train what one process trains. The one-row
    rule above then applies to the global batch.

    Shapes: ``(N, C)`` or ``(N, C, L)``, unchanged.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and _world_active():
            return self._global_batch_forward(x)
        # values per channel = N (· L); a shape test (no host sync)
        if self.training and self.track_running_stats and x.numel() <= x.size(1):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return super().forward(x)

    def _global_batch_forward(self, x: Tensor) -> Tensor:
        """Training over the ranks' global batch (see the class docstring); no host sync."""
        from graphdl.train.distributed import global_sum as all_reduce

        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        rows = x.numel() // max(x.size(1), 1)
        total = all_reduce(torch.cat([x.sum(dims), x.new_full((1,), float(rows))]))
        n = total[-1]
        mean = total[:-1] / n.clamp(min=1.0)
        centred = x - mean.view(shape)
        sq = all_reduce((centred * centred).sum(dims))
        batch = n > 1  # one row over all ranks: normalise with the running statistics, as alone
        if self.track_running_stats:
            m = torch.where(batch, mean, self.running_mean)
            v = torch.where(batch, sq / n.clamp(min=1.0), self.running_var)
            with torch.no_grad():
                if self.momentum is None:  # cumulative average, as torch
                    factor = 1.0 / (self.num_batches_tracked + 1).to(x.dtype)
                else:
                    factor = torch.tensor(self.momentum, dtype=x.dtype, device=x.device)
                unbiased = sq.detach() / (n - 1).clamp(min=1.0)
                self.running_mean.copy_(torch.where(batch, torch.lerp(self.running_mean, mean.detach(), factor),
                                                    self.running_mean))
                self.running_var.copy_(torch.where(batch, torch.lerp(self.running_var, unbiased, factor),
                                                   self.running_var))
                self.num_batches_tracked.add_(batch.long())
        else:
            m, v = mean, sq / n.clamp(min=1.0)
        y = (x - m.view(shape)) * torch.rsqrt(v.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _world_active() -> bool:
    """Whether this process is one rank of several (a data-parallel run)."""
    from graphdl.train.distributed import world

    return world().active


class MLP(nn.Sequential):
    """``Linear -> [norm] -> act -> [dropout]`` repeated; the last layer is plain linear
    unless ``last_act`` is set.

    Args:
        dims: ``[in, hidden..., out]``.
        act: activation name between layers.
        norm: ``None``, ``"batch"`` (:class:`BatchNorm1d`: a one-row batch uses the running
            statistics) or ``"layer"`` after each hidden linear layer.
        dropout: dropout after each hidden activation.
        last_act: apply ``act`` (and norm) after the last layer too.
        out_norm: ``"layer"`` appends a LayerNorm over the output (after ``last_act`` if set):
            ``LN(MLP(x))``, the MLP of the GNS encoder and processor (Sanchez-Gonzalez et al.
            2020), where ``norm`` sits between hidden layers instead.

    Shapes: ``(*, dims[0]) -> (*, dims[-1])``.
    """

    def __init__(self, dims: Sequence[int], act: str = "relu", norm: str | None = None,
                 dropout: float = 0.0, bias: bool = True, last_act: bool = False, out_norm: str | None = None):
        layers: list[nn.Module] = []
        n = len(dims) - 1
        for i in range(n):
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
            if i < n - 1 or last_act:
                if norm == "batch":
                    layers.append(BatchNorm1d(dims[i + 1]))
                elif norm == "layer":
                    layers.append(nn.LayerNorm(dims[i + 1]))
                # ReLU in place: it always follows a Linear or a norm, whose output is fresh and not
                # saved by their backward; one (rows, width) allocation fewer per layer (on CPU, a
                # page-faulting block for edge MLPs over many edges)
                layers.append(nn.ReLU(inplace=True) if act == "relu" else activation(act))
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        if out_norm == "layer":
            layers.append(nn.LayerNorm(dims[-1]))
        elif out_norm is not None:
            raise ValueError(f"out_norm must be None or 'layer', found {out_norm!r}")
        super().__init__(*layers)
        self.dims = list(dims)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() > 2 and any(isinstance(m, nn.BatchNorm1d) for m in self):
            shape = x.shape
            return super().forward(x.reshape(-1, shape[-1])).reshape(*shape[:-1], -1)
        return super().forward(x)


def segment_mean_count(x: Tensor, index: Tensor, num_segments: int) -> tuple[Tensor, Tensor]:
    """Per-segment mean of rows and row count (used by graph norm).

    Shapes: ``x (N, d)``, ``index (N,)`` → ``mean (S, d)``, ``count (S, 1)``; an empty segment
    has mean 0 and count 1 (clamped, so that dividing by it never yields NaN).
    """
    ones = torch.ones(x.size(0), 1, dtype=x.dtype, device=x.device)
    count = segment_sum(ones, index, num_segments).clamp_min(1)
    mean = segment_sum(x, index, num_segments) / count
    return mean, count
