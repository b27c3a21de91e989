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
    def __init__(
        self,
        act_low: torch.Tensor | Sequence[float] | None,
        act_high: torch.Tensor | Sequence[float] | None,
        act_dim: int,
    ) -> None:
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

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        act_low=None,
        act_high=None,
        state_dependent_std: bool = True,
        log_std_min: float = LOG_STD_MIN,
        log_std_max: float = LOG_STD_MAX,
    ) -> None:
        super().__init__(act_low, act_high, act_dim)
        self.state_dependent_std = state_dependent_std
        self.log_std_min, self.log_std_max = log_std_min, log_std_max  # OSRL's actors: [-20, 2]
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
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
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

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        act_low=None,
        act_high=None,
    ) -> None:
        super().__init__(act_low, act_high, act_dim)
        self.net = MLP(obs_dim, act_dim, hidden, activation, output_activation="tanh")
        self.act_dim = act_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.to_env(self.net(obs))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self(obs)


class PerturbationActor(nn.Module):
    """BCQ's perturbation model ``ξ_φ(s, a) = φ·tanh(f([s, a]))``, output ``clamp(a + ξ, ±1)``.

    It works in the normalised action box ``[-1, 1]`` (callers map to the env's box); OSRL
    uses Tanh hidden activations for it.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "tanh",
        phi: float = 0.05,
    ) -> None:
        super().__init__()
        self.phi = phi
        self.net = MLP(obs_dim + act_dim, act_dim, hidden, activation, output_activation="tanh")

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return (action + self.phi * self.net(torch.cat([obs, action], -1))).clamp(-1.0, 1.0)


class DiagGaussianPolicy(_BoundedPolicy):
    """A plain (un-squashed) diagonal Gaussian ``N(μ(s), diag σ²)``: CVPO (FSRL), CPO/PPO (OmniSafe).

    * ``bounded_mean=True``: ``μ = tanh(f(s))`` mapped to the action box (FSRL's
      ``max_action·tanh``); False: ``μ = f(s)`` unbounded (OmniSafe ``gaussian_learning``).
    * ``state_dependent_std=True``: ``log σ = g(s)`` (one head with the mean); False: a
      learnable state-independent ``log σ`` initialised to ``log_std_init``.
    * ``log σ`` is clamped to ``[log_std_min, log_std_max]``.

    Samples are *not* clipped to the box: the env-side clip is the collector's business, so
    ``log_prob`` of a stored sample is exact (needed by CVPO's M-step and CPO's ratios).
    :meth:`params` / :meth:`make_distribution` expose ``(mean, std)`` so a trust-region step can
    build the decoupled distributions ``N(μ_θ, σ_b)`` and ``N(μ_b, σ_θ)``.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        act_low=None,
        act_high=None,
        state_dependent_std: bool = True,
        bounded_mean: bool = True,
        log_std_init: float = 0.0,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__(act_low, act_high, act_dim)
        self.act_dim = act_dim
        self.state_dependent_std = state_dependent_std
        self.bounded_mean = bounded_mean
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.net = MLP(obs_dim, 2 * act_dim if state_dependent_std else act_dim, hidden, activation)
        if not state_dependent_std:
            self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` in env units, each ``(..., act_dim)``."""
        out = self.net(obs)
        if self.state_dependent_std:
            mu, log_std = out.chunk(2, dim=-1)
        else:
            mu, log_std = out, self.log_std.expand_as(out)
        if self.bounded_mean:
            mu = self.to_env(torch.tanh(mu))
        return mu, log_std.clamp(self.log_std_min, self.log_std_max).exp()

    @staticmethod
    def make_distribution(mean: torch.Tensor, std: torch.Tensor) -> torch.distributions.Distribution:
        return torch.distributions.Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        return self.make_distribution(*self.params(obs))

    @staticmethod
    def _log_prob(mean: torch.Tensor, std: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        z = (action - mean) / std
        return (-0.5 * z.pow(2) - std.log()).sum(-1) - 0.5 * math.log(2 * math.pi) * mean.shape[-1]

    def sample(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(action, log-prob), reparameterised; written without a Distribution object (the
        per-step inference path: fewer small ops than ``distribution(obs).rsample()``)."""
        mean, std = self.params(obs)
        a = mean if deterministic else mean + std * torch.randn_like(mean)
        return a, self._log_prob(mean, std, a)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self._log_prob(*self.params(obs), action)

    def forward(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.sample(obs, deterministic)[0]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.sample(obs, deterministic)[0]


class CholeskyGaussianPolicy(_BoundedPolicy):
    """Full-covariance Gaussian ``N(μ(s), L(s)L(s)ᵀ)`` of the original CVPO code.

    ``μ = sigmoid(clamp(f(s), −5, 5))`` mapped affinely to ``[low, high]``; the Cholesky head
    gives ``|A|(|A|+1)/2`` entries clamped to ``[−5, 20]``, the diagonal passed through
    ``softplus + 1e-4``. Xavier-normal initialisation. :meth:`params` returns
    ``(mean, scale_tril)``.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        act_low=None,
        act_high=None,
    ) -> None:
        super().__init__(act_low, act_high, act_dim)
        self.act_dim = act_dim
        self.trunk = MLP(obs_dim, hidden[-1], hidden[:-1], activation, output_activation=activation)
        self.mean_head = nn.Linear(hidden[-1], act_dim)
        self.chol_head = nn.Linear(hidden[-1], act_dim * (act_dim + 1) // 2)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)
        rows, cols = torch.tril_indices(act_dim, act_dim)
        self.register_buffer("tril_rows", rows, persistent=False)
        self.register_buffer("tril_cols", cols, persistent=False)

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action (the mean) without building the Cholesky factor: the same
        values as ``act(obs, deterministic=True)``, and no ``diag_embed`` (which ONNX lacks)
        in an exported graph."""
        return self._mean(self.trunk(obs))

    def _mean(self, h: torch.Tensor) -> torch.Tensor:
        low = self.action_bias - self.action_scale
        return low + 2 * self.action_scale * torch.sigmoid(self.mean_head(h).clamp(-5.0, 5.0))

    def params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        mean = self._mean(h)
        entries = self.chol_head(h).clamp(-5.0, 20.0)
        tril = entries.new_zeros(*entries.shape[:-1], self.act_dim, self.act_dim)
        tril[..., self.tril_rows, self.tril_cols] = entries
        diag = nn.functional.softplus(torch.diagonal(tril, dim1=-2, dim2=-1)) + 1e-4
        tril = torch.tril(tril, -1) + torch.diag_embed(diag)
        return mean, tril

    @staticmethod
    def make_distribution(mean: torch.Tensor, scale_tril: torch.Tensor) -> torch.distributions.Distribution:
        return torch.distributions.MultivariateNormal(mean, scale_tril=scale_tril, validate_args=False)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        return self.make_distribution(*self.params(obs))

    def sample(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.distribution(obs)
        a = dist.mean if deterministic else dist.rsample()
        return a, dist.log_prob(a)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.distribution(obs).log_prob(action)

    def forward(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.sample(obs, deterministic)[0]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.sample(obs, deterministic)[0]
