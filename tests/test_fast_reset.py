"""Safety-Gymnasium resets without recompiling give the stock env's episodes, number for number.

Each task runs the same seeds and actions through the stock env (``fast_reset=False``, one XML
compile per reset) and corl's default env (layouts written into the compiled model): the
observations, rewards, costs and terminations of the first episodes must be equal, the fast
path must actually have run, and the compiled models must hold the same numbers.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from corl.envs import make_env
from corl.envs.fast_reset import FastResetSafetyGym


def _model_arrays(env) -> dict[str, np.ndarray]:
    model = env.unwrapped.task.world.model
    return {
        k: getattr(model, k)
        for k in dir(model)
        if not k.startswith("_") and isinstance(getattr(model, k, None), np.ndarray)
    }


def _episodes(env, seeds: list[int], steps: int, actions: np.ndarray) -> list[tuple]:
    rows = []
    for episode, seed in enumerate(seeds):
        obs, _ = env.reset(seed=seed)
        rows.append(("reset", obs.copy()))
        for t in range(steps):
            obs, reward, terminated, truncated, info = env.step(actions[episode, t])
            rows.append((obs.copy(), float(reward), float(info["cost"]), bool(terminated), bool(truncated)))
            if terminated or truncated:
                break
    return rows


@pytest.mark.parametrize(
    "task,n_episodes",
    [
        ("SafetyPointGoal1-v0", 3),
        ("SafetyPointGoal2-v0", 2),
        ("SafetyCarButton1-v0", 2),
        ("SafetyPointPush1-v0", 2),
    ],
)
def test_fast_reset_equals_stock_rebuild(task, n_episodes):
    steps = 40
    seeds = [11 + 7 * i for i in range(n_episodes)]
    stock, fast = make_env(task, fast_reset=False), make_env(task)
    assert isinstance(fast, FastResetSafetyGym) and not isinstance(stock, FastResetSafetyGym)
    space = stock.action_space
    actions = np.random.default_rng(0).uniform(space.low, space.high, size=(n_episodes, steps, *space.shape))
    want, got = _episodes(stock, seeds, steps, actions), _episodes(fast, seeds, steps, actions)
    assert fast.fast is not None and fast.fast.fast_resets == n_episodes - 1  # the first reset compiles
    assert len(want) == len(got)
    for i, (a, b) in enumerate(zip(want, got)):
        if isinstance(a[0], str):
            np.testing.assert_array_equal(a[1], b[1], err_msg=f"{task}: reset observation (row {i})")
            continue
        np.testing.assert_allclose(b[0], a[0], rtol=0, atol=1e-12, err_msg=f"{task}: observation (row {i})")
        assert b[1:] == pytest.approx(a[1:], rel=0, abs=1e-12), f"{task}: reward/cost/termination (row {i})"
    # the same model numbers as a fresh compile of the last layout
    want_model, got_model = _model_arrays(stock), _model_arrays(fast)
    for key, value in want_model.items():
        np.testing.assert_array_equal(got_model[key], value, err_msg=f"{task}: model.{key}")
    stock.close()
    fast.close()


def test_structure_change_falls_back_to_the_stock_rebuild():
    env = make_env("SafetyPointGoal1-v0", seed=3)
    env.reset(seed=4)
    fast = env.fast
    assert fast.fast_resets == 1 and fast.stock_resets == 0
    world = env.unwrapped.task.world
    config = copy.deepcopy(world.config)
    del config["geoms"]["hazard7"]  # one object fewer: another model structure
    nbody = world.model.nbody
    world.rebuild(config, state=False)
    assert fast.stock_resets == 1 and world.model.nbody == nbody - 1
    world.rebuild(config, state=False)  # the new structure is the template now
    assert fast.fast_resets == 2 and world.model.nbody == nbody - 1
    env.close()


def test_fast_reset_option_and_environment_switch(monkeypatch):
    assert not isinstance(make_env("SafetyPointGoal1-v0", fast_reset=False), FastResetSafetyGym)
    monkeypatch.setenv("CORL_FAST_RESET", "0")
    assert not isinstance(make_env("SafetyPointGoal1-v0"), FastResetSafetyGym)
    assert not isinstance(make_env("OfflineCarCircle-v0", fast_reset=True), FastResetSafetyGym)  # bullet
