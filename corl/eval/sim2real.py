"""sim2real: scale a live simulator's physics parameters for an episode, then restore them.

Why the live simulator: MICRO's released evaluation rewrote the installed MuJoCo XML files
(and only numbers literally present in them, so gravity scaling was a no-op for hopper and
walker2d). corl never touches asset files: it multiplies the parameters of the model object
the env is simulating right now and writes the exact original values back afterwards, so the
same process can sweep a grid and then evaluate nominal physics again.

Parameters (``PARAM=SCALES`` on the command line, a ``{param: scale}`` mapping here):

=========  ======================================  =========================================
param      MuJoCo (gymnasium ``-v4``, safety-gym)  PyBullet (bullet-safety-gym)
=========  ======================================  =========================================
friction   ``geom_friction`` (all 3 columns)       lateral/rolling/spinning friction of every
                                                   link of every body, by ``sqrt(scale)``
gravity    ``opt.gravity``                         ``setGravity`` (read back from
                                                   ``getPhysicsEngineParameters``)
mass       ``body_mass``, ``body_inertia``,        mass and local inertia of every dynamic
           ``body_subtreemass``                    (mass > 0) link of every body
actuator   ``actuator_gear``                       the agent's ``max_force`` and its joints'
                                                   ``max_force`` (motor strength); RaceCar
                                                   also its ``speed_multiplier``
=========  ======================================  =========================================

Notes on semantics (documented deviations from MICRO's XML edit):

* friction: MuJoCo combines two geoms' friction with ``max``, so scaling every geom by ``s``
  scales every contact by ``s``. Bullet combines them by *product*, so every link is scaled
  by ``sqrt(s)`` and every contact ends up scaled by ``s`` (up to Bullet's clamp at 10).
  ``getDynamicsInfo`` therefore reads back ``sqrt(s)`` times the original.
* mass scales inertia with it (a density scale), so the bodies stay physically consistent.
* gravity is scaled for every MuJoCo task, hopper and walker2d included (MICRO's XML edit
  left those two at nominal gravity).
* actuator on bullet's RaceCar (Car tasks) also scales the wheel-speed gain: the car is
  velocity-controlled and its motor force cap never binds, so scaling only the force would
  be a no-op.
* actuator is not offered for bullet's Drone: its thrust is computed from rotor speed, not
  from a motor force, so scaling the force limit would be close to a silent no-op.

Resets: safety-gymnasium builds a brand-new ``MjModel`` on every ``reset`` (the layout is
re-sampled), which would silently drop a perturbation applied before it. While a
:func:`perturbation` is active it therefore wraps the env's ``reset``: it restores the
nominal values, runs the original reset (so layout sampling and the first observation are
computed under nominal physics, as in the unperturbed env), then snapshots the (possibly
new) model and applies the scales again. Bullet envs keep their bodies across resets
(``restoreState`` leaves dynamics untouched) and gymnasium MuJoCo envs keep their model; the
same wrapping is harmless there, so every family is handled the same way. This also covers
a vector env's automatic resets, which call the sub-env's ``reset`` from inside ``step``.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

import numpy as np

from corl.errors import CorlError, did_you_mean
from corl.eval.ranges import parse_values
from corl.tasks import TaskSpec, get_task

#: Every physics parameter corl knows how to scale, in display order.
PARAMETERS: tuple[str, ...] = ("friction", "gravity", "mass", "actuator")

SPEC_SYNTAX = "PARAM=LO:HI:N (N evenly spaced scales) or PARAM=A,B,C"

EnvHook = Callable[[Any], ContextManager[Any]]


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class SweepAxis:
    """One parsed ``PARAM=SCALES`` spec: a parameter and the scales to sweep it over."""

    param: str
    scales: tuple[float, ...]


def parse_scales(text: str, spec: str | None = None) -> tuple[float, ...]:
    """``"lo:hi:n"`` -> ``n`` evenly spaced scales (ends included); ``"a,b,c"`` -> those.

    Raises a one-line :class:`CorlError` naming the expected syntax on anything else, and on
    scales that are not finite or are negative (a negative mass or friction is not physics).
    ``spec`` is the whole ``PARAM=SCALES`` text, quoted in errors when given.
    """
    return parse_values(text, "sim2real scales", "scales", "0.5:1.5:10", "0.5,1,2", shown=spec)


def parse_spec(spec: str, task: TaskSpec | str | None = None) -> SweepAxis:
    """Parse ``PARAM=SCALES`` (see :data:`SPEC_SYNTAX`); the parameter is checked against
    ``task``'s supported ones when a task is given, else against :data:`PARAMETERS`."""
    if "=" not in spec:
        raise CorlError(f"bad sim2real spec {spec!r}: expected {SPEC_SYNTAX}, PARAM in {', '.join(PARAMETERS)}")
    name, _, scales_text = spec.partition("=")
    param = _check_param(name.strip().lower(), task)
    scales = parse_scales(scales_text, spec)
    if param == "mass" and min(scales) <= 0:
        raise CorlError(f"bad sim2real scales {spec!r}: mass scales must be > 0 (a massless body has no dynamics)")
    return SweepAxis(param, scales)


