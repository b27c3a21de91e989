"""Build simulator envs for a task: one gymnasium 5-tuple API, cost always in ``info["cost"]``.

Every family goes through ``gymnasium.make`` with the passive env checker off (dsrl's velocity
tasks return a 6-tuple from their inner env, which the checker rejects; the gymnasium
conversion wrappers already give the 5-tuple we use). Unconstrained MuJoCo tasks (D4RL names)
get ``info["cost"] = 0.0`` so every learner and evaluator reads cost the same way.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from corl.compat import import_dsrl
from corl.tasks import TaskSpec, get_task


class CostInInfo(gym.Wrapper):
    """Guarantee ``info["cost"]`` is a float on every step (0.0 when the env has no cost)."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["cost"] = float(info.get("cost", 0.0))
        return obs, reward, terminated, truncated, info


class SeedGlobalNumpyOnReset(gym.Wrapper):
    """Make bullet-safety-gym resets reproducible.

    Its tasks and agents draw start positions and joint noise from numpy's *global* RNG
    (``np.random.uniform``), ignoring ``reset(seed=...)``. This wrapper seeds the global RNG
    whenever a seed is passed, so the same seed gives the same episode.
    """

    def reset(self, *, seed: int | None = None, options=None):
        if seed is not None:
            np.random.seed(seed % (2**32))
        return self.env.reset(seed=seed, options=options)


def _resolve(task: TaskSpec | str) -> TaskSpec:
    return get_task(task) if isinstance(task, str) else task


def make_env(task: TaskSpec | str, seed: int | None = None, **kwargs: Any) -> gym.Env:
    """A single env for ``task`` (a name or a TaskSpec), reset once with ``seed`` if given."""
    spec = _resolve(task)
    import_dsrl()  # registers bullet-safety-gym, safety-gymnasium and dsrl ids (with the shim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(spec.env_id, disable_env_checker=True, **kwargs)
    env = CostInInfo(env)
    if spec.family == "bullet":
        env = SeedGlobalNumpyOnReset(env)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def env_factory(task: TaskSpec | str, **kwargs: Any) -> Callable[[], gym.Env]:
    spec = _resolve(task)
    return lambda: make_env(spec, **kwargs)


def make_vector_env(
    task: TaskSpec | str, num_envs: int, asynchronous: bool = False, **kwargs: Any
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of the task's env in gymnasium's vector API.

    Synchronous by default: on a 2-core machine the simulators are cheap enough that process
    start-up and pickling cost more than they save; ``asynchronous=True`` uses subprocesses.
    Costs arrive in ``infos["cost"]`` as an array (with gymnasium's ``"_cost"`` mask).
    """
    fns = [env_factory(task, **kwargs) for _ in range(num_envs)]
    if asynchronous:
        return gym.vector.AsyncVectorEnv(fns, context="spawn")
    return gym.vector.SyncVectorEnv(fns)


def step_costs(infos: dict, num_envs: int) -> np.ndarray:
    """The per-env cost of the step just taken, out of a vector env's ``infos``.

    On an episode's last step gymnasium's vector env has already auto-reset that sub-env, so
    ``infos["cost"]`` belongs to the reset; the step's real cost is in
    ``infos["final_info"][i]["cost"]``, which this reads for every finished env.
    """
    cost = infos.get("cost")
    out = np.zeros(num_envs, dtype=np.float32) if cost is None else np.asarray(cost, dtype=np.float32).copy()
    final = infos.get("final_info")
    if final is not None:
        mask = infos.get("_final_info", [item is not None for item in final])
        for i, item in enumerate(final):
            if mask[i] and item is not None:
                out[i] = float(item.get("cost", 0.0))
    return out


def action_bounds(task: TaskSpec | str) -> tuple[list[float], list[float]]:
    """The env's action box as lists (low, high): built once, closed at once (frees the simulator)."""
    env = make_env(task)
    try:
        space = env.action_space
        return space.low.tolist(), space.high.tolist()
    finally:
        env.close()
