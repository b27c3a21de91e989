"""Dataset summaries as plain data (the CLI renders them; nothing here prints).

Why per-episode quantiles: offline safe-RL results depend on how the data covers the
cost-reward plane, and a mean hides that; min/quartiles/max of episode reward, cost and length
show it at a glance. With a task, rewards are normalized as DSRL/D4RL report scores, so a
dataset's spread can be compared with the benchmark tables directly:

* normalized reward = (R - R_min) / (R_max - R_min) with the task's reference returns (DSRL:
  the dataset's min/max episode return from ``dsrl.infos``; D4RL: random/expert returns; D4RL
  papers multiply by 100, corl keeps fractions);
* normalized cost = (C + eps) / (limit + eps), eps = 1 only when the limit is 0 (DSRL's rule),
  at the task's default cost limit; an episode is safe when it is <= 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from corl.data.dataset import TransitionDataset
from corl.tasks import TaskSpec, get_task

QUANTILES: tuple[tuple[str, float], ...] = (("min", 0.0), ("25%", 0.25), ("50%", 0.5), ("75%", 0.75), ("max", 1.0))


def quantiles(values: np.ndarray) -> dict[str, float]:
    """min, quartiles (linear interpolation, numpy's default), max and mean of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {name: float("nan") for name, _ in QUANTILES} | {"mean": float("nan")}
    out = {name: float(np.quantile(values, q)) for name, q in QUANTILES}
    out["mean"] = float(values.mean())
    return out


def normalized_cost(cost: np.ndarray | float, limit: float) -> np.ndarray:
    """DSRL's normalized cost (C + eps) / (limit + eps), eps = 1 only when ``limit == 0``."""
    eps = 1.0 if limit == 0 else 0.0
    return (np.asarray(cost, dtype=np.float64) + eps) / (limit + eps)


def normalized_reward(reward: np.ndarray | float, reward_min: float, reward_max: float) -> np.ndarray:
    """(R - R_min) / (R_max - R_min) with the task's reference returns."""
    return (np.asarray(reward, dtype=np.float64) - reward_min) / (reward_max - reward_min)


def dataset_summary(
    dataset: TransitionDataset,
    task: TaskSpec | str | None = None,
    cost_limit: float | None = None,
) -> dict[str, Any]:
    """Sizes, per-episode reward/cost/length quantiles and, given a task, normalized scores.

    ``cost_limit`` overrides the task's default limit (DSRL's first threshold). Keys:
    ``episodes, transitions, obs_dim, act_dim, terminals, timeouts, reward, cost, length``
    always; ``task, normalization, normalized_reward`` when the task has reference returns;
    ``cost_limit, normalized_cost, safe_fraction`` when a limit applies.
    """
    spec = get_task(task) if isinstance(task, str) else task
    returns = dataset.episode_returns()
    summary: dict[str, Any] = {
        "episodes": int(returns["reward"].shape[0]),
        "transitions": len(dataset),
        "obs_dim": dataset.obs_dim,
        "act_dim": dataset.act_dim,
        "terminals": int(dataset.terminals.sum().item()),
        "timeouts": int(dataset.timeouts.sum().item()),
        "reward": quantiles(returns["reward"]),
        "cost": quantiles(returns["cost"]),
        "length": quantiles(returns["length"]),
    }
    if spec is not None:
        summary["task"] = spec.name
        if spec.reward_min is not None and spec.reward_max is not None:
            summary["normalization"] = spec.normalization
            summary["normalized_reward"] = quantiles(
                normalized_reward(returns["reward"], spec.reward_min, spec.reward_max)
            )
    limit = cost_limit if cost_limit is not None else (spec.cost_limit if spec is not None else None)
    if limit is not None:
        norm_cost = normalized_cost(returns["cost"], float(limit))
        summary["cost_limit"] = float(limit)
        summary["normalized_cost"] = quantiles(norm_cost)
        summary["safe_fraction"] = float((norm_cost <= 1.0).mean()) if norm_cost.size else float("nan")
    return summary