def parse_grid(
    specs: Sequence[str], task: TaskSpec | str | None = None
) -> tuple[list[SweepAxis], list[dict[str, float]]]:
    """Parse several specs into axes and the cartesian grid of ``{param: scale}`` cells.

    The cells run with the last axis fastest, so a 2-D grid reshapes to
    ``(len(axes[0].scales), len(axes[1].scales))`` in order.
    """
    axes = [parse_spec(s, task) for s in specs]
    seen: set[str] = set()
    for axis in axes:
        if axis.param in seen:
            raise CorlError(f"sim2real parameter {axis.param!r} given twice; give each parameter once")
        seen.add(axis.param)
    cells = [dict(zip((a.param for a in axes), combo)) for combo in itertools.product(*(a.scales for a in axes))]
    return axes, cells


def supported_parameters(task: TaskSpec | str) -> list[str]:
    """The physics parameters sim2real can scale for ``task`` (see the module table)."""
    spec = get_task(task) if isinstance(task, str) else task
    if spec.family == "bullet" and "Drone" in spec.name + spec.env_id:
        return ["friction", "gravity", "mass"]
    return list(PARAMETERS)


def _check_param(param: str, task: TaskSpec | str | None, supported: Sequence[str] | None = None) -> str:
    if supported is None:
        supported = supported_parameters(task) if task is not None else PARAMETERS
    if param not in supported:
        where = f" for {task if isinstance(task, str) else task.name}" if task is not None else ""
        raise CorlError(
            f"unsupported sim2real parameter {param!r}{where}{did_you_mean(param, supported)}; "
            f"supported: {', '.join(supported)}"
        )
    return param


