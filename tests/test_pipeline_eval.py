"""Evaluation pieces the bc pipeline reports: DSRL/D4RL normalization and seeded rollouts."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from corl.eval.rollout import rollout
from corl.eval.scores import normalized_cost, normalized_reward, summarize
from corl.tasks import get_task

TASK = "OfflineCarCircle-v0"


def test_dsrl_and_d4rl_normalization():
    task = get_task(TASK)
    lo, hi = task.reward_min, task.reward_max
    assert normalized_reward(task, np.array([lo, hi])) == pytest.approx([0.0, 1.0])
    assert normalized_cost(np.array([0.0, 10.0, 20.0]), 10.0) == pytest.approx([0.0, 1.0, 2.0])
    assert normalized_cost(np.array([0.0, 1.0]), 0.0) == pytest.approx([1.0, 2.0])  # eps = 1 only at limit 0
    d4rl = get_task("hopper-medium-v2")
    assert normalized_reward(d4rl, np.array([d4rl.reward_max])) == pytest.approx([100.0])
    m = summarize(task, np.array([lo, hi]), np.array([5.0, 15.0]), np.array([300, 300]), 10.0, task.cost_limits)
    assert m["final/normalized_reward"] == pytest.approx(0.5) and m["final/normalized_reward_std"] == pytest.approx(0.5)
    assert m["final/normalized_cost"] == pytest.approx(1.0) and m["final/safe"] == 1.0
    assert m["final/normalized_cost@20"] == pytest.approx(0.5)
    assert "best/reward" in summarize(task, np.ones(1), np.zeros(1), np.ones(1), 10.0, prefix="best/")


def test_rollout_is_seeded_and_hooks_apply():
    task = get_task(TASK)
    policy = lambda obs: torch.tanh(obs[:, :2])  # noqa: E731  a fixed deterministic policy
    a = rollout(task, policy, episodes=2, seed=3, num_envs=2)
    b = rollout(task, policy, episodes=2, seed=3, num_envs=2)
    assert len(a) == 2 and np.array_equal(a.reward, b.reward) and np.array_equal(a.cost, b.cost)
    assert (a.length == task.max_episode_steps).all()

    seen = {"transform": 0, "hook": 0}

    def transform(obs):
        seen["transform"] += 1
        return obs * 0.0

    @contextlib.contextmanager
    def hook(env):
        seen["hook"] += 1
        yield

    c = rollout(task, policy, episodes=1, seed=3, num_envs=1, obs_transform=transform, env_hook=hook)
    assert seen["hook"] == 1 and seen["transform"] == task.max_episode_steps and len(c) == 1
