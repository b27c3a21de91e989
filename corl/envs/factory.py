"""Build simulator envs for a task: one gymnasium 5-tuple API, cost always in ``info["cost"]``.

Every family goes through ``gymnasium.make`` with the passive env checker off (dsrl's velocity
tasks return a 6-tuple from their inner env, which the checker rejects; the gymnasium
conversion wrappers already give the 5-tuple we use). Unconstrained MuJoCo tasks (D4RL names)
get ``info["cost"] = 0.0`` so every learner and evaluator reads cost the same way.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from corl.compat import import_dsrl
from corl.envs.fast_reset import install_fast_reset
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


def fast_reset_default() -> bool:
    """``CORL_FAST_RESET`` (default 1): Safety-Gymnasium resets without recompiling the model.

    ``CORL_FAST_RESET=0`` gives the stock rebuild everywhere (workers inherit the variable).
    """
    return os.environ.get("CORL_FAST_RESET", "1").strip().lower() not in ("0", "false", "no", "off")


def make_env(task: TaskSpec | str, seed: int | None = None, fast_reset: bool | None = None, **kwargs: Any) -> gym.Env:
    """A single env for ``task`` (a name or a TaskSpec), reset once with ``seed`` if given.

    ``fast_reset`` (default :func:`fast_reset_default`): Safety-Gymnasium navigation tasks
    write each new layout into their compiled model instead of recompiling it
    (:mod:`corl.envs.fast_reset`; same layouts, same numbers); other families ignore it.
    """
    spec = _resolve(task)
    import_dsrl()  # registers bullet-safety-gym, safety-gymnasium and dsrl ids (with the shim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(spec.env_id, disable_env_checker=True, **kwargs)
    env = CostInInfo(env)
    if spec.family == "bullet":
        env = SeedGlobalNumpyOnReset(env)
    if spec.family == "safety-gymnasium" and (fast_reset_default() if fast_reset is None else fast_reset):
        env = install_fast_reset(env)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def env_factory(
    task: TaskSpec | str, wrap: Callable[[gym.Env], gym.Env] | None = None, **kwargs: Any
) -> Callable[[], gym.Env]:
    """A picklable function that makes one env of ``task`` (``wrap`` applied if given)."""
    spec = _resolve(task)
    return functools.partial(_make_wrapped, spec, wrap, kwargs)


def _make_wrapped(spec: TaskSpec, wrap: Callable[[gym.Env], gym.Env] | None, kwargs: dict) -> gym.Env:
    env = make_env(spec, **kwargs)
    return wrap(env) if wrap is not None else env


def make_vector_env(
    task: TaskSpec | str,
    num_envs: int,
    asynchronous: bool = False,
    workers: int | None = 1,
    wrap: Callable[[gym.Env], gym.Env] | None = None,
    **kwargs: Any,
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of the task's env in gymnasium's vector API.

    ``workers``: 1 (the default) steps every env in this process (``SyncVectorEnv``); None or
    0 picks the number of worker processes from the free cores
    (:func:`corl.envs.workers.resolve_workers`); N > 1 runs the envs in N processes
    (:class:`~corl.envs.workers.GroupedVectorEnv`, gymnasium's async vector env with shared
    memory underneath), with the same numbers as in-process for the same seeds.
    ``asynchronous=True`` is gymnasium's ``AsyncVectorEnv`` with one process per env.
    ``wrap`` is applied to every env (it must pickle for workers: a module-level function or a
    ``functools.partial``). Costs arrive in ``infos["cost"]`` as an array (with ``"_cost"``).
    """
    from corl.envs.workers import GroupedVectorEnv, resolve_workers

    fns = [env_factory(task, wrap=wrap, **kwargs) for _ in range(num_envs)]
    if asynchronous:
        return gym.vector.AsyncVectorEnv(fns, context="spawn")
    n_workers = resolve_workers(num_envs, workers)
    if n_workers > 1:
        return GroupedVectorEnv(fns, n_workers)
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
