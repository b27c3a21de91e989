"""Multi-layer perceptrons and batched ensembles: the one definition every method reuses.

An ensemble of ``E`` MLPs is a single module whose weights are ``(E, in, out)`` tensors, so a
forward pass over all members is one batched matmul (``torch.baddbmm``), not a Python loop.
Twin critics are an ensemble of two; MICRO's dynamics model is an ensemble of seven.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

Activation = Callable[[], nn.Module]


def _activation(name: str | Activation) -> nn.Module:
    if callable(name) and not isinstance(name, str):
        return name()
    table = {
        "relu": nn.ReLU,
        "mish": nn.Mish,
        "silu": nn.SiLU,
        "swish": nn.SiLU,
        "tanh": nn.Tanh,
        "elu": nn.ELU,
        "gelu": nn.GELU,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(table)}")
    return table[name]()


class MLP(nn.Module):
    """``in -> [hidden -> act (-> LayerNorm)]* -> out``."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str | Activation = "relu",
        layer_norm: bool = False,
        output_activation: str | Activation | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = in_dim
        for width in hidden:
            layers.append(nn.Linear(last, width))
            if layer_norm:
                layers.append(nn.LayerNorm(width))
            layers.append(_activation(activation))
            last = width
        layers.append(nn.Linear(last, out_dim))
        if output_activation is not None:
            layers.append(_activation(output_activation))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied in one batched matmul.

    Input ``(E, B, in)`` (or ``(B, in)``, broadcast to every member), output ``(E, B, out)``.
    Initialised like ``nn.Linear`` per member.
    """

    def __init__(self, in_dim: int, out_dim: int, ensemble_size: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.ensemble_size = in_dim, out_dim, ensemble_size
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_dim)
        # kaiming_uniform(a=sqrt(5)) as nn.Linear, which reduces to U(-bound, bound)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.ensemble_size, -1, -1)
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"in={self.in_dim}, out={self.out_dim}, ensemble={self.ensemble_size}"


class EnsembleMLP(nn.Module):
    """``E`` MLPs as one module of :class:`EnsembleLinear` layers: ``(E|-, B, in) -> (E, B, out)``."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        ensemble_size: int,
        hidden: Sequence[int] = (256, 256),
        activation: str | Activation = "relu",
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.ensemble_size = ensemble_size
        layers: list[nn.Module] = []
        last = in_dim
        for width in hidden:
            layers.append(EnsembleLinear(last, width, ensemble_size))
            if layer_norm:
                layers.append(nn.LayerNorm(width))
            layers.append(_activation(activation))
            last = width
        layers.append(EnsembleLinear(last, out_dim, ensemble_size))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.ensemble_size, -1, -1)
        if torch.is_grad_enabled():
            return self.net(x)
        # no autograd graph to keep (target values, CVPO's E-step over N x K sampled actions): ReLU
        # and tanh overwrite the layer output they follow (the same values, no new activation tensor)
        for i, layer in enumerate(self.net):
            if i and type(layer) is nn.ReLU:
                x = x.relu_()
            elif i and type(layer) is nn.Tanh:
                x = x.tanh_()
            else:
                x = layer(x)
        return x
