"""Vector envs whose simulators run in worker processes, several envs per worker.

Why: online learners and collectors step ``num_envs`` simulators per vector step; in one
process they use one core. gymnasium's :class:`~gymnasium.vector.AsyncVectorEnv` (with shared
memory for observations) runs one process per env; :class:`GroupedVectorEnv` puts ``k`` envs
into each of its processes (:class:`EnvGroup`), so ``workers`` processes serve ``num_envs``
envs on a machine with fewer free cores than envs.

Results do not depend on the layout: every env is stepped, auto-reset and reported exactly as
:class:`~gymnasium.vector.SyncVectorEnv` does it (same per-env seeds ``seed + i``, same
``final_observation``/``final_info`` convention, same dtypes), so a seed gives the same numbers
in-process or over any number of workers (``tests/test_env_workers.py``).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array


def free_cores() -> int:
    """Cores this process may use minus the current load (1-minute average), at least 0."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, cores - int(np.ceil(os.getloadavg()[0])))


def resolve_workers(num_envs: int, workers: int | None = None) -> int:
    """How many worker processes run ``num_envs`` envs (1: in this process).

    ``workers`` None or 0: automatic, ``min(num_envs, free cores - 1)`` (one core stays with the
    learner), and in-process when that leaves fewer than 2; ``CORL_ENV_WORKERS`` overrides the
    automatic choice. A number is used as given, capped at ``num_envs``.
    """
    if not workers:
        env_value = os.environ.get("CORL_ENV_WORKERS", "").strip()
        if env_value:
            workers = int(env_value)
    if not workers:
        auto = min(num_envs, free_cores() - 1)
        return auto if auto >= 2 else 1
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: automatic), got {workers}")
    return max(1, min(int(workers), int(num_envs)))


def split_envs(num_envs: int, workers: int) -> list[int]:
    """Envs per worker: as even as possible, the first workers take the remainder."""
    base, extra = divmod(num_envs, workers)
    return [base + (1 if w < extra else 0) for w in range(workers)]


class EnvGroup(gym.Env):
    """Up to ``capacity`` envs stepped in one worker as one env (inside :class:`GroupedVectorEnv`).

    Observations and actions are the members' stacked side by side (``capacity`` rows, so every
    worker has the same spaces; rows past the members stay zero and their actions are ignored).
    Each member is auto-reset here exactly as ``SyncVectorEnv`` does; the per-member rewards,
    terminations and infos ride in ``info["members"]``. The group itself never terminates, so
    gymnasium's worker never resets it behind our back. Reset seeds: ``options["seeds"]``, the
    list for all envs of the vector env, of which this group takes its slice from ``start``.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], capacity: int, start: int) -> None:
        self.envs = [fn() for fn in env_fns]
        self.capacity, self.start = int(capacity), int(start)
        self.member_obs_space = self.envs[0].observation_space
        self.member_act_space = self.envs[0].action_space
        self.observation_space = batch_space(self.member_obs_space, self.capacity)
        self.action_space = batch_space(self.member_act_space, self.capacity)
        self._obs = create_empty_array(self.member_obs_space, n=self.capacity, fn=np.zeros)

    def _write(self, observations: list) -> np.ndarray:
        for i, obs in enumerate(observations):
            self._obs[i] = obs
        return self._obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = dict(options or {})
        all_seeds = options.pop("seeds", None)
        seeds = (
            all_seeds[self.start : self.start + len(self.envs)] if all_seeds is not None else [None] * len(self.envs)
        )
        observations, infos = [], []
        for env, s in zip(self.envs, seeds):
            obs, info = env.reset(seed=s, options=options or None)
            observations.append(obs)
            infos.append(info)
        return self._write(observations), {"members": infos}

    def step(self, action):
        observations, members = [], []
        for env, a in zip(self.envs, action):
            obs, reward, terminated, truncated, info = env.step(a)
            if terminated or truncated:  # SyncVectorEnv's auto-reset, member by member
                old_obs, old_info = obs, info
                obs, info = env.reset()
                info["final_observation"] = old_obs
                info["final_info"] = old_info
            observations.append(obs)
            members.append((reward, terminated, truncated, info))
        return self._write(observations), 0.0, False, False, {"members": members}

    def close(self) -> None:
        for env in self.envs:
            env.close()


class _GroupFactory:
    """A picklable factory of one :class:`EnvGroup` (the worker process calls it)."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], capacity: int, start: int) -> None:
        self.env_fns, self.capacity, self.start = list(env_fns), capacity, start

    def __call__(self) -> EnvGroup:
        return EnvGroup(self.env_fns, self.capacity, self.start)


class GroupedVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` envs over ``workers`` processes, with ``SyncVectorEnv``'s exact results.

    The processes are gymnasium's ``AsyncVectorEnv`` (shared memory for observations, its
    error handling and shutdown); each serves one :class:`EnvGroup`. ``single_spaces`` (the
    member env's observation and action space) saves building an env here to read them.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        workers: int,
        single_spaces: tuple[gym.Space, gym.Space] | None = None,
        context: str | None = "spawn",
    ) -> None:
        env_fns = list(env_fns)
        self.sizes = split_envs(len(env_fns), workers)
        self._starts = [int(x) for x in np.cumsum([0, *self.sizes])]
        if single_spaces is None:
            probe = env_fns[0]()
            single_spaces = (probe.observation_space, probe.action_space)
            probe.close()
        single_obs, single_act = single_spaces
        capacity = max(self.sizes)
        groups = [
            _GroupFactory(env_fns[self._starts[w] : self._starts[w + 1]], capacity, self._starts[w])
            for w in range(workers)
        ]
        self.inner = gym.vector.AsyncVectorEnv(
            groups,
            shared_memory=True,
            context=context,
            observation_space=batch_space(single_obs, capacity),
            action_space=batch_space(single_act, capacity),
        )
        super().__init__(len(env_fns), single_obs, single_act)
        self._capacity = capacity
        self._observations = create_empty_array(single_obs, n=self.num_envs, fn=np.zeros)

    def _flatten(self, grouped_obs: np.ndarray) -> np.ndarray:
        rows = [grouped_obs[w][j] for w, size in enumerate(self.sizes) for j in range(size)]
        self._observations = concatenate(self.single_observation_space, rows, self._observations)
        return np.copy(self._observations)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """``SyncVectorEnv.reset``: env ``i`` gets ``seed + i`` (an int) or ``seed[i]`` (a list)."""
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset: {len(seeds)} seeds for {self.num_envs} envs")
        grouped_obs, group_infos = self.inner.reset(options={**(options or {}), "seeds": seeds})
        infos: dict[str, Any] = {}
        i = 0
        for w in range(len(self.sizes)):
            for info in group_infos["members"][w]:
                infos = self._add_info(infos, info, i)
                i += 1
        return self._flatten(grouped_obs), infos

    def step(self, actions):
        actions = np.asarray(actions)
        grouped = np.zeros((len(self.sizes), self._capacity, *actions.shape[1:]), dtype=actions.dtype)
        for w, size in enumerate(self.sizes):
            grouped[w, :size] = actions[self._starts[w] : self._starts[w] + size]
        grouped_obs, _, _, _, group_infos = self.inner.step(grouped)
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        infos: dict[str, Any] = {}
        i = 0
        for w in range(len(self.sizes)):
            for reward, term, trunc, info in group_infos["members"][w]:
                rewards[i], terminated[i], truncated[i] = reward, term, trunc
                infos = self._add_info(infos, info, i)
                i += 1
        return self._flatten(grouped_obs), rewards, terminated, truncated, infos

    def close_extras(self, **kwargs) -> None:
        self.inner.close(**kwargs)
