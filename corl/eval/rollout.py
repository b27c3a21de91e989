"""Policy rollouts in the simulator: vector envs, batched torch inference, exact episode counts.

Determinism: the vector env is reset once with ``seed`` (env ``i`` gets ``seed + i``); later
automatic resets draw from each env's own seeded generator, and env ``i`` contributes a fixed
quota of episodes, so the same seed, policy and ``num_envs`` give the same episodes.

Hooks for robustness evaluation:
* ``obs_transform(obs_tensor) -> obs_tensor`` changes what the policy sees (observation
  attacks, noise); the simulator state is untouched.
* ``env_hook(env) -> context manager`` is entered for every sub-env for the whole rollout
  (sim2real physics scaling) and exited afterwards, restoring the env.

A policy with memory (a sequence model such as CDT) exposes ``policy_fn.reset()`` (called
once before the first step) and ``policy_fn.observe(reward, cost, ended)`` (tensors of shape
``(num_envs,)``, called after every vector step); a plain ``obs -> action`` callable needs neither.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import numpy as np
import torch

from corl.envs.factory import make_vector_env, step_costs
from corl.tasks import TaskSpec, get_task

PolicyFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class RolloutResult:
    """Per-episode arrays, in order of (env, episode within that env)."""

    reward: np.ndarray
    cost: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return len(self.reward)


def rollout(
    task: TaskSpec | str,
    policy_fn: PolicyFn,
    episodes: int,
    seed: int = 0,
    num_envs: int = 1,
    device: torch.device | str = "cpu",
    obs_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    env_hook: Callable[[Any], ContextManager[Any]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RolloutResult:
    """Run ``episodes`` episodes of ``policy_fn`` (obs (B, obs_dim) tensor -> action tensor).

    ``progress(done_episodes, episodes)`` is called after every vector step that finishes an
    episode (the pipeline uses it for its progress bar and Ctrl-C).
    """
    spec = get_task(task) if isinstance(task, str) else task
    num_envs = max(1, min(int(num_envs), int(episodes)))
    quota = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    venv = make_vector_env(spec, num_envs)
    rewards: list[list[float]] = [[] for _ in range(num_envs)]
    costs: list[list[float]] = [[] for _ in range(num_envs)]
    lengths: list[list[int]] = [[] for _ in range(num_envs)]
    ep_r = np.zeros(num_envs)
    ep_c = np.zeros(num_envs)
    ep_l = np.zeros(num_envs, dtype=np.int64)
    low, high = venv.single_action_space.low, venv.single_action_space.high
    done_count = 0
    try:
        with contextlib.ExitStack() as stack:
            if env_hook is not None:
                for env in venv.envs:  # type: ignore[attr-defined]
                    stack.enter_context(env_hook(env))
            obs, _ = venv.reset(seed=seed)
            venv.action_space.seed(seed)
            observe = getattr(policy_fn, "observe", None)
            if hasattr(policy_fn, "reset"):
                policy_fn.reset()
            while done_count < episodes:
                x = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device)
                if obs_transform is not None:
                    x = obs_transform(x)  # may need gradients (attacks), so outside no_grad
                with torch.no_grad():
                    action = policy_fn(x)
                act = np.clip(action.detach().cpu().numpy().astype(np.float64), low, high)
                obs, reward, terminated, truncated, infos = venv.step(act)
                ep_r += reward
                step_cost = step_costs(infos, num_envs)
                ep_c += step_cost
                ep_l += 1
                ended = np.logical_or(terminated, truncated)
                if observe is not None:
                    observe(
                        torch.as_tensor(reward, dtype=torch.float32),
                        torch.as_tensor(step_cost, dtype=torch.float32),
                        torch.as_tensor(ended),
                    )
                for i in np.flatnonzero(ended):
                    if len(rewards[i]) < quota[i]:
                        rewards[i].append(float(ep_r[i]))
                        costs[i].append(float(ep_c[i]))
                        lengths[i].append(int(ep_l[i]))
                        done_count += 1
                    ep_r[i], ep_c[i], ep_l[i] = 0.0, 0.0, 0
                if ended.any() and progress is not None:
                    progress(done_count, episodes)
    finally:
        venv.close()
    flat = lambda xs: np.array([v for per_env in xs for v in per_env])  # noqa: E731
    return RolloutResult(flat(rewards), flat(costs), flat(lengths).astype(np.int64))
