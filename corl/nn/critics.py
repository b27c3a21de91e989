"""Q and V functions. Twin (or N) critics are one :class:`EnsembleMLP`: one batched op."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from corl.nn.mlp import MLP, EnsembleMLP

Reduction = Literal["min", "mean", "max", "none"]


class EnsembleQ(nn.Module):
    """``num_q`` state-action critics evaluated together: ``q(s, a) -> (num_q, B)``."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        num_q: int = 2,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.num_q = num_q
        self.net = EnsembleMLP(obs_dim + act_dim, 1, num_q, hidden, activation, layer_norm)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], dim=-1)).squeeze(-1)

    def reduced(self, obs: torch.Tensor, act: torch.Tensor, reduction: Reduction = "min") -> torch.Tensor:
        """The members reduced over the ensemble axis (``min`` for clipped double Q)."""
        q = self(obs, act)
        if reduction == "min":
            return q.min(0).values
        if reduction == "max":
            return q.max(0).values
        if reduction == "mean":
            return q.mean(0)
        return q


def group_min(q: torch.Tensor, groups: int) -> torch.Tensor:
    """``(E, ...) -> (groups, ...)``: the min within each of ``groups`` equal member groups.

    OSRL's ``EnsembleDoubleQCritic`` is two groups of ``num_q`` critics, each reduced by min;
    as one ``EnsembleQ`` of ``2 num_q`` members this is ``group_min(q, 2)``.
    """
    return q.reshape(groups, q.shape[0] // groups, *q.shape[1:]).min(1).values


class ValueFunction(nn.Module):
    """A state-value critic ``V(s) -> (B,)``."""

    def __init__(
        self, obs_dim: int, hidden: Sequence[int] = (256, 256), activation: str = "relu", layer_norm: bool = False
    ) -> None:
        super().__init__()
        self.net = MLP(obs_dim, 1, hidden, activation, layer_norm)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``target <- (1 - tau) target + tau source`` as fused foreach ops."""
    t_params = list(target.parameters())
    s_params = list(source.parameters())
    torch._foreach_mul_(t_params, 1.0 - tau)
    torch._foreach_add_(t_params, s_params, alpha=tau)
