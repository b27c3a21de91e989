"""Model rollouts (algorithms.md §2.4): branch from real states with the current policy.

From ``B`` real start states, for ``horizon`` steps: ``a ~ π(·|s)`` (stochastic), one model
step through a random elite per row (noise on every output), the task's termination function
on the predicted ``s'``; every transition is kept, and rows that terminated are dropped from
the following steps. Everything is batched tensors on the model's device.
"""

from __future__ import annotations

import torch

from corl.algos.micro.dynamics import GaussianEnsembleDynamics
from corl.algos.micro.termination import TerminationFn
from corl.nn.policies import TanhGaussianPolicy


@torch.no_grad()
def model_rollout(
    dynamics: GaussianEnsembleDynamics,
    policy: TanhGaussianPolicy,
    start_obs: torch.Tensor,
    horizon: int,
    termination: TerminationFn,
    member_rows: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Roll ``start_obs`` out for up to ``horizon`` steps; returns (transitions, stats).

    Transitions have the replay-buffer fields (``observations``, ``actions``, ``rewards``,
    ``costs``, ``next_observations``, ``terminals`` as float 0/1) plus ``trajectory`` (index of
    the start state) and ``step`` (0-based step within the rollout), both long.
    """
    obs = start_obs
    trajectory = torch.arange(start_obs.shape[0], device=start_obs.device)
    chunks: list[dict[str, torch.Tensor]] = []
    for t in range(horizon):
        act, _ = policy.sample(obs)
        out = dynamics.step(obs, act, member_rows=member_rows)
        done = termination(obs, act, out["next_observations"])
        chunks.append(
            {
                "observations": obs,
                "actions": act,
                "rewards": out["rewards"],
                "costs": out["costs"],
                "next_observations": out["next_observations"],
                "terminals": done.float(),
                "trajectory": trajectory,
                "step": torch.full_like(trajectory, t),
            }
        )
        alive = ~done
        if not bool(alive.any()):
            break
        obs, trajectory = out["next_observations"][alive], trajectory[alive]
    transitions = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
    stats = {
        "rollout/transitions": float(transitions["rewards"].shape[0]),
        "rollout/reward_mean": float(transitions["rewards"].mean()),
        "rollout/terminal_fraction": float(transitions["terminals"].mean()),
        "rollout/steps": float(len(chunks)),
    }
    return transitions, stats
