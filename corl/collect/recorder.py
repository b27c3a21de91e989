"""Record real episodes from the simulator into a :class:`TransitionDataset`.

Terminations and truncations are kept apart exactly as the env reports them:
``terminated`` -> ``terminals``, ``truncated`` (the step limit) -> ``timeouts``. The next
observation of every step is stored, so no row is lost at episode ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from corl.collect.controllers import make_controller
from corl.data.dataset import TransitionDataset
from corl.envs.factory import make_env
from corl.tasks import TaskSpec

ProgressFn = Callable[[int, dict], None]


@dataclass(frozen=True)
class CollectConfig:
    episodes: int = 20
    policy: str = "scripted"  # "scripted" | "random"
    seed: int = 0
    #: aggressiveness of each episode is drawn uniformly from [low, high]: the spread of
    #: safe and unsafe behaviour in the dataset
    aggressiveness: tuple[float, float] = (0.0, 1.0)
    max_steps: int | None = None  # default: the task's episode length


def collect_episodes(task: TaskSpec, config: CollectConfig, progress: ProgressFn | None = None) -> TransitionDataset:
    """Run ``config.episodes`` episodes of a scripted/random controller and record them."""
    if config.policy not in ("scripted", "random"):
        from corl.errors import ConfigError

        raise ConfigError(f"--policy {config.policy!r}: expected 'scripted' or 'random'")
    rng = np.random.default_rng(config.seed)
    env = make_env(task)
    controller = make_controller(task, config.policy, rng)
    max_steps = config.max_steps or task.max_episode_steps
    columns: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")}
    episode_meta: list[dict] = []
    for episode in range(config.episodes):
        aggr = float(rng.uniform(*config.aggressiveness))
        obs, _ = env.reset(seed=int(config.seed * 100_003 + episode))
        controller.reset(env, aggr)
        ep_reward = ep_cost = 0.0
        for step in range(max_steps):
            action = controller(env, obs)
            next_obs, reward, terminated, truncated, info = env.step(action)
            truncated = truncated or step == max_steps - 1
            columns["observations"].append(obs)
            columns["actions"].append(action)
            columns["rewards"].append(reward)
            columns["costs"].append(info["cost"])
            columns["next_observations"].append(next_obs)
            columns["terminals"].append(bool(terminated))
            columns["timeouts"].append(bool(truncated and not terminated))
            ep_reward += float(reward)
            ep_cost += float(info["cost"])
            obs = next_obs
            if terminated or truncated:
                break
        episode_meta.append({"aggressiveness": round(aggr, 4), "reward": ep_reward, "cost": ep_cost, "length": step + 1})
        if progress is not None:
            progress(episode + 1, episode_meta[-1])
    env.close()
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    metadata = {
        "task": task.name,
        "source": "corl-collect",
        "collector": controller.name,
        "policy": config.policy,
        "seed": config.seed,
        "episodes": config.episodes,
        "aggressiveness": list(config.aggressiveness),
        "episode_aggressiveness": [m["aggressiveness"] for m in episode_meta],
    }
    return TransitionDataset.from_numpy(arrays, metadata)
