"""Vector envs in worker processes give the in-process numbers, for any worker layout."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest

from corl.algos.online.collector import OnlineCollector
from corl.envs import make_vector_env, step_costs
from corl.envs.workers import GroupedVectorEnv, resolve_workers, split_envs

TASK = "SafetyPointGoal1-v0"


def _run(workers: int, actions: np.ndarray) -> list:
    # episodes of 6 steps, so the 14 steps cross two auto-resets in every env
    env = make_vector_env(TASK, 3, workers=workers, wrap=functools.partial(gym.wrappers.TimeLimit, max_episode_steps=6))
    assert isinstance(env, GroupedVectorEnv) == (workers > 1)
    obs, _ = env.reset(seed=5)
    rows = [obs]
    for a in actions:
        obs, reward, terminated, truncated, infos = env.step(a)
        finals = [np.asarray(x) if x is not None else None for x in infos.get("final_observation", [None] * 3)]
        rows.append((obs, reward, terminated, truncated, step_costs(infos, 3), finals))
    env.close()
    return rows


def test_worker_layouts_step_identically():
    actions = np.random.default_rng(0).uniform(-1, 1, size=(14, 3, 2))
    in_process, two_workers = _run(1, actions), _run(2, actions)  # layouts [3] and [2, 1]
    np.testing.assert_array_equal(two_workers[0], in_process[0])
    assert any(r[3].any() for r in in_process[1:])  # auto-resets happened
    for t, (a, b) in enumerate(zip(in_process[1:], two_workers[1:])):
        for x, y in zip(a[:5], b[:5]):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(y, x, err_msg=f"step {t}")
        for x, y in zip(a[5], b[5]):
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(y, x)


def test_online_collector_records_the_same_with_workers():
    actions = np.random.default_rng(1).uniform(-1, 1, size=(12, 2, 2)).astype(np.float32)
    data = []
    for workers in (1, 2):
        collector = OnlineCollector(TASK, 2, seed=9, workers=workers)
        collector.reset()
        for a in actions:
            collector.step(actions=a)
        data.append(collector.dataset(include_partial=True))
        collector.close()
    want, got = data[0].to_numpy(), data[1].to_numpy()
    assert len(want["rewards"]) == 24
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_resolve_workers(monkeypatch):
    monkeypatch.delenv("CORL_ENV_WORKERS", raising=False)
    assert resolve_workers(10, 1) == 1 and resolve_workers(10, 4) == 4 and resolve_workers(3, 8) == 3
    monkeypatch.setattr("corl.envs.workers.free_cores", lambda: 6)
    assert resolve_workers(10, None) == 5 and resolve_workers(10, 0) == 5 and resolve_workers(2, 0) == 2
    monkeypatch.setattr("corl.envs.workers.free_cores", lambda: 2)
    assert resolve_workers(10, 0) == 1  # one free core for the learner leaves none to spread over
    monkeypatch.setenv("CORL_ENV_WORKERS", "3")
    assert resolve_workers(10, 0) == 3 and resolve_workers(10, 2) == 2
    with pytest.raises(ValueError):
        resolve_workers(4, -1)
    assert split_envs(10, 4) == [3, 3, 2, 2] and sum(split_envs(7, 3)) == 7


def test_collect_episodes_same_dataset_for_any_number_of_workers():
    from corl.collect.recorder import CollectConfig, collect_episodes
    from corl.tasks import get_task

    config = CollectConfig(episodes=3, policy="random", seed=4, max_steps=10)
    task = get_task("OfflinePointGoal1Gymnasium-v0")
    here, pooled = collect_episodes(task, config, workers=1), collect_episodes(task, config, workers=2)
    assert here.metadata == pooled.metadata
    want, got = here.to_numpy(), pooled.to_numpy()
    assert len(want["rewards"]) == 30
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_mice_training_is_the_same_over_worker_processes():
    """A short MICE run (two epochs: intrinsic cost, slices at episode ends, CPO and critic updates)
    gives bit-identical updates and weights with its envs in this process or in two workers."""
    import torch

    from corl.algos.mice import MICEConfig, MICETrainer
    from corl.algos.online import train_online

    cfg = MICEConfig(hidden=(16, 16), steps_per_epoch=60, cost_limit=10.0, update_iters=1, batch_size=30)
    wrap = functools.partial(gym.wrappers.TimeLimit, max_episode_steps=25)  # episode ends inside each epoch
    runs = []
    for workers in (1, 2):
        torch.manual_seed(0)
        trainer = MICETrainer.for_task(TASK, num_envs=2, config=cfg)
        env = make_vector_env(TASK, 2, workers=workers, wrap=wrap)
        collector = OnlineCollector(TASK, 2, seed=3, record=False, env=env)
        res = train_online(trainer, TASK, 120, num_envs=2, seed=3, record=False, collector=collector)
        collector.close()
        params = [
            p.detach().clone() for m in (trainer.learner.actor, trainer.learner.cost_critic) for p in m.parameters()
        ]
        runs.append((res.logs, [e.cost for e in res.episodes], params, list(trainer.beta)))
    (logs_a, costs_a, params_a, beta_a), (logs_b, costs_b, params_b, beta_b) = runs
    assert len(logs_a) == 2 and len(costs_a) == 4
    assert logs_a == logs_b and costs_a == costs_b and beta_a == beta_b
    for a, b in zip(params_a, params_b):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