def _validate_scales(scales: Mapping[str, float], supported: Sequence[str], what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in scales.items():
        param = name.strip().lower()
        if param not in supported:
            raise CorlError(
                f"unsupported sim2real parameter {name!r} for {what}{did_you_mean(param, supported)}; "
                f"supported: {', '.join(supported)}"
            )
        value = float(value)
        if not math.isfinite(value) or value < 0 or (param == "mass" and value == 0):
            raise CorlError(f"bad sim2real scale {param}={value}: scales must be finite and >= 0 (mass > 0)")
        out[param] = value
    return out


# --------------------------------------------------------------------------- backends


class _Backend(abc.ABC):
    """Reads, scales and restores one simulator's parameters. A snapshot is opaque state
    holding the exact original values of the object it was taken from."""

    supported: tuple[str, ...] = ()

    @abc.abstractmethod
    def snapshot(self, params: Sequence[str]) -> Any: ...

    @abc.abstractmethod
    def apply(self, snap: Any, scales: Mapping[str, float]) -> None: ...

    @abc.abstractmethod
    def restore(self, snap: Any) -> None: ...


def _mj_fields(param: str) -> list[Callable[[Any], np.ndarray]]:
    """Accessors returning live (writable) views of the MjModel arrays behind a parameter."""
    return {
        "friction": [lambda m: m.geom_friction],
        "gravity": [lambda m: m.opt.gravity],
        # Density scale: inertia and the compile-time subtree masses move with the masses.
        "mass": [lambda m: m.body_mass, lambda m: m.body_inertia, lambda m: m.body_subtreemass],
        "actuator": [lambda m: m.actuator_gear],
    }[param]


class _MujocoBackend(_Backend):
    """MuJoCo: the model is re-fetched on every snapshot because safety-gymnasium swaps it."""

    def __init__(self, get_model: Callable[[], Any]) -> None:
        self.get_model = get_model
        model = get_model()
        self.supported = tuple(p for p in PARAMETERS if p != "actuator" or model.nu > 0)

    def snapshot(self, params: Sequence[str]) -> tuple[Any, dict[str, list[np.ndarray]]]:
        model = self.get_model()
        return model, {p: [f(model).copy() for f in _mj_fields(p)] for p in params}

    def apply(self, snap: tuple[Any, dict[str, list[np.ndarray]]], scales: Mapping[str, float]) -> None:
        model, saved = snap
        for param, scale in scales.items():
            for field, original in zip(_mj_fields(param), saved[param]):
                field(model)[...] = original * scale

    def restore(self, snap: tuple[Any, dict[str, list[np.ndarray]]]) -> None:
        model, saved = snap
        for param, originals in saved.items():
            for field, original in zip(_mj_fields(param), originals):
                field(model)[...] = original


@dataclass
class _BulletSnapshot:
    gravity: tuple[float, float, float] | None
    links: list[tuple[int, int, tuple]]  # (body, link, getDynamicsInfo tuple)
    actuators: list[tuple[Any, str, float]]  # (object, attribute, original value)
    params: tuple[str, ...]


class _BulletBackend(_Backend):
    """PyBullet through the env's own client (``env.unwrapped.bc``) and agent object."""

    def __init__(self, env: Any) -> None:
        self.env = env
        drone = type(env.agent).__name__ == "Drone"
        has_force = hasattr(env.agent, "max_force")
        self.supported = tuple(p for p in PARAMETERS if p != "actuator" or (has_force and not drone))

    def _links(self) -> Iterator[tuple[int, int]]:
        bc = self.env.bc
        for i in range(bc.getNumBodies()):
            body = bc.getBodyUniqueId(i)
            for link in range(-1, bc.getNumJoints(body)):
                yield body, link

    def snapshot(self, params: Sequence[str]) -> _BulletSnapshot:
        bc, agent = self.env.bc, self.env.agent
        gravity = None
        if "gravity" in params:
            p = bc.getPhysicsEngineParameters()
            gravity = (p["gravityAccelerationX"], p["gravityAccelerationY"], p["gravityAccelerationZ"])
        links = []
        if "friction" in params or "mass" in params:
            links = [(b, l, tuple(bc.getDynamicsInfo(b, l))) for b, l in self._links()]
        actuators: list[tuple[Any, str, float]] = []
        if "actuator" in params:
            # Force/torque-controlled agents (Ball, Ant) read agent.max_force; joint motors keep
            # their own copy. RaceCar is velocity-controlled and its force cap never binds
            # (measured: speed unchanged from 0.02x to 3x), so its wheel-speed gain is the
            # effective actuator strength and is scaled too.
            actuators.append((agent, "max_force", agent.max_force))
            if hasattr(agent, "speed_multiplier"):
                actuators.append((agent, "speed_multiplier", agent.speed_multiplier))
            actuators += [
                (j, "max_force", j.max_force) for j in getattr(agent, "joint_list", []) if hasattr(j, "max_force")
            ]
        return _BulletSnapshot(gravity, links, actuators, tuple(params))

    def apply(self, snap: _BulletSnapshot, scales: Mapping[str, float]) -> None:
        bc = self.env.bc
        if "gravity" in scales and snap.gravity is not None:
            bc.setGravity(*(g * scales["gravity"] for g in snap.gravity))
        if "friction" in scales:
            root = math.sqrt(scales["friction"])  # Bullet multiplies the two sides' friction
            for body, link, info in snap.links:
                bc.changeDynamics(
                    body,
                    link,
                    lateralFriction=info[1] * root,
                    rollingFriction=info[6] * root,
                    spinningFriction=info[7] * root,
                )
        if "mass" in scales:
            s = scales["mass"]
            for body, link, info in snap.links:
                if info[0] > 0:  # mass 0 means static in Bullet: scaling it would make it move
                    bc.changeDynamics(body, link, mass=info[0] * s, localInertiaDiagonal=[v * s for v in info[2]])
        if "actuator" in scales:
            for obj, attr, value in snap.actuators:
                setattr(obj, attr, value * scales["actuator"])

    def restore(self, snap: _BulletSnapshot) -> None:
        bc = self.env.bc
        if snap.gravity is not None:
            bc.setGravity(*snap.gravity)
        if "friction" in snap.params:
            for body, link, info in snap.links:
                bc.changeDynamics(
                    body, link, lateralFriction=info[1], rollingFriction=info[6], spinningFriction=info[7]
                )
        if "mass" in snap.params:
            for body, link, info in snap.links:
                if info[0] > 0:
                    bc.changeDynamics(body, link, mass=info[0], localInertiaDiagonal=list(info[2]))
        for obj, attr, value in snap.actuators:
            setattr(obj, attr, value)


def _backend_for(env: Any) -> _Backend:
    base = env.unwrapped
    if hasattr(base, "bc") and hasattr(base, "agent"):
        return _BulletBackend(base)
    try:
        import mujoco
    except ImportError:  # pragma: no cover - mujoco is a core dependency
        mujoco = None
    if mujoco is not None:
        if isinstance(getattr(base, "model", None), mujoco.MjModel):
            return _MujocoBackend(lambda: base.model)
        task = getattr(base, "task", None)
        if isinstance(getattr(task, "model", None), mujoco.MjModel):
            # safety-gymnasium: Builder.task.model -> world.engine.model, replaced on reset.
            return _MujocoBackend(lambda: base.task.model)
    raise CorlError(
        f"sim2real needs a MuJoCo or PyBullet env; {type(base).__name__} exposes neither a MuJoCo "
        "model nor a bullet client"
    )


def env_supported_parameters(env: Any) -> list[str]:
    """The parameters :func:`perturbation` can scale on this concrete env."""
    return list(_backend_for(env).supported)


# --------------------------------------------------------------------------- public hook


@contextlib.contextmanager
def perturbation(env: Any, scales: Mapping[str, float]) -> Iterator[dict[str, float]]:
    """Scale ``env``'s live physics by ``scales`` (e.g. ``{"friction": 0.5}``) inside the block.

    Every value is restored exactly (from a snapshot, not by dividing) when the block exits,
    also on an exception. Resets inside the block keep the perturbation (see the module
    docstring). Contexts nest: scales of nested blocks multiply. Yields the validated scales.
    """
    backend = _backend_for(env)
    clean = _validate_scales(scales, backend.supported, type(env.unwrapped).__name__)
    if not clean:
        yield clean
        return
    base = env.unwrapped
    params = tuple(clean)
    state = {"snap": backend.snapshot(params)}
    backend.apply(state["snap"], clean)

    own = vars(base).get("reset", None)  # an outer perturbation's wrapper, if any
    original_reset = base.reset

    def reset(*args: Any, **kwargs: Any) -> Any:
        backend.restore(state["snap"])
        out = original_reset(*args, **kwargs)
        state["snap"] = backend.snapshot(params)  # the model may be a new object now
        backend.apply(state["snap"], clean)
        return out

    base.reset = reset
    try:
        yield clean
    finally:
        backend.restore(state["snap"])
        if own is not None:
            base.reset = own
        else:
            del base.reset


def perturbation_hook(scales: Mapping[str, float]) -> EnvHook:
    """An ``env_hook`` for :func:`corl.eval.rollout.rollout`: applies ``scales`` to each env."""
    frozen = dict(scales)

    def hook(env: Any) -> ContextManager[dict[str, float]]:
        return perturbation(env, frozen)

    return hook


def cell_label(cell: Mapping[str, float]) -> str:
    """A stable short label for a grid cell, e.g. ``friction=0.5,gravity=1.25``."""
    return ",".join(f"{k}={v:.4g}" for k, v in cell.items())


__all__ = [
    "PARAMETERS",
    "SPEC_SYNTAX",
    "SweepAxis",
    "parse_scales",
    "parse_spec",
    "parse_grid",
    "supported_parameters",
    "env_supported_parameters",
    "perturbation",
    "perturbation_hook",
    "cell_label",
]
