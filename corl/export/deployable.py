"""The policy as a robot runs it: one module from raw observations to in-bounds actions.

Why one module: a trained corl policy is more than its network. The observation
normalisation (the training data's mean and std), the deterministic action (the mean for
Gaussian policies, ``tanh`` of it for squashed ones) and the clip to the action box are
applied by corl's rollout around the network; a standalone file must carry all of them, or
the robot sees a different policy. :class:`DeployablePolicy` is exactly that chain, and
``corl.load_policy`` and ``corl export`` both use it, so the exported file and corl act alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn


class DeployablePolicy(nn.Module):
    """``obs (B, obs_dim) float32 -> action (B, act_dim)``: normalise, act deterministically, clip."""

    def __init__(
        self,
        module: nn.Module,
        obs_mean: torch.Tensor | None,
        obs_std: torch.Tensor | None,
        act_low: Sequence[float],
        act_high: Sequence[float],
    ) -> None:
        super().__init__()
        self.policy = module
        obs_dim = None if obs_mean is None else int(obs_mean.numel())
        self.normalize = obs_mean is not None
        self.register_buffer(
            "obs_mean", obs_mean.detach().float().reshape(-1) if obs_mean is not None else torch.zeros(0)
        )
        self.register_buffer("obs_std", obs_std.detach().float().reshape(-1) if obs_std is not None else torch.ones(0))
        self.register_buffer("act_low", torch.as_tensor(list(act_low), dtype=torch.float32))
        self.register_buffer("act_high", torch.as_tensor(list(act_high), dtype=torch.float32))
        self.obs_dim = obs_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            obs = (obs - self.obs_mean) / self.obs_std
        if hasattr(self.policy, "mean_action"):  # the same values, fewer ops (CholeskyGaussianPolicy)
            action = self.policy.mean_action(obs)
        elif hasattr(self.policy, "act"):
            action = self.policy.act(obs, deterministic=True)
        else:
            action = self.policy(obs)
        return torch.maximum(torch.minimum(action, self.act_high), self.act_low)


@dataclass
class LoadedPolicy:
    """A deployable policy and what is known about where it came from."""

    module: DeployablePolicy
    builder: str
    obs_dim: int
    act_dim: int
    act_low: list[float]
    act_high: list[float]
    artifact_dir: Path
    spec: dict[str, Any]


def action_box(task: Any, spec: dict[str, Any]) -> tuple[list[float], list[float]]:
    """The action box: the policy's own ``act_low``/``act_high`` (stages pass the env's box),
    else the env's (built once, then closed)."""
    kwargs = spec.get("kwargs", {})
    if kwargs.get("act_low") is not None and kwargs.get("act_high") is not None:
        return [float(v) for v in kwargs["act_low"]], [float(v) for v in kwargs["act_high"]]
    from corl.envs.factory import make_env

    env = make_env(task)
    try:
        return env.action_space.low.astype(float).tolist(), env.action_space.high.astype(float).tolist()
    finally:
        env.close()


def load_deployable(artifact_dir: Path, spec: dict[str, Any], task: Any) -> LoadedPolicy:
    """Rebuild a saved policy (``corl.store.policies``) as a :class:`DeployablePolicy` on the CPU."""
    from corl.store.policies import load_policy_module

    module, mean, std = load_policy_module(artifact_dir, spec, "cpu")
    module.requires_grad_(False)
    low, high = action_box(task, spec)
    deployable = DeployablePolicy(module, mean, std, low, high).eval()
    return LoadedPolicy(
        deployable, spec["builder"], int(task.obs_dim), int(task.act_dim), low, high, Path(artifact_dir), spec
    )


__all__ = ["DeployablePolicy", "LoadedPolicy", "action_box", "load_deployable"]
