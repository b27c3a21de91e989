"""The task registry resolves every kind of name and rejects unknown ones helpfully."""

from __future__ import annotations

import pytest

from corl.envs import make_env
from corl.errors import TaskError
from corl.tasks import get_task, task_names


def test_dsrl_task_has_full_precision_reference_returns():
    spec = get_task("OfflineCarCircle-v0")
    assert spec.kind == "dsrl" and spec.family == "bullet"
    assert spec.reward_min == pytest.approx(3.484419822692871, abs=0)
    assert spec.reward_max == pytest.approx(534.3060913085938, abs=0)
    assert spec.max_episode_steps == 300
    assert spec.cost_limits == (10.0, 20.0, 40.0)
    assert spec.dataset_file == "SafetyCarCircle-v0-100-1450.hdf5"
    assert spec.online_task == "SafetyCarCircle-v0"


def test_every_dsrl_bullet_and_gymnasium_task_is_registered():
    dsrl = task_names("dsrl")
    assert len(dsrl) == 29  # 8 bullet + 16 navigation + 5 velocity (MetaDrive needs legacy gym)
    assert "OfflinePointGoal1Gymnasium-v0" in dsrl and "OfflineAntVelocityGymnasium-v1" in dsrl
    assert get_task("OfflineAntVelocity-v1").name == "OfflineAntVelocityGymnasium-v1"  # alias


def test_d4rl_names_map_to_gymnasium_mujoco():
    spec = get_task("walker2d-medium-expert-v2")
    assert spec.env_id == "Walker2d-v4"
    assert (spec.reward_min, spec.reward_max) == (1.629008, 4592.3)
    assert spec.cost_limit is None


@pytest.mark.parametrize(
    "name",
    [
        "OfflineCarCircle-v0",
        "SafetyPointGoal1-v0",
        "OfflinePointGoal1Gymnasium-v0",
        "walker2d-medium-v2",
        "SafetyBallRun-v0",
    ],
)
def test_registered_dims_match_the_real_simulator(name):
    spec = get_task(name)
    env = make_env(spec)
    assert env.observation_space.shape == (spec.obs_dim,)
    assert env.action_space.shape == (spec.act_dim,)
    assert env.spec.max_episode_steps == spec.max_episode_steps
    env.close()


def test_unknown_task_names_closest_matches_in_one_line():
    with pytest.raises(TaskError) as info:
        get_task("OfflineCarCircel-v0")
    message = str(info.value)
    assert "\n" not in message
    assert "OfflineCarCircle-v0" in message
