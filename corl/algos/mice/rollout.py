"""MICE's per-epoch rollout storage: preallocated ``(num_envs, T, ...)`` tensors, one write per field per step.

Why: an epoch is ``steps_per_epoch`` (20k) env steps over ``num_envs`` (10) envs. Per-env Python
lists took about 80 appends and float conversions per vector step; here every vector step is
one indexed write per field for all envs at once (``append``), and the epoch's flat batch is a
reshape of the filled part (env-major, the order the learner always saw).

Per env ``j`` the steps ``[slice_start[j], t)`` form the open *slice* (closed at an episode end or
the epoch end, §4.4); closing it writes its advantages and value targets into the same rows
(``close_slice``) and records its intrinsic return ``Ĵ^I`` with its length (the epoch's
``mean Ĵ^I`` is over steps, in the order the slices closed).

Checkpoint format (``state_dict``): version 2 holds the filled rows as tensors. Version 1 (the
per-env lists of the first MICE trainer) is converted on load (:func:`rollout_from_v1`), so a
checkpoint written before this change resumes exactly.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

__all__ = ["ROLLOUT_VERSION", "EpochRollout", "rollout_from_v1"]

ROLLOUT_VERSION = 2
STEP_KEYS = ("log_probs", "rewards", "costs", "intrinsic", "values_r", "values_c")  # written every step
RESULT_KEYS = ("adv_r", "adv_c", "target_r", "target_c")  # written when a slice closes


class EpochRollout:
    """One epoch of ``num_envs`` parallel rollouts: observations, actions, per-step scalars and
    the per-slice results, all float32 on the CPU."""

    def __init__(self, num_envs: int, obs_dim: int, act_dim: int, capacity: int) -> None:
        self.num_envs, self.obs_dim, self.act_dim = int(num_envs), int(obs_dim), int(act_dim)
        self._alloc(max(int(capacity), 1))
        self.reset()

    def _alloc(self, capacity: int) -> None:
        n = self.num_envs
        self.observations = torch.zeros(n, capacity, self.obs_dim)
        self.actions = torch.zeros(n, capacity, self.act_dim)
        self.scalars = {k: torch.zeros(n, capacity) for k in (*STEP_KEYS, *RESULT_KEYS)}

    @property
    def capacity(self) -> int:
        return self.observations.shape[1]

    def reset(self) -> None:
        """Start a new epoch (the tensors are reused; rows past ``t`` are never read)."""
        self.t = 0
        self.slice_start = [0] * self.num_envs
        self.slice_returns: list[tuple[float, int]] = []  # (Ĵ^I, length) per closed slice, in close order
        self.epoch_steps = 0
        self.epoch_cost = 0.0

    def _grow(self, capacity: int) -> None:
        old = (self.observations, self.actions, self.scalars)
        self._alloc(capacity)
        self.observations[:, : self.t] = old[0][:, : self.t]
        self.actions[:, : self.t] = old[1][:, : self.t]
        for k, v in old[2].items():
            self.scalars[k][:, : self.t] = v[:, : self.t]

    # ------------------------------------------------------------------ writing
    def append(self, observations: torch.Tensor, actions: torch.Tensor, **scalars: torch.Tensor) -> None:
        """Row ``t`` of every env: ``observations`` ``(n, obs_dim)``, ``actions`` ``(n, act_dim)``, and
        one ``(n,)`` tensor for each of :data:`STEP_KEYS`."""
        if self.t == self.capacity:  # more steps than the epoch's size (never with a fixed step count)
            self._grow(2 * self.capacity)
        t = self.t
        self.observations[:, t] = observations
        self.actions[:, t] = actions
        for k in STEP_KEYS:
            self.scalars[k][:, t] = scalars[k]
        self.t = t + 1

    def has_open_slice(self, j: int) -> bool:
        return self.slice_start[j] < self.t

    def open_slice(self, j: int) -> dict[str, torch.Tensor]:
        """Env ``j``'s open slice: each of :data:`STEP_KEYS` as a ``(length,)`` view."""
        start = self.slice_start[j]
        return {k: self.scalars[k][j, start : self.t] for k in STEP_KEYS}

    def close_slice(self, j: int, results: Mapping[str, torch.Tensor], intrinsic_return: float) -> None:
        """Write the slice's :data:`RESULT_KEYS` and its ``Ĵ^I``; the next slice starts at ``t``."""
        start = self.slice_start[j]
        for k in RESULT_KEYS:
            self.scalars[k][j, start : self.t] = results[k]
        self.slice_returns.append((float(intrinsic_return), self.t - start))
        self.slice_start[j] = self.t

    # ------------------------------------------------------------------ reading
    def batch(self) -> dict[str, torch.Tensor]:
        """The epoch as flat tensors, env-major (env 0's steps, then env 1's, ...)."""
        t = self.t
        out = {
            "observations": self.observations[:, :t].reshape(-1, self.obs_dim).clone(),
            "actions": self.actions[:, :t].reshape(-1, self.act_dim).clone(),
            "log_probs": self.scalars["log_probs"][:, :t].reshape(-1).clone(),
        }
        for k in RESULT_KEYS:
            out[k] = self.scalars[k][:, :t].reshape(-1).clone()
        return out

    def intrinsic_return_mean(self) -> float:
        """``mean Ĵ^I`` over the epoch's steps (each slice's value broadcast to its steps); 0 when none."""
        if not self.slice_returns:
            return 0.0
        values, lengths = zip(*self.slice_returns)
        return float(np.mean(np.repeat(np.asarray(values, dtype=np.float64), lengths)))

    def intrinsic_mean(self) -> float:
        """The mean per-env mean of ``c^I`` this epoch (a log)."""
        per_env = self.scalars["intrinsic"][:, : self.t].double().numpy()
        return float(np.mean([np.mean(row) for row in per_env]))

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        t = self.t
        return {
            "version": ROLLOUT_VERSION,
            "t": t,
            "observations": self.observations[:, :t].clone(),
            "actions": self.actions[:, :t].clone(),
            "scalars": {k: v[:, :t].clone() for k, v in self.scalars.items()},
            "slice_start": list(self.slice_start),
            "slice_returns": [[float(v), int(n)] for v, n in self.slice_returns],
            "epoch_steps": self.epoch_steps,
            "epoch_cost": self.epoch_cost,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Load a version-2 state, or convert a version-1 one (no ``version`` key)."""
        if "version" not in state:
            state = rollout_from_v1(state, self.obs_dim, self.act_dim)
        if int(state["version"]) != ROLLOUT_VERSION:
            raise ValueError(f"MICE rollout state version {state['version']}, expected {ROLLOUT_VERSION}")
        t = int(state["t"])
        if t > self.capacity:
            self._alloc(t)
        self.t = t
        self.observations[:, :t] = state["observations"]
        self.actions[:, :t] = state["actions"]
        for k in self.scalars:
            self.scalars[k][:, :t] = state["scalars"][k]
        self.slice_start = [int(x) for x in state["slice_start"]]
        self.slice_returns = [(float(v), int(n)) for v, n in state["slice_returns"]]
        self.epoch_steps, self.epoch_cost = int(state["epoch_steps"]), float(state["epoch_cost"])


def rollout_from_v1(state: Mapping, obs_dim: int, act_dim: int) -> dict:
    """Convert the first trainer's rollout (per-env lists ``rows``/``results``, a flat per-step list
    ``intrinsic_returns``) into version 2, value for value."""
    rows, results = state["rows"], state["results"]
    n = len(rows)
    t = len(rows[0]["rewards"]) if n else 0
    if any(len(r["rewards"]) != t for r in rows):
        raise ValueError("MICE rollout v1: the envs hold different step counts")

    def stack(key: str, dim: int) -> torch.Tensor:
        if t == 0:
            return torch.zeros(n, 0, dim)
        return torch.stack([torch.stack([torch.as_tensor(x).float() for x in r[key]]) for r in rows])

    scalars = {k: torch.tensor([r[k] for r in rows], dtype=torch.float32).reshape(n, t) for k in STEP_KEYS}
    for k in RESULT_KEYS:
        scalars[k] = torch.zeros(n, t)
        for j, res in enumerate(results):
            done = torch.cat(res[k]).float() if res[k] else torch.zeros(0)
            scalars[k][j, : done.shape[0]] = done
    # the flat per-step list back into (value, run length) pairs: np.repeat gives the same list
    runs: list[list] = []
    for v in state["intrinsic_returns"]:
        v = float(v)
        if runs and (runs[-1][0] == v or (math.isnan(v) and math.isnan(runs[-1][0]))):
            runs[-1][1] += 1
        else:
            runs.append([v, 1])
    return {
        "version": ROLLOUT_VERSION,
        "t": t,
        "observations": stack("observations", obs_dim),
        "actions": stack("actions", act_dim),
        "scalars": scalars,
        "slice_start": list(state["slice_start"]),
        "slice_returns": runs,
        "epoch_steps": state["epoch_steps"],
        "epoch_cost": state["epoch_cost"],
    }
