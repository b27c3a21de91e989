"""Envs of every family reset and step through one API; the Python 3.11 shim is needed and works."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from corl.compat import install_safety_gymnasium_shim, shim_is_installed
from corl.envs import make_env, make_vector_env, step_costs


@pytest.mark.parametrize(
    "task",
    [
        "OfflineCarCircle-v0",  # dsrl over bullet-safety-gym
        "SafetyCarCircle-v0",  # bullet-safety-gym directly
        "OfflinePointGoal1Gymnasium-v0",  # dsrl over safety-gymnasium
        "SafetyPointGoal1-v0",  # safety-gymnasium directly (through its gymnasium conversion)
        "OfflineAntVelocityGymnasium-v1",  # velocity task (6-tuple inside, 5-tuple outside)
        "hopper-medium-v2",  # D4RL name -> gymnasium MuJoCo Hopper-v4
    ],
)
def test_each_family_resets_and_steps(task):
    env = make_env(task, seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert isinstance(info["cost"], float)
        assert np.isfinite(reward)
    env.close()


def test_vector_env_reports_costs_per_env():
    env = make_vector_env("OfflineCarCircle-v0", 3)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (3, 8)
    obs, reward, terminated, truncated, infos = env.step(env.action_space.sample())
    assert step_costs(infos, 3).shape == (3,)
    env.close()


def test_shim_turns_ndarray_defaults_into_factories():
    install_safety_gymnasium_shim()
    assert shim_is_installed()

    @dataclasses.dataclass
    class Geom:
        color: np.ndarray = np.array([1.0, 0.0, 0.0])

    a, b = Geom(), Geom()
    assert np.array_equal(a.color, [1.0, 0.0, 0.0])
    a.color[0] = 5.0
    assert b.color[0] == 1.0  # no shared mutable default


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the check the shim works around exists from 3.11")
def test_without_the_shim_python_rejects_ndarray_defaults(monkeypatch):
    from corl import compat

    monkeypatch.setattr(dataclasses, "_get_field", compat._ORIGINAL_GET_FIELD)
    with pytest.raises(ValueError, match="mutable default"):

        @dataclasses.dataclass
        class Geom:
            color: np.ndarray = np.array([1.0, 0.0, 0.0])
