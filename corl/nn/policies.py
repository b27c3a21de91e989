"""Policies shared by every method: tanh-squashed Gaussian (SAC, BC, CVPO) and deterministic.

Actions live in ``[-1, 1]^act_dim`` inside the networks; :attr:`action_scale` and
:attr:`action_bias` map them to the env's box, so every policy's actions stay in bounds.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.distributions import Normal

from corl.nn.mlp import MLP

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class _BoundedPolicy(nn.Module):
    def __init__(self, act_low: torch.Tensor | Sequence[float] | None, act_high: torch.Tensor | Sequence[float] | None, act_dim: int) -> None:
        super().__init__()
        low = torch.as_tensor(act_low if act_low is not None else [-1.0] * act_dim, dtype=torch.float32)
        high = torch.as_tensor(act_high if act_high is not None else [1.0] * act_dim, dtype=torch.float32)
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)

    def to_env(self, squashed: torch.Tensor) -> torch.Tensor:
        return squashed * self.action_scale + self.action_bias

    def from_env(self, action: torch.Tensor) -> torch.Tensor:
        return (action - self.action_bias) / self.action_scale


class TanhGaussianPolicy(_BoundedPolicy):
    """``a = tanh(mu + sigma * eps)`` with the change-of-variables log-probability."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", act_low=None, act_high=None,
                 state_dependent_std: bool = True) -> None:
        super().__init__(act_low, act_high, act_dim)
        self.state_dependent_std = state_dependent_std
        out = 2 * act_dim if state_dependent_std else act_dim
        self.net = MLP(obs_dim, out, hidden, activation)
        if not state_dependent_std:
            self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.act_dim = act_dim

    def distribution(self, obs: torch.Tensor) -> Normal:
        """The pre-tanh Gaussian."""
        out = self.net(obs)
        if self.state_dependent_std:
            mu, log_std = out.chunk(2, dim=-1)
        else:
            mu, log_std = out, self.log_std.expand_as(out)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        return Normal(mu, log_std.exp())

    def sample(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(env action, log-prob) with the reparameterisation trick."""
        dist = self.distribution(obs)
        u = dist.mean if deterministic else dist.rsample()
        a = torch.tanh(u)
        # log|det d tanh(u)/du| computed stably: 2 (log 2 - u - softplus(-2u))
        log_prob = dist.log_prob(u).sum(-1) - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        log_prob = log_prob - torch.log(self.action_scale).sum()
        return self.to_env(a), log_prob

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Log-density of a given env action (clipped inside the open box for atanh)."""
        a = self.from_env(action).clamp(-1 + eps, 1 - eps)
        u = torch.atanh(a)
        dist = self.distribution(obs)
        log_prob = dist.log_prob(u).sum(-1) - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return log_prob - torch.log(self.action_scale).sum()

    def forward(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.sample(obs, deterministic)[0]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.sample(obs, deterministic)[0]


class DeterministicPolicy(_BoundedPolicy):
    """``a = tanh(f(s))`` scaled to the box: a Dirac policy (TD3, DRCORL's extracted policy)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", act_low=None, act_high=None) -> None:
        super().__init__(act_low, act_high, act_dim)
        self.net = MLP(obs_dim, act_dim, hidden, activation, output_activation="tanh")
        self.act_dim = act_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.to_env(self.net(obs))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self(obs)
