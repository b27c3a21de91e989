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


_COLUMNS = ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")


def _episode_rng(seed: int, episode: int) -> np.random.Generator:
    """Episode ``episode``'s own random stream (aggressiveness and controller noise).

    One stream per episode makes an episode a function of ``(seed, episode)`` alone, so
    episodes can run in any worker in any order and the dataset stays the same.
    """
    return np.random.default_rng([int(seed), int(episode)])


def _record_episode(env, task: TaskSpec, config: CollectConfig, episode: int) -> tuple[dict, dict]:
    rng = _episode_rng(config.seed, episode)
    controller = make_controller(task, config.policy, rng)
    max_steps = config.max_steps or task.max_episode_steps
    columns: dict[str, list] = {k: [] for k in _COLUMNS}
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
    meta = {
        "aggressiveness": round(aggr, 4),
        "reward": ep_reward,
        "cost": ep_cost,
        "length": step + 1,
        "controller": controller.name,
    }
    return columns, meta


def _worker_episodes(task: TaskSpec, config: CollectConfig, episodes: list[int]) -> list[tuple[dict, dict]]:
    """A fixed block of episodes, in order, on one env made in the worker process.

    Blocks are assigned up front (not to whichever worker is free), so a worker layout always
    runs the same episodes on the same env: Bullet-Safety-Gym's resets depend on the env's
    history, and this keeps its datasets reproducible per layout.
    """
    env = make_env(task)
    try:
        return [_record_episode(env, task, config, e) for e in episodes]
    finally:
        env.close()


def collect_episodes(
    task: TaskSpec, config: CollectConfig, progress: ProgressFn | None = None, workers: int | None = 1
) -> TransitionDataset:
    """Run ``config.episodes`` episodes of a scripted/random controller and record them.

    ``workers``: 1 runs every episode here; N > 1 runs them in N processes (None or 0: from
    the free cores, :func:`corl.envs.workers.resolve_workers`), each a contiguous block of
    episodes on its own env. Each episode has its own seed and random stream, so on
    Safety-Gymnasium tasks (resets fully seeded) the dataset is the same for any number of
    workers; Bullet-Safety-Gym resets depend on the env's history, so there it is the same
    for the same number of workers.
    """
    if config.policy not in ("scripted", "random"):
        from corl.errors import ConfigError

        raise ConfigError(f"--policy {config.policy!r}: expected 'scripted' or 'random'")
    from corl.envs.workers import resolve_workers

    n_workers = resolve_workers(config.episodes, workers)
    columns: dict[str, list] = {k: [] for k in _COLUMNS}
    episode_meta: list[dict] = []

    def add(episode: int, result: tuple[dict, dict]) -> None:
        for k, v in result[0].items():
            columns[k].extend(v)
        episode_meta.append(result[1])
        if progress is not None:
            progress(episode + 1, episode_meta[-1])

    if n_workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from corl.envs.workers import split_envs

        bounds = np.cumsum([0, *split_envs(config.episodes, n_workers)])
        with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [
                pool.submit(_worker_episodes, task, config, list(range(bounds[w], bounds[w + 1])))
                for w in range(n_workers)
            ]
            for w, future in enumerate(futures):  # in episode order, whatever finished first
                for offset, result in enumerate(future.result()):
                    add(int(bounds[w]) + offset, result)
    else:
        env = make_env(task)
        for episode in range(config.episodes):
            add(episode, _record_episode(env, task, config, episode))
        env.close()
    controller_name = (
        episode_meta[0]["controller"]
        if episode_meta
        else make_controller(task, config.policy, _episode_rng(config.seed, 0)).name
    )
    for meta in episode_meta:
        meta.pop("controller", None)
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    metadata = {
        "task": task.name,
        "source": "corl-collect",
        "collector": controller_name,
        "policy": config.policy,
        "seed": config.seed,
        "episodes": config.episodes,
        "aggressiveness": list(config.aggressiveness),
        "episode_aggressiveness": [m["aggressiveness"] for m in episode_meta],
    }
    return TransitionDataset.from_numpy(arrays, metadata)
