"""Safety-Gymnasium navigation resets without recompiling the MuJoCo model.

Why: on every ``reset`` safety-gymnasium 0.4.0 samples a new layout and then rebuilds the whole
world from XML (``World.rebuild`` -> ``World.build`` -> ``MjModel.from_xml_string``), which also
re-reads ``assets.yaml`` and decodes the skybox textures. Only the positions and rotations of the
agent, hazards, vases, pillars, buttons, goal, push box and gremlins differ between two layouts
of the same task; the model's structure (bodies, geoms, joints, welds, assets) is the same.

What this does instead: the first reset compiles the model as the stock code does and keeps a
pristine copy of it. Each later reset still runs safety-gymnasium's own layout sampling
(``random_generator.build_layout``, ``random_rot``, ``generate_rots``: the env's RNG stream is
untouched), then copies the pristine model, writes the new poses into it exactly where the XML
compiler would have put them (``body_pos``/``body_quat`` of placed bodies, the free joints'
``qpos0``/``qpos_spring``, the mocap geoms' ``geom_pos``/``geom_quat`` and their bodies' inertial
frame, the tracking camera), recomputes the pose-dependent constants with ``mj_setConst`` and
makes a fresh ``MjData``: the same objects the stock rebuild would hand to the task, minus the
XML round trip. Numbers go through ``str``/``float`` as the XML does, so they are bit-identical.

When a layout changes the model's structure (another object set, sizes, colours, agent, floor),
the stock rebuild runs and its model becomes the new template. :func:`install_fast_reset` is
what ``corl.envs.factory.make_env`` calls (``fast_reset=False`` there turns it off).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

_POSE_KEYS = ("pos", "rot", "quat", "euler")


def _xml_float(values: Any) -> np.ndarray:
    """Numbers as the XML compiler sees them: safety-gymnasium writes ``str(x)`` (shortest repr)."""
    return np.array([float(str(v)) for v in np.atleast_1d(np.asarray(values, dtype=np.float64))])


def _normalized(q: np.ndarray) -> np.ndarray:
    """The XML compiler's quaternion normalisation (``mjuu_normvec``: divide by the norm, always).

    ``mju_normalize4`` skips the division when the norm is within 1e-15 of one, which leaves
    the last bit different from the compiled model; this keeps it identical.
    """
    a, b, c, d = (float(v) for v in q)
    norm = float(np.sqrt(a * a + b * b + c * c + d * d))
    return np.array([a / norm, b / norm, c / norm, d / norm]) if norm > 1e-14 else np.asarray(q, dtype=np.float64)


def _rot_quat(theta: float) -> np.ndarray:
    """safety-gymnasium's ``rot2quat`` after its XML round trip and the compiler's normalisation."""
    return _normalized(_xml_float([np.cos(theta / 2), 0.0, 0.0, np.sin(theta / 2)]))


def _structure(config: dict) -> tuple:
    """Everything in a world config that decides the compiled model except the poses.

    Two configs with the same structure compile to models that differ only in the fields
    :class:`FastRebuild` writes. Values are compared as the XML strings they become.
    """
    from safety_gymnasium.utils.common_utils import convert

    parts: list[Any] = [config.get("agent_base"), config.get("floor_type"), convert(config.get("floor_size"))]
    for group in ("geoms", "free_geoms", "mocaps"):
        for name, obj in config.get(group, {}).items():
            items = tuple(
                (k, convert(v) if not isinstance(v, dict) else repr(v)) for k, v in obj.items() if k not in _POSE_KEYS
            )
            parts.append((group, name, items, tuple(k for k in obj if k in _POSE_KEYS)))
    return tuple(parts)


# Model arrays above this size are assets (skybox and mesh data) that no task writes to; they
# are left in place instead of being restored on every reset.
_RESTORE_MAX_BYTES = 1 << 20


class FastRebuild:
    """Stands in for ``World.rebuild`` on one world instance (see the module docstring)."""

    def __init__(self, world) -> None:
        self.world = world
        self.stock_rebuild = world.rebuild  # the bound method of the stock class
        self.template: dict[str, np.ndarray] | None = None
        self.signature: tuple | None = None
        self.fast_resets = 0
        self.stock_resets = 0
        self._quat_cache: dict[str, np.ndarray] = {}
        self._capture()

    # ---------------------------------------------------------------- template
    def _capture(self) -> None:
        """Keep the arrays of the model the stock code just compiled, keyed by its structure.

        Every later fast reset restores them first, so anything a task wrote into the model
        during an episode (the goal's position, for one) is undone as a recompile would.
        """
        world = self.world
        if world.model is None or not hasattr(world, "config"):
            self.template, self.signature = None, None
            return
        model = world.model
        self.template = {}
        for name in dir(model):
            value = getattr(model, name, None) if not name.startswith("_") else None
            if isinstance(value, np.ndarray) and value.nbytes <= _RESTORE_MAX_BYTES:
                self.template[name] = value.copy()
        # massless bodies (the goal): the compiler puts their inertial frame on the body frame;
        # compared with the config's pose because the task may have moved the goal since
        placed = {**world.geoms, **world.free_geoms}
        self._massless = [
            model.body(n).id
            for n, obj in placed.items()
            if model.body(n).mass[0] == 0.0 and np.array_equal(model.body(n).ipos, _xml_float(obj["pos"]))
        ]
        self.signature = _structure(world.config)

    def __call__(self, config: dict | None = None, state: bool = True) -> None:
        if state or not config or self.template is None or _structure(config) != self.signature:
            self.stock_rebuild(config, state)
            self.stock_resets += 1
            self._capture()
            return
        world = self.world
        world.parse(config)
        model, data = world.model, world.data
        for name, value in self.template.items():
            np.copyto(getattr(model, name), value)
        self._write_poses(model)
        mujoco.mj_resetData(model, data)  # what MjData(model) does: qpos0, mocap poses, zeros
        mujoco.mj_setConst(model, data)  # pose-dependent constants, as the compiler computes them
        mujoco.mj_resetData(model, data)
        mujoco.mj_forward(model, data)  # World.build
        mujoco.mj_forward(model, data)  # World.rebuild
        self.fast_resets += 1

    # ---------------------------------------------------------------- poses
    def _write_poses(self, model: mujoco.MjModel) -> None:
        world = self.world
        agent = model.body("agent")
        agent.pos[:] = _xml_float(np.r_[world.agent_xy, world._agent.z_height])
        agent.quat[:] = _rot_quat(world.agent_rot)
        self._free_joint_at_body(model, agent.id)  # the car's free joint starts at its body pose
        self._write_track_camera(model, float(world.agent_rot))
        for name, obj in world.free_geoms.items():
            self._place_body(model, name, obj)
        for name, obj in world.geoms.items():
            self._place_body(model, name, obj)
        for name, obj in world.mocaps.items():
            geom = model.geom(name)
            geom.pos[:] = _xml_float(obj["pos"])
            geom.quat[:] = _rot_quat(obj["rot"])
            body = model.body(name)  # a mocap body's inertial frame is its one geom's frame
            body.ipos[:] = geom.pos
            body.iquat[:] = geom.quat
        for i in self._massless:  # the compiler puts a massless body's inertial frame on its frame
            model.body_ipos[i] = model.body_pos[i]
            model.body_iquat[i] = model.body_quat[i]
        self._weld_relposes(model)

    @staticmethod
    def _weld_relposes(model: mujoco.MjModel) -> None:
        """A weld without ``relpose`` (the gremlins' mocap-object welds) holds the two bodies'
        relative pose at ``qpos0``, which the compiler computes; both bodies hang from the world
        here, so their ``qpos0`` poses are their body poses."""
        for i in range(model.neq):
            if model.eq_type[i] != mujoco.mjtEq.mjEQ_WELD or model.eq_obj2id[i] < 0:
                continue
            b1, b2 = int(model.eq_obj1id[i]), int(model.eq_obj2id[i])
            if model.body_parentid[b1] != 0 or model.body_parentid[b2] != 0:
                continue
            neg_pos, neg_quat = np.zeros(3), np.zeros(4)
            mujoco.mju_negPose(neg_pos, neg_quat, model.body_pos[b1], model.body_quat[b1])
            rel_pos, rel_quat = np.zeros(3), np.zeros(4)
            mujoco.mju_mulPose(rel_pos, rel_quat, neg_pos, neg_quat, model.body_pos[b2], model.body_quat[b2])
            model.eq_data[i, 3:6] = rel_pos
            model.eq_data[i, 6:10] = rel_quat

    def _orientation(self, obj: dict) -> np.ndarray:
        if "euler" in obj:  # meshed objects: a fixed euler triple, converted once by MuJoCo itself
            key = " ".join(str(v) for v in np.asarray(obj["euler"], dtype=np.float64))
            if key not in self._quat_cache:
                m = mujoco.MjModel.from_xml_string(
                    f'<mujoco><compiler angle="radian"/><worldbody><body euler="{key}">'
                    f'<geom size="1"/></body></worldbody></mujoco>'
                )
                self._quat_cache[key] = m.body_quat[1].copy()
            return self._quat_cache[key]
        return _rot_quat(obj["rot"])

    def _place_body(self, model: mujoco.MjModel, name: str, obj: dict) -> None:
        body = model.body(name)
        body.pos[:] = _xml_float(obj["pos"])
        body.quat[:] = self._orientation(obj)
        self._free_joint_at_body(model, body.id)

    @staticmethod
    def _free_joint_at_body(model: mujoco.MjModel, body_id: int) -> None:
        """A free joint's reference pose (``qpos0``, ``qpos_spring``) is its body's pose."""
        if model.body_jntnum[body_id] < 1:
            return
        joint = int(model.body_jntadr[body_id])
        if model.jnt_type[joint] != mujoco.mjtJoint.mjJNT_FREE:
            return
        adr = int(model.jnt_qposadr[joint])
        model.qpos0[adr : adr + 3] = model.body_pos[body_id]
        model.qpos0[adr + 3 : adr + 7] = model.body_quat[body_id]
        model.qpos_spring[adr : adr + 7] = model.qpos0[adr : adr + 7]

    def _write_track_camera(self, model: mujoco.MjModel, theta: float) -> None:
        """The ``track`` camera safety-gymnasium adds to the agent, facing along its start yaw."""
        try:
            cam = model.camera("track")
        except KeyError:
            return
        x1, x2, y1, y2 = np.cos(theta), -np.sin(theta), np.sin(theta), np.cos(theta)
        pos = (0 * np.cos(theta) + (-2) * np.sin(theta), 0 * (-np.sin(theta)) + (-2) * np.cos(theta), 2)
        xyaxes = f"{x1} {x2} 0 {y1} {y2} 1"
        m = mujoco.MjModel.from_xml_string(
            f'<mujoco><worldbody><camera pos="{pos[0]} {pos[1]} {pos[2]}" xyaxes="{xyaxes}"/></worldbody></mujoco>'
        )
        cam.pos[:] = m.cam_pos[0]
        cam.quat[:] = m.cam_quat[0]


def safety_gymnasium_builder(env: gym.Env):
    """The safety-gymnasium ``Builder`` under ``env``'s wrappers, or None for other families."""
    inner = env
    for _ in range(64):
        if type(inner).__module__.startswith("safety_gymnasium") and hasattr(inner, "task"):
            return inner
        nxt = getattr(inner, "env", None)
        if nxt is None:
            return None
        inner = nxt
    return None


class FastResetSafetyGym(gym.Wrapper):
    """Install :class:`FastRebuild` on the wrapped safety-gymnasium world once it exists.

    The world is created by the env's first reset (stock build); from the next reset on, the
    world rebuilds through :class:`FastRebuild`. Tasks without a placed world (velocity tasks)
    pass through unchanged.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.fast: FastRebuild | None = None

    def reset(self, *, seed: int | None = None, options=None):
        out = self.env.reset(seed=seed, options=options)
        if self.fast is None:
            self._install()
        return out

    def _install(self) -> None:
        builder = safety_gymnasium_builder(self.env)
        world = getattr(getattr(builder, "task", None), "world", None)
        if world is None or not hasattr(world, "free_geoms"):
            return
        self.fast = FastRebuild(world)
        world.rebuild = self.fast


def install_fast_reset(env: gym.Env) -> gym.Env:
    """Wrap ``env`` with :class:`FastResetSafetyGym` if it is a safety-gymnasium world task."""
    if safety_gymnasium_builder(env) is None:
        return env
    return FastResetSafetyGym(env)
