"""Normalized scores: DSRL's reward/cost normalization and D4RL's score.

* DSRL (``kind == "dsrl"``): normalized reward ``(R - R_min) / (R_max - R_min)`` with the
  task's reference returns (the smallest/largest episode returns of DSRL's dataset, from
  ``dsrl.infos``); normalized cost ``(C + eps) / (limit + eps)`` with ``eps = 1`` only when
  ``limit == 0`` (DSRL's rule). An episode is safe when its normalized cost is <= 1.
* D4RL (``kind == "d4rl"``): ``100 * (R - R_random) / (R_expert - R_random)``.
* Online tasks have no reference returns: the raw return is reported.

Means and standard deviations are over evaluation episodes (population std, ``ddof=0``).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from corl.tasks import TaskSpec


def normalized_reward(task: TaskSpec, returns: np.ndarray) -> np.ndarray:
    returns = np.asarray(returns, dtype=np.float64)
    if task.reward_min is None or task.reward_max is None:
        return returns
    scaled = (returns - task.reward_min) / (task.reward_max - task.reward_min)
    return 100.0 * scaled if task.kind == "d4rl" else scaled


def normalized_cost(costs: np.ndarray, limit: float) -> np.ndarray:
    eps = 1.0 if limit == 0 else 0.0
    return (np.asarray(costs, dtype=np.float64) + eps) / (float(limit) + eps)


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std())


def summarize(
    task: TaskSpec,
    reward: np.ndarray,
    cost: np.ndarray,
    length: np.ndarray,
    cost_limit: float | None,
    extra_limits: Iterable[float] = (),
    prefix: str = "final/",
) -> dict[str, float]:
    """Flat metrics: raw and normalized reward/cost, mean and std, per extra cost limit too.

    ``prefix`` labels which policy was evaluated (``final/`` or ``best/``), so a score table
    can never mix the two.
    """
    out: dict[str, float] = {}
    r_mean, r_std = _mean_std(reward)
    c_mean, c_std = _mean_std(cost)
    out[f"{prefix}reward"], out[f"{prefix}reward_std"] = r_mean, r_std
    out[f"{prefix}cost"], out[f"{prefix}cost_std"] = c_mean, c_std
    out[f"{prefix}length"] = float(np.mean(length)) if len(length) else float("nan")
    out[f"{prefix}episodes"] = float(len(reward))
    score_name = "normalized_score" if task.kind == "d4rl" else "normalized_reward"
    if task.kind != "online":
        out[f"{prefix}{score_name}"], out[f"{prefix}{score_name}_std"] = _mean_std(normalized_reward(task, reward))
    if cost_limit is not None and task.is_constrained:
        nc = normalized_cost(cost, cost_limit)
        out[f"{prefix}normalized_cost"], out[f"{prefix}normalized_cost_std"] = _mean_std(nc)
        out[f"{prefix}cost_limit"] = float(cost_limit)
        out[f"{prefix}safe"] = float(np.mean(nc) <= 1.0)
        for limit in extra_limits:
            if limit != cost_limit:
                out[f"{prefix}normalized_cost@{limit:g}"] = _mean_std(normalized_cost(cost, limit))[0]
    return out
