"""Online data collection for on- and off-policy learners, and the one training loop they share.

Reads top to bottom:

1. :class:`FixedHorizon` — the wrapper CVPO needs (algorithms.md §3.11-1): every episode lasts
   exactly ``T`` steps. An early termination is either ignored (``"continue"``: the simulator
   keeps running, the step is flagged in ``info["early_termination"]``) or turned into an
   absorbing state (``"absorb"``: the last observation repeats with reward 0 and cost 0).
2. :class:`VectorStep` — one step of a vector env, as a learner sees it.
3. :class:`OnlineCollector` — runs a policy in a gymnasium vector env with batched torch
   inference, and records every transition into growing numpy buffers, one contiguous block
   per finished episode, with per-episode metadata (training step, cost limit, seed, ...) in
   ``metadata["episode_info"]`` (``metadata["episodes"]`` is their count, as the recorder's).
   The open episodes live in ``(num_envs, T, ...)`` arrays written with one fancy-indexed
   assignment per field per vector step, so recording costs no per-env Python work.
   :meth:`OnlineCollector.dataset` exports a :class:`~corl.data.dataset.TransitionDataset`.
4. :func:`train_online`, a plain loop over :class:`corl.algos.base.OnlineAgent` (the protocol a
   method implements: ``act``/``observe``).

Episode flags mirror :mod:`corl.collect.recorder`: ``terminated`` → ``terminals``,
``truncated`` (the step limit) → ``timeouts`` (never both), and the true next observation of
every step is stored — at an episode end it comes from gymnasium's ``final_observation``
(the vector env has already reset). Costs at an episode end come from ``final_info``: the
vector env's top-level ``infos["cost"]`` at that index belongs to the reset, not the step.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch

from corl.algos.base import OnlineAgent
from corl.data.dataset import TransitionDataset
from corl.envs.factory import make_vector_env, step_costs
from corl.tasks import TaskSpec, get_task


# ------------------------------------------------------------------------------ 1. fixed horizon
class FixedHorizon(gym.Wrapper):
    """Episodes of exactly ``horizon`` steps (truncated at the last one, never terminated).

    ``on_terminate="continue"`` keeps stepping the simulator after a true termination (the
    CVPO authors' modified envs); ``"absorb"`` freezes the episode in an absorbing state with
    zero reward and zero cost. Either way ``info["early_termination"]`` is True on the step
    where the inner env terminated, so a reward critic may still stop bootstrapping there.
    Place it *outside* the env's own ``TimeLimit`` with ``horizon`` ≤ that limit.
    """

    def __init__(self, env: gym.Env, horizon: int, on_terminate: str = "continue") -> None:
        super().__init__(env)
        if on_terminate not in ("continue", "absorb"):
            raise ValueError(f"on_terminate must be 'continue' or 'absorb', got {on_terminate!r}")
        self.horizon, self.on_terminate = int(horizon), on_terminate
        self._t = 0
        self._absorbed: np.ndarray | None = None

    def reset(self, **kwargs):
        self._t, self._absorbed = 0, None
        return self.env.reset(**kwargs)

    def step(self, action):
        self._t += 1
        if self._absorbed is not None:
            obs, reward, info = self._absorbed, 0.0, {"cost": 0.0, "absorbing": True}
            terminated = False
        else:
            obs, reward, terminated, truncated, info = self.env.step(action)
            info = dict(info)
            info["early_termination"] = bool(terminated)
            if terminated and self.on_terminate == "absorb":
                self._absorbed = obs
            # "continue": the simulator keeps running (its own TimeLimit must be >= horizon)
        return obs, reward, False, self._t >= self.horizon, info


# ------------------------------------------------------------------------------ 2. one vector step
@dataclass
class EpisodeInfo:
    """Per-episode metadata recorded with every finished episode."""

    episode: int  # global index in finish order
    env_index: int
    env_episode: int  # index of this episode within its env copy
    seed: int  # the collector seed (env ``j`` was first reset with ``seed + j``)
    training_step: int  # learner updates done when the episode started
    env_step: int  # global env steps when the episode started
    cost_limit: float | None
    reward: float = 0.0
    cost: float = 0.0
    length: int = 0
    terminated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VectorStep:
    """One synchronous step of ``n`` envs (numpy arrays, leading dim ``n``)."""

    observations: np.ndarray
    actions: np.ndarray  # what the policy produced (unclipped; what log-probs refer to)
    env_actions: np.ndarray  # what the env executed (clipped to the box)
    rewards: np.ndarray
    costs: np.ndarray
    next_observations: np.ndarray  # true next state (final_observation at episode ends)
    terminals: np.ndarray
    timeouts: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. values, log-probs
    finished: list[EpisodeInfo] = field(default_factory=list)  # episodes that ended on this step
    infos: dict[str, Any] = field(default_factory=dict)

    @property
    def dones(self) -> np.ndarray:
        return self.terminals | self.timeouts


def vector_step_costs(infos: Mapping[str, Any], dones: np.ndarray) -> np.ndarray:
    """Per-env costs of a vector step (``final_info`` where an episode ended): see ``step_costs``."""
    return step_costs(dict(infos), len(dones))


# ------------------------------------------------------------------------------ 3. collector
class _Growing:
    """Column arrays that double their capacity when full (amortised O(1) appends)."""

    def __init__(self, shapes: Mapping[str, tuple[tuple[int, ...], Any]], capacity: int = 1024) -> None:
        self.shapes = dict(shapes)
        self.size = 0
        self.data = {k: np.zeros((capacity, *s), dtype=d) for k, (s, d) in self.shapes.items()}

    def extend(self, block: Mapping[str, np.ndarray]) -> None:
        n = len(next(iter(block.values())))
        need = self.size + n
        cap = len(next(iter(self.data.values())))
        if need > cap:
            new_cap = max(need, 2 * cap)
            for k, arr in self.data.items():
                grown = np.zeros((new_cap, *arr.shape[1:]), dtype=arr.dtype)
                grown[: self.size] = arr[: self.size]
                self.data[k] = grown
        for k, arr in self.data.items():
            arr[self.size : need] = block[k]
        self.size = need

    def view(self) -> dict[str, np.ndarray]:
        return {k: v[: self.size] for k, v in self.data.items()}


PolicyFn = Callable[[torch.Tensor], "torch.Tensor | tuple[torch.Tensor, Mapping[str, torch.Tensor]]"]


class OnlineCollector:
    """A vector env plus a recorder.

    ``step(policy)`` runs one batched policy call and one vector-env step and returns a
    :class:`VectorStep`; ``record=True`` appends each finished episode as one contiguous block
    to the growing buffers. ``fixed_horizon`` wraps every env in :class:`FixedHorizon` with the
    task's episode length. ``dataset()`` returns the finished episodes (optionally the
    unfinished tails too, their last row marked as a time-out: the collector cut them off).
    ``workers``: 1 steps the envs in this process, None/0 picks worker processes from the free
    cores, N > 1 uses N (``corl.envs.make_vector_env``); the numbers are the same either way.
    """

    def __init__(
        self,
        task: TaskSpec | str,
        num_envs: int = 1,
        seed: int = 0,
        record: bool = True,
        fixed_horizon: bool = False,
        on_terminate: str = "continue",
        cost_limit: float | None = None,
        device: torch.device | str = "cpu",
        env: gym.vector.VectorEnv | None = None,
        workers: int | None = 1,
    ) -> None:
        self.task = get_task(task) if isinstance(task, str) else task
        self.num_envs, self.seed, self.record = int(num_envs), int(seed), record
        self.cost_limit = cost_limit if cost_limit is not None else self.task.cost_limit
        self.device = torch.device(device)
        if env is None:  # in this process (workers 1) or in worker processes (corl.envs.workers)
            wrap = (
                functools.partial(FixedHorizon, horizon=self.task.max_episode_steps, on_terminate=on_terminate)
                if fixed_horizon
                else None
            )
            env = make_vector_env(self.task, self.num_envs, workers=workers, wrap=wrap)
        self.env = env
        space = self.env.single_action_space
        self.act_low = np.asarray(space.low, dtype=np.float32)
        self.act_high = np.asarray(space.high, dtype=np.float32)
        obs_dim = int(np.prod(self.env.single_observation_space.shape))
        act_dim = int(np.prod(space.shape))
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self._shapes = {
            "observations": ((obs_dim,), np.float32),
            "actions": ((act_dim,), np.float32),
            "rewards": ((), np.float32),
            "costs": ((), np.float32),
            "next_observations": ((obs_dim,), np.float32),
            "terminals": ((), bool),
            "timeouts": ((), bool),
        }
        self.buffer = _Growing(self._shapes)
        # the open episode of every env: (num_envs, capacity, ...) arrays written with one
        # fancy-index assignment per field per vector step (no per-env Python work)
        self._ep_cap = max(int(self.task.max_episode_steps), 1)
        self._open = {
            k: np.zeros((self.num_envs, self._ep_cap, *shape), dtype=d) for k, (shape, d) in self._shapes.items()
        }
        self._t = np.zeros(self.num_envs, dtype=np.int64)  # rows written into each open episode
        self._ep_reward = np.zeros(self.num_envs, dtype=np.float64)
        self._ep_cost = np.zeros(self.num_envs, dtype=np.float64)
        self._rows = np.arange(self.num_envs)
        self.episodes: list[EpisodeInfo] = []
        self.env_steps = 0
        self.training_step = 0  # set by the training loop before each step
        self._env_episode = [0] * self.num_envs
        self._current: list[EpisodeInfo] = []
        self.obs: np.ndarray | None = None

    # ------------------------------------------------------------------ checkpointing (EpisodeCollector)
    def state_dict(self) -> dict[str, Any]:
        """The counters a restarted collector continues from: env steps, episodes per env."""
        return {"env_steps": self.env_steps, "env_episode": list(self._env_episode)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.env_steps = int(state["env_steps"])
        self._env_episode = [int(x) for x in state["env_episode"]]

    def open_episodes(self) -> np.ndarray:
        """Which envs are inside an episode (rows written since their last reset)."""
        return self._t > 0

    def take_rows(self) -> dict[str, np.ndarray]:
        """The rows of finished episodes recorded since the last call; the buffer is emptied
        (the caller owns them, e.g. writes them to disk before the next step)."""
        rows = self.buffer.view()
        self.buffer.size = 0
        return rows

    # ------------------------------------------------------------------ stepping
    def reset(self) -> np.ndarray:
        """Reset every env (env ``j`` with ``seed + j``); unfinished episodes are discarded."""
        self._t[:] = 0
        self._ep_reward[:] = 0.0
        self._ep_cost[:] = 0.0
        self.obs, _ = self.env.reset(seed=[self.seed + j for j in range(self.num_envs)])
        self.env.action_space.seed(self.seed)
        self._current = [self._new_episode(j) for j in range(self.num_envs)]
        return self.obs

    def _new_episode(self, j: int) -> EpisodeInfo:
        return EpisodeInfo(
            episode=-1,
            env_index=j,
            env_episode=self._env_episode[j],
            seed=self.seed,
            training_step=self.training_step,
            env_step=self.env_steps,
            cost_limit=self.cost_limit,
        )

    @torch.no_grad()
    def step(self, policy: PolicyFn | None = None, actions: np.ndarray | None = None) -> VectorStep:
        """One vector step with ``policy(obs_tensor)`` (batched) or the given ``actions``."""
        if self.obs is None:
            self.reset()
        for j in np.flatnonzero(self._t == 0):  # an episode's metadata is fixed at its first step
            self._current[j].training_step, self._current[j].env_step = self.training_step, self.env_steps
        extras: dict[str, np.ndarray] = {}
        if actions is None:
            out = policy(torch.as_tensor(self.obs, dtype=torch.float32, device=self.device))
            if isinstance(out, tuple):
                out, ext = out
                extras = {k: v.detach().cpu().numpy() for k, v in ext.items()}
            actions = out.detach().cpu().numpy()
        actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, self.act_dim)
        env_actions = np.clip(actions, self.act_low, self.act_high)
        next_obs, rewards, terminated, truncated, infos = self.env.step(env_actions)
        terminated = np.asarray(terminated, dtype=bool)
        timeouts = np.asarray(truncated, dtype=bool) & ~terminated
        dones = terminated | timeouts
        costs = vector_step_costs(infos, dones)
        true_next = np.array(next_obs, dtype=np.float32, copy=True)
        if dones.any():
            for i in np.flatnonzero(dones):
                true_next[i] = infos["final_observation"][i]
        step = VectorStep(
            np.asarray(self.obs, dtype=np.float32),
            actions,
            env_actions,
            np.asarray(rewards, dtype=np.float32),
            costs,
            true_next,
            terminated,
            timeouts,
            extras,
            [],
            infos,
        )
        self.env_steps += self.num_envs
        self._ep_reward += step.rewards
        self._ep_cost += costs
        if self.record:
            if int(self._t.max()) >= self._ep_cap:  # an episode longer than the task's limit
                self._ep_cap *= 2
                for k, arr in self._open.items():
                    grown = np.zeros((self.num_envs, self._ep_cap, *arr.shape[2:]), dtype=arr.dtype)
                    grown[:, : arr.shape[1]] = arr
                    self._open[k] = grown
            row = (self._rows, self._t)
            self._open["observations"][row] = step.observations
            self._open["actions"][row] = env_actions
            self._open["rewards"][row] = step.rewards
            self._open["costs"][row] = costs
            self._open["next_observations"][row] = true_next
            self._open["terminals"][row] = terminated
            self._open["timeouts"][row] = timeouts
        self._t += 1
        for j in np.flatnonzero(dones):
            ep = self._current[j]
            ep.reward, ep.cost, ep.length = float(self._ep_reward[j]), float(self._ep_cost[j]), int(self._t[j])
            ep.terminated = bool(terminated[j])
            ep.episode = len(self.episodes)
            self.episodes.append(ep)
            step.finished.append(ep)
            if self.record:
                self.buffer.extend({k: arr[j, : self._t[j]] for k, arr in self._open.items()})
            self._t[j] = 0
            self._ep_reward[j] = self._ep_cost[j] = 0.0
            self._env_episode[j] += 1
            self._current[j] = self._new_episode(j)
        self.obs = next_obs
        return step

    # ------------------------------------------------------------------ export
    def dataset(self, include_partial: bool = False, metadata: Mapping[str, Any] | None = None) -> TransitionDataset:
        """The recorded transitions (finished episodes; ``include_partial`` adds cut-off tails)."""
        arrays = {k: v.copy() for k, v in self.buffer.view().items()}
        partial = 0
        if include_partial and self.record:
            tails = [j for j in range(self.num_envs) if self._t[j] > 0]
            for j in tails:
                block = {k: arr[j, : self._t[j]].copy() for k, arr in self._open.items()}
                block["timeouts"][-1] = True  # cut off by the collector (never a termination here)
                arrays = {k: np.concatenate([arrays[k], block[k]]) for k in arrays}
            partial = len(tails)
        meta = {
            "task": self.task.name,
            "source": "corl-online",
            "seed": self.seed,
            "num_envs": self.num_envs,
            "cost_limit": self.cost_limit,
            "env_steps": self.env_steps,
            "episodes": len(self.episodes),
            "episode_info": [e.as_dict() for e in self.episodes],
            "partial_episodes": partial,
        }
        meta.update(metadata or {})
        return TransitionDataset.from_numpy(arrays, meta)

    def close(self) -> None:
        self.env.close()


# ------------------------------------------------------------------------------ 4. the loop
@dataclass
class OnlineResult:
    dataset: TransitionDataset | None
    episodes: list[EpisodeInfo]
    logs: list[dict[str, float]]
    env_steps: int
    wall_s: float


def train_online(
    agent: OnlineAgent,
    task: TaskSpec | str,
    steps: int,
    num_envs: int = 1,
    seed: int = 0,
    cost_limit: float | None = None,
    fixed_horizon: bool | None = None,
    record: bool = True,
    on_episode: Callable[[EpisodeInfo], None] | None = None,
    on_update: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint: Callable[[OnlineAgent, int], None] | None = None,
    checkpoint_every: int = 0,
    collector: OnlineCollector | None = None,
    device: torch.device | str = "cpu",
) -> OnlineResult:
    """Run ``agent`` for ``steps`` env steps (summed over the ``num_envs`` copies).

    Per vector step: ``agent.act`` (one batched call) → env step → ``agent.observe``. Callbacks:
    ``on_episode(info)`` for every finished episode, ``on_update(env_steps, logs)`` whenever
    ``observe`` ran updates, ``checkpoint(agent, env_steps)`` every ``checkpoint_every`` env
    steps (0: never) and once at the end. Returns the recorded dataset (``record=True``),
    the episode metadata, the update logs, and wall time. ``fixed_horizon=None`` takes the
    agent's own ``fixed_horizon`` attribute (CVPO: True), else False.
    """
    if fixed_horizon is None:
        fixed_horizon = bool(getattr(agent, "fixed_horizon", False))
    if collector is None:
        collector = OnlineCollector(
            task, num_envs, seed, record=record, fixed_horizon=fixed_horizon, cost_limit=cost_limit, device=device
        )
    logs: list[dict[str, float]] = []
    start = time.perf_counter()
    next_ckpt = checkpoint_every if checkpoint_every > 0 else None
    while collector.env_steps < steps:
        collector.training_step = int(getattr(agent, "training_step", 0))
        vstep = collector.step(agent.act)
        out = agent.observe(vstep)
        if on_episode is not None:
            for ep in vstep.finished:
                on_episode(ep)
        if out:
            logs.append(out)
            if on_update is not None:
                on_update(collector.env_steps, out)
        if checkpoint is not None and next_ckpt is not None and collector.env_steps >= next_ckpt:
            checkpoint(agent, collector.env_steps)
            next_ckpt += checkpoint_every
    if checkpoint is not None:
        checkpoint(agent, collector.env_steps)
    wall = time.perf_counter() - start
    data = collector.dataset() if record else None
    return OnlineResult(data, list(collector.episodes), logs, collector.env_steps, wall)


def episode_summary(episodes: Sequence[EpisodeInfo]) -> dict[str, float]:
    """Mean reward/cost/length of a list of episodes (NaN when empty)."""
    if not episodes:
        return {"reward": float("nan"), "cost": float("nan"), "length": float("nan")}
    return {
        "reward": float(np.mean([e.reward for e in episodes])),
        "cost": float(np.mean([e.cost for e in episodes])),
        "length": float(np.mean([e.length for e in episodes])),
    }
