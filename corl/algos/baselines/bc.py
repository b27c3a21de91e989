"""Behavior cloning with a tanh-Gaussian policy: BC-All and BC-Safe (DSRL/OSRL baselines).

Loss (maximum likelihood of the dataset's actions)::

    L(theta) = - E_{(s, a) ~ D} [ log pi_theta(a | s) ]

with ``pi_theta`` a tanh-squashed Gaussian (:class:`corl.nn.TanhGaussianPolicy`), whose
log-density includes the tanh change of variables, so actions at the box edges are handled
(clipped inside the open box before ``atanh``).

* BC-All (``mode="all"``) clones every episode of the dataset.
* BC-Safe (``mode="safe"``) clones only the episodes whose cost return is at most the cost
  limit, the DSRL/OSRL baseline that tends to be safe but conservative.

Observations are standardised with the (selected) dataset's mean and std; the statistics are
part of the learner's state so a resumed or evaluated policy sees the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from corl.data.dataset import TransitionDataset
from corl.nn import TanhGaussianPolicy


@dataclass
class BCConfig:
    """Every hyper-parameter of BC, with DSRL/OSRL-like defaults (the ``paper`` preset)."""

    mode: str = "safe"  # "all" (BC-All) or "safe" (BC-Safe)
    cost_limit: float | None = None  # None = the task's default cost limit (BC-Safe filter)
    steps: int = 100_000
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    normalize_obs: bool = True
    #: Dataset actions are clipped to ``[-1 + eps, 1 - eps]`` (in the policy's squashed space)
    #: before ``atanh`` (atanh(0.99) = 2.6): saturated actions (10% of the CarCircle sample) would sit at
    #: ``atanh(1 - 1e-6) = 7.3`` and dominate the likelihood.
    action_eps: float = 1e-2
    min_log_std_reg: float = 0.0  # optional penalty keeping the policy from collapsing its std

    def __post_init__(self) -> None:
        if self.mode not in ("all", "safe"):
            raise ValueError(f"mode must be 'all' or 'safe', got {self.mode!r}")
        if not 0.0 < self.action_eps < 1.0:
            raise ValueError(f"action_eps must be in (0, 1), got {self.action_eps}")
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("steps must be >= 0, batch_size >= 1 and lr > 0")


def select_episodes(dataset: TransitionDataset, mode: str, cost_limit: float | None) -> TransitionDataset:
    """The episodes BC clones: all of them, or those with cost return <= ``cost_limit``."""
    if mode == "all":
        return dataset
    if cost_limit is None:
        raise ValueError("BC-Safe needs a cost limit")
    from corl.data.filtering import safe_episodes

    return safe_episodes(dataset, cost_limit)


class BCLearner:
    """One maximum-likelihood update per :meth:`update`; ``state_dict`` makes resume exact."""

    def __init__(
        self,
        config: BCConfig,
        obs_dim: int,
        act_dim: int,
        act_low: Any = None,
        act_high: Any = None,
        obs_mean: torch.Tensor | None = None,
        obs_std: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.policy_kwargs = {
            "obs_dim": obs_dim,
            "act_dim": act_dim,
            "hidden": list(config.hidden),
            "act_low": None if act_low is None else [float(x) for x in np.asarray(act_low).ravel()],
            "act_high": None if act_high is None else [float(x) for x in np.asarray(act_high).ravel()],
        }
        self.policy = TanhGaussianPolicy(**self.policy_kwargs).to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.obs_mean = (obs_mean if obs_mean is not None else torch.zeros(obs_dim)).to(self.device)
        self.obs_std = (obs_std if obs_std is not None else torch.ones(obs_dim)).to(self.device)
        self.step = 0

    def _normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def _nll_loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``-E[log pi(a|s)]`` over the batch."""
        return -self.policy.log_prob(self._normalize(obs), actions, eps=self.config.action_eps).mean()

    def _log_std(self, obs: torch.Tensor) -> torch.Tensor:
        """Mean log-std of the pre-tanh Gaussian (a second forward pass, so only when used)."""
        return self.policy.distribution(self._normalize(obs)).scale.log().mean()

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        loss = self._nll_loss(batch["observations"], batch["actions"])
        total = loss
        if self.config.min_log_std_reg:
            total = loss - self.config.min_log_std_reg * self._log_std(batch["observations"])
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.step += 1
        return {"bc/nll": float(loss.detach())}

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.act(self._normalize(obs), deterministic=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_mean": self.obs_mean,
            "obs_std": self.obs_std,
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_mean = state["obs_mean"].to(self.device)
        self.obs_std = state["obs_std"].to(self.device)
        self.step = int(state["step"])
