"""sim2real: specs parse, live simulator parameters really change and come back exactly.

Real simulators, tiny: each env is built once per module and stepped a handful of times.
Values are read back from the simulator itself (MuJoCo model arrays, pybullet
getDynamicsInfo / getPhysicsEngineParameters), not from corl's own bookkeeping.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from corl.envs import make_env
from corl.errors import CorlError
from corl.eval.sim2real import (
    PARAMETERS,
    env_supported_parameters,
    parse_grid,
    parse_scales,
    parse_spec,
    perturbation,
    perturbation_hook,
    supported_parameters,
)


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


# ----------------------------------------------------------------------------- parsing


def test_parse_scales_linspace_and_list():
    assert parse_scales("0.5:1.5:3") == (0.5, 1.0, 1.5)
    assert parse_scales("0.5,1,2") == (0.5, 1.0, 2.0)
    assert parse_scales("2") == (2.0,)
    assert len(parse_scales("0.5:5.0:10")) == 10


def test_parse_spec_and_grid_order():
    axis = parse_spec("Friction=0.5:1.5:10")
    assert axis.param == "friction" and len(axis.scales) == 10
    axes, cells = parse_grid(["friction=0.5,1", "gravity=1,2,3"], task="hopper-medium-v2")
    assert [a.param for a in axes] == ["friction", "gravity"]
    assert len(cells) == 6
    # last axis fastest: reshapes to (len(friction), len(gravity)) in order
    assert cells[0] == {"friction": 0.5, "gravity": 1.0} and cells[2] == {"friction": 0.5, "gravity": 3.0}
    assert cells[3] == {"friction": 1.0, "gravity": 1.0}


@pytest.mark.parametrize(
    "bad",
    [
        "friction",
        "friction=",
        "friction=1:2",
        "friction=a,b",
        "friction=1:2:0",
        "friction=1:2:x",
        "friction=-1,1",
        "friction=nan",
        "mass=0,1",
    ],
)
def test_bad_scale_strings_are_one_line_errors(bad):
    with pytest.raises(CorlError) as err:
        parse_spec(bad)
    text = one_line(err)
    assert bad.split("=")[0] in text


def test_unknown_parameter_lists_supported():
    with pytest.raises(CorlError) as err:
        parse_spec("frction=0.5,1", task="hopper-medium-v2")
    text = one_line(err)
    assert "did you mean 'friction'" in text and "supported: friction, gravity, mass, actuator" in text
    with pytest.raises(CorlError) as err:
        parse_grid(["mass=1,2", "mass=3"])
    one_line(err)


def test_supported_parameters_per_family():
    for task in ("hopper-medium-v2", "SafetyPointGoal1-v0", "OfflineCarCircle-v0"):
        assert supported_parameters(task) == list(PARAMETERS)
    # Drone thrust comes from rotor speed, not a motor force: no actuator scaling offered.
    assert "actuator" not in supported_parameters("OfflineDroneRun-v0")
    with pytest.raises(CorlError) as err:
        parse_spec("actuator=0.5", task="OfflineDroneRun-v0")
    assert "supported: friction, gravity, mass" in one_line(err)


# ----------------------------------------------------------------------------- MuJoCo


@pytest.fixture(scope="module")
def hopper():
    env = make_env("hopper-medium-v2", seed=0)
    yield env
    env.close()


def _mj_values(model) -> dict[str, np.ndarray]:
    return {
        "friction": model.geom_friction.copy(),
        "gravity": model.opt.gravity.copy(),
        "mass": model.body_mass.copy(),
        "inertia": model.body_inertia.copy(),
        "actuator": model.actuator_gear.copy(),
    }


def test_mujoco_perturbation_changes_and_restores(hopper):
    model = hopper.unwrapped.model
    before = _mj_values(model)
    scales = {"friction": 0.5, "gravity": 2.0, "mass": 1.5, "actuator": 0.25}
    with perturbation(hopper, scales) as applied:
        assert applied == scales
        hopper.reset(seed=1)  # resets keep the perturbation
        for _ in range(3):
            hopper.step(hopper.action_space.sample())
        now = _mj_values(hopper.unwrapped.model)
        np.testing.assert_allclose(now["friction"], before["friction"] * 0.5)
        np.testing.assert_allclose(now["gravity"], before["gravity"] * 2.0)
        assert now["gravity"][2] == pytest.approx(-19.62)  # hopper's gravity really moves (MICRO's XML edit did not)
        np.testing.assert_allclose(now["mass"], before["mass"] * 1.5)
        np.testing.assert_allclose(now["inertia"], before["inertia"] * 1.5)
        np.testing.assert_allclose(now["actuator"], before["actuator"] * 0.25)
    after = _mj_values(hopper.unwrapped.model)
    for key in before:
        assert np.array_equal(after[key], before[key]), key  # exact, not approximately
    assert "reset" not in vars(hopper.unwrapped)


def test_mujoco_nested_and_exception_restore(hopper):
    model = hopper.unwrapped.model
    g0 = model.opt.gravity.copy()
    with pytest.raises(RuntimeError):
        with perturbation(hopper, {"gravity": 3.0}):
            with perturbation(hopper, {"gravity": 0.5}):
                np.testing.assert_allclose(model.opt.gravity, g0 * 1.5)
                hopper.reset()
                np.testing.assert_allclose(model.opt.gravity, g0 * 1.5)
            np.testing.assert_allclose(model.opt.gravity, g0 * 3.0)
            raise RuntimeError("boom")
    assert np.array_equal(model.opt.gravity, g0)
    assert "reset" not in vars(hopper.unwrapped)


def test_hook_and_env_errors(hopper):
    g0 = hopper.unwrapped.model.opt.gravity.copy()
    with perturbation_hook({"gravity": 0.5})(hopper):
        np.testing.assert_allclose(hopper.unwrapped.model.opt.gravity, g0 * 0.5)
    assert np.array_equal(hopper.unwrapped.model.opt.gravity, g0)
    with pytest.raises(CorlError) as err:
        with perturbation(hopper, {"wind": 2.0}):
            pass
    assert "supported: friction, gravity, mass, actuator" in one_line(err)
    with pytest.raises(CorlError) as err:
        with perturbation(hopper, {"mass": -1.0}):
            pass
    one_line(err)
    assert env_supported_parameters(hopper) == list(PARAMETERS)


@pytest.mark.parametrize("fast_reset", [False, True])
def test_safety_gymnasium_perturbation_survives_model_rebuild(fast_reset):
    """Stock resets compile a new MjModel; corl's fast reset (corl/envs/fast_reset.py) rewrites
    the compiled one from its saved nominal arrays. The perturbation survives both."""
    env = make_env("SafetyPointGoal1-v0", seed=0, fast_reset=fast_reset)
    try:
        base = env.unwrapped
        first = base.task.model
        mass0, gear0, fric0 = first.body_mass.copy(), first.actuator_gear.copy(), first.geom_friction.copy()
        with perturbation(env, {"mass": 2.0, "actuator": 0.5, "friction": 0.25}):
            np.testing.assert_allclose(first.body_mass, mass0 * 2.0)
            env.reset(seed=1)  # stock: a new MjModel; fast: the same one, nominal arrays restored
            model = base.task.model
            assert (model is first) if fast_reset else (model is not first)
            # the new model is perturbed too (same agent, so same nominal gear and point mass)
            np.testing.assert_allclose(model.actuator_gear, gear0 * 0.5)
            agent = model.body("agent").id
            assert model.body_mass[agent] == pytest.approx(mass0[first.body("agent").id] * 2.0)
            for _ in range(3):
                env.step(env.action_space.sample())
        np.testing.assert_array_equal(model.actuator_gear, gear0)
        assert model.body_mass[agent] == mass0[first.body("agent").id]
        np.testing.assert_array_equal(first.geom_friction, fric0)
        assert "reset" not in vars(base)
    finally:
        env.close()


# ----------------------------------------------------------------------------- PyBullet


def _bullet_values(env) -> tuple[list[tuple], float, float, list[float]]:
    base = env.unwrapped
    bc, agent = base.bc, base.agent
    links = [tuple(bc.getDynamicsInfo(agent.body_id, link)) for link in range(-1, bc.getNumJoints(agent.body_id))]
    plane = tuple(bc.getDynamicsInfo(bc.getBodyUniqueId(0), -1))
    gravity = bc.getPhysicsEngineParameters()["gravityAccelerationZ"]
    return links + [plane], gravity, agent.max_force, [agent.speed_multiplier] + [j.max_force for j in agent.joint_list]


@pytest.mark.parametrize("task", ["SafetyCarCircle-v0", "OfflineCarCircle-v0"])
def test_bullet_perturbation_changes_and_restores(task):
    env = make_env(task, seed=0)
    try:
        bc, agent = env.unwrapped.bc, env.unwrapped.agent
        links0, g0, force0, joints0 = _bullet_values(env)
        base_mass0, base_fric0 = links0[0][0], links0[0][1]
        with perturbation(env, {"friction": 0.25, "mass": 2.0, "gravity": 0.5, "actuator": 3.0}):
            for _ in range(2):  # before and after a reset inside the block
                info = bc.getDynamicsInfo(agent.body_id, -1)
                assert info[0] == pytest.approx(base_mass0 * 2.0)
                # Bullet multiplies both sides' friction: each side gets sqrt(scale)
                assert info[1] == pytest.approx(base_fric0 * math.sqrt(0.25))
                assert bc.getPhysicsEngineParameters()["gravityAccelerationZ"] == pytest.approx(g0 * 0.5)
                assert agent.max_force == pytest.approx(force0 * 3.0)
                assert agent.speed_multiplier == pytest.approx(joints0[0] * 3.0)  # the car's velocity gain
                env.reset(seed=1)
                env.step(env.action_space.sample())
        links1, g1, force1, joints1 = _bullet_values(env)
        assert links1 == links0 and g1 == g0 and force1 == force0 and joints1 == joints0  # exact
        assert "reset" not in vars(env.unwrapped)
    finally:
        env.close()


def test_bullet_perturbations_change_the_motion():
    """Not just numbers: near-zero friction makes the car's wheels slip, a weak actuator slows it."""
    env = make_env("SafetyCarCircle-v0", seed=0)

    def speed(scales):
        with perturbation(env, scales):
            env.reset(seed=0)
            for _ in range(8):
                env.step(np.array([1.0, 0.0], dtype=np.float32))
            return float(np.linalg.norm(env.unwrapped.agent.get_linear_velocity()[:2]))

    try:
        nominal, slippery, weak = speed({}), speed({"friction": 0.0025}), speed({"actuator": 0.3})
        assert slippery < 0.5 * nominal
        assert weak < 0.75 * nominal
    finally:
        env.close()


