"""What OSRL's off-policy safe baselines (BCQ-Lag, BEAR-Lag, CPQ, COptiDICE) share.

* The data conventions of OSRL's ``TransitionDataset`` (baselines.md 0.3): rewards times
  ``reward_scale`` (0.1), costs times ``cost_scale`` (1), ``done = terminals OR timeouts``
  (``done_on_timeout``; corl's own learners bootstrap through timeouts), actions mapped to
  the normalised box ``[-1, 1]`` the networks work in.
* The episodic cost limit as a Q threshold, ``L (1 - gamma^T) / ((1 - gamma) T)`` (0.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from corl.nn.critics import group_min
from corl.nn.losses import stepwise_threshold
from corl.nn.vae import VAE, vae_loss


@dataclass
class OfflineSafeConfig:
    """Fields every OSRL-style learner has; defaults are OSRL's CarCircle settings."""

    steps: int = 100_000
    batch_size: int = 512
    gamma: float = 0.99
    tau: float = 0.005
    cost_limit: float | None = None  # episodic; None = the task's first DSRL limit
    episode_len: int | None = None  # T of the Q threshold; None = the task's episode length
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    #: OSRL treats a timeout as a terminal (no bootstrap across truncation); False bootstraps.
    done_on_timeout: bool = True

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError("steps must be >= 0 and batch_size >= 1")
        if not 0.0 <= self.gamma < 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError("gamma must be in [0, 1) and tau in (0, 1]")


def q_threshold(cost_limit: float, gamma: float, episode_len: int) -> float:
    """OSRL's ``qc_thres``: the discounted sum of a constant per-step cost ``L / T``."""
    return stepwise_threshold(cost_limit, gamma, episode_len)


class BatchPrep:
    """Turns a corl batch into OSRL's tensors (scaled reward/cost, normalised actions, masks)."""

    def __init__(
        self,
        cfg: OfflineSafeConfig,
        act_low: Sequence[float] | None,
        act_high: Sequence[float] | None,
        act_dim: int,
        device: torch.device,
    ) -> None:
        low = torch.as_tensor(act_low if act_low is not None else [-1.0] * act_dim, dtype=torch.float32)
        high = torch.as_tensor(act_high if act_high is not None else [1.0] * act_dim, dtype=torch.float32)
        self.scale = ((high - low) / 2).to(device)
        self.bias = ((high + low) / 2).to(device)
        self.cfg = cfg

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        done = batch["terminals"] | batch["timeouts"] if cfg.done_on_timeout else batch["terminals"]
        return {
            "obs": batch["observations"],
            "next_obs": batch["next_observations"],
            "act": ((batch["actions"] - self.bias) / self.scale).clamp(-1.0, 1.0),
            "reward": batch["rewards"] * cfg.reward_scale,
            "cost": batch["costs"] * cfg.cost_scale,
            "not_done": (~done).float(),
        }


def bounds_kwargs(act_low: Sequence[float] | None, act_high: Sequence[float] | None) -> dict:
    """JSON-able action bounds for a policy builder's kwargs."""
    return {
        "act_low": None if act_low is None else [float(x) for x in act_low],
        "act_high": None if act_high is None else [float(x) for x in act_high],
    }


def soft_clipped_double_q(pair: torch.Tensor, lmbda: float) -> torch.Tensor:
    """BCQ's target value ``l min(Q1, Q2) + (1 - l) max(Q1, Q2)`` of a ``(2, rows)`` pair."""
    lo, hi = pair.min(0).values, pair.max(0).values
    return lmbda * lo + (1.0 - lmbda) * hi


@torch.no_grad()
def reward_cost_targets(
    critic_target: torch.nn.Module,
    s_rep: torch.Tensor,
    a_next: torch.Tensor,
    b: dict[str, torch.Tensor],
    num_samples: int,
    num_q: int,
    gamma: float,
    lmbda: float,
    cost_done_mask: bool,
) -> torch.Tensor:
    """BCQ-Lag / BEAR-Lag critic targets, ``(4 num_q, B)``: one ensemble whose members
    ``[0, 2 num_q)`` are the reward critic (groups Q1, Q2) and ``[2 num_q, 4 num_q)`` the cost
    critic; ``a_next`` are ``num_samples`` candidate next actions per row of ``s_rep``.

        v  = max_candidates soft_clipped_double_q(Q1', Q2'),    y   = r + gamma (1 - d) v
        vc = max_candidates soft_clipped_double_q(Qc1', Qc2'),  y_c = c + gamma (1 - d) vc
    (``cost_done_mask`` False: the cost target bootstraps through terminals, as OSRL's.)
    """
    groups = group_min(critic_target(s_rep, a_next), 4)  # reward Q1', Q2', cost Qc1', Qc2'
    v = soft_clipped_double_q(groups[:2], lmbda).view(-1, num_samples).max(1).values
    vc = soft_clipped_double_q(groups[2:], lmbda).view(-1, num_samples).max(1).values
    y = b["reward"] + gamma * b["not_done"] * v
    yc = b["cost"] + gamma * (b["not_done"] if cost_done_mask else 1.0) * vc
    k = 2 * num_q
    return torch.cat([y.expand(k, -1), yc.expand(k, -1)])


def joint_vae_step(
    vae: VAE, optimizer: torch.optim.Optimizer, obs: torch.Tensor, act: torch.Tensor, beta: float
) -> float:
    """One Adam step of the behaviour VAE trained jointly with the policy (``vae_joint``);
    returns the loss for the logs."""
    loss, _ = vae_loss(vae, obs, act, beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
