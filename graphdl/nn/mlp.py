"""Shared building pieces for blocks: activations by name and the MLP every family uses."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

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


class MLP(nn.Sequential):
    """``Linear -> [norm] -> act -> [dropout]`` repeated; the last layer is plain linear
    unless ``last_act`` is set.

    Args:
        dims: ``[in, hidden..., out]``.
        act: activation name between layers.
        norm: ``None``, ``"batch"`` or ``"layer"`` after each hidden linear layer.
        dropout: dropout after each hidden activation.
        last_act: apply ``act`` (and norm) after the last layer too.

    Shapes: ``(*, dims[0]) -> (*, dims[-1])``.
    """

    def __init__(self, dims: Sequence[int], act: str = "relu", norm: str | None = None,
                 dropout: float = 0.0, bias: bool = True, last_act: bool = False):
        layers: list[nn.Module] = []
        n = len(dims) - 1
        for i in range(n):
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
            if i < n - 1 or last_act:
                if norm == "batch":
                    layers.append(nn.BatchNorm1d(dims[i + 1]))
                elif norm == "layer":
                    layers.append(nn.LayerNorm(dims[i + 1]))
                layers.append(activation(act))
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        super().__init__(*layers)
        self.dims = list(dims)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() > 2 and any(isinstance(m, nn.BatchNorm1d) for m in self):
            shape = x.shape
            return super().forward(x.reshape(-1, shape[-1])).reshape(*shape[:-1], -1)
        return super().forward(x)


def segment_mean_std(x: Tensor, index: Tensor, num_segments: int, eps: float = 1e-5):
    """Per-segment mean and variance of rows (used by graph norm)."""
    from graphdl.ops.segment import segment_sum

    ones = torch.ones(x.size(0), 1, dtype=x.dtype, device=x.device)
    count = segment_sum(ones, index, num_segments).clamp_min(1)
    mean = segment_sum(x, index, num_segments) / count
    return mean, count