# ----------------------------------------------------------------------------- plots


def test_heatmap_png(tmp_path):
    from matplotlib.image import imread

    from corl.eval.plots import plot_grid

    f = np.linspace(0.5, 1.5, 4)
    g = np.linspace(0.5, 5.0, 3)
    reward = np.outer(1 / g, f)
    cost = np.outer(g, 1 / f) * 0.5
    path = plot_grid("friction", f, "gravity", g, reward, cost, tmp_path / "grid.png", title="hopper")
    assert path.exists() and path.stat().st_size > 10_000
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 600
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50  # not a blank canvas
    with pytest.raises(ValueError):
        plot_grid("friction", f, "gravity", g, reward.T, None, tmp_path / "bad.png")


def test_rollout_hook_unit_scales_reproduce_and_scales_change_the_episode():
    """Through corl's rollout (hooks entered before the vector env's reset): scale 1 is
    exactly nominal, a real scale changes what happens."""
    rollout = pytest.importorskip("corl.eval.rollout").rollout
    import torch

    from corl.nn.policies import DeterministicPolicy

    torch.manual_seed(0)
    policy = DeterministicPolicy(11, 3, hidden=(16,))
    nominal = rollout("hopper-medium-v2", policy, episodes=2, seed=0, num_envs=2)
    unit = rollout(
        "hopper-medium-v2",
        policy,
        episodes=2,
        seed=0,
        num_envs=2,
        env_hook=perturbation_hook({"gravity": 1.0, "friction": 1.0, "mass": 1.0, "actuator": 1.0}),
    )
    heavy = rollout(
        "hopper-medium-v2", policy, episodes=2, seed=0, num_envs=2, env_hook=perturbation_hook({"gravity": 3.0})
    )
    assert np.array_equal(nominal.reward, unit.reward)
    assert not np.array_equal(nominal.reward, heavy.reward)
