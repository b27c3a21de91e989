"""The task registry: one name resolves to everything a stage needs.

Three kinds of names:

* DSRL offline tasks (``OfflineCarCircle-v0``, ``OfflinePointGoal1Gymnasium-v0``,
  ``OfflineAntVelocityGymnasium-v1``, ...): env, episode length, dataset file name and the
  full-precision reference returns come from the real ``dsrl`` package (``dsrl.infos``).
* Online tasks (``SafetyCarCircle-v0`` from bullet-safety-gym, ``SafetyPointGoal1-v0`` from
  safety-gymnasium, made through its gymnasium conversion so every env has one 5-tuple API
  with ``info["cost"]``). Their dims are data (``catalog/online_tasks.json``, probed from
  the installed simulators; a test re-checks a sample).
* D4RL names (``walker2d-medium-expert-v2``, ``hopper-medium-v2``, ...) mapped to gymnasium
  MuJoCo ``-v4`` envs, with D4RL's random/expert reference returns kept as data (d4rl itself
  cannot be installed; see README).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

from corl.errors import TaskError, closest

Family = Literal["bullet", "safety-gymnasium", "mujoco"]
Kind = Literal["dsrl", "online", "d4rl"]

#: DSRL's cost thresholds used for evaluation (the first is the default cost limit).
#: Bullet-Safety-Gym: {10, 20, 40}; Safety-Gymnasium: {20, 40, 80} (see README).
BULLET_COST_LIMITS = (10.0, 20.0, 40.0)
GYMNASIUM_COST_LIMITS = (20.0, 40.0, 80.0)

#: D4RL reference returns (random, expert) for normalized scores, from D4RL's infos.
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "walker2d": (1.629008, 4592.3),
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
}
D4RL_ENVS = {"walker2d": "Walker2d-v4", "hopper": "Hopper-v4", "halfcheetah": "HalfCheetah-v4"}
D4RL_DIMS = {"walker2d": (17, 6), "hopper": (11, 3), "halfcheetah": (17, 6)}
D4RL_DATASETS = ("random", "medium", "medium-replay", "medium-expert", "expert")

#: DSRL datasheet dims (observation, action) for the offline tasks corl supports.
DSRL_DIMS: dict[str, tuple[int, int]] = {
    "BallRun": (7, 2),
    "CarRun": (7, 2),
    "DroneRun": (17, 4),
    "AntRun": (33, 8),
    "BallCircle": (8, 2),
    "CarCircle": (8, 2),
    "DroneCircle": (18, 4),
    "AntCircle": (34, 8),
    "PointGoal1": (60, 2),
    "PointGoal2": (60, 2),
    "PointButton1": (76, 2),
    "PointButton2": (76, 2),
    "PointPush1": (76, 2),
    "PointPush2": (76, 2),
    "PointCircle1": (28, 2),
    "PointCircle2": (28, 2),
    "CarGoal1": (72, 2),
    "CarGoal2": (72, 2),
    "CarButton1": (88, 2),
    "CarButton2": (88, 2),
    "CarPush1": (88, 2),
    "CarPush2": (88, 2),
    "CarCircle1": (40, 2),
    "CarCircle2": (40, 2),
    "SwimmerVelocity": (8, 2),
    "HopperVelocity": (11, 3),
    "HalfCheetahVelocity": (17, 6),
    "Walker2dVelocity": (17, 6),
    "AntVelocity": (27, 8),
}
BULLET_AGENTS = ("Ball", "Car", "Drone", "Ant")


@dataclass(frozen=True)
class TaskSpec:
    """Everything corl knows about a task name."""

    name: str
    kind: Kind
    family: Family
    env_id: str  # gymnasium id with the 5-tuple API and info["cost"]
    obs_dim: int
    act_dim: int
    max_episode_steps: int
    cost_limits: tuple[float, ...] = ()
    reward_min: float | None = None  # DSRL / D4RL reference returns for normalization
    reward_max: float | None = None
    max_episode_cost: float | None = None  # DSRL: largest episode cost in its dataset
    dataset_file: str | None = None  # DSRL's file name on its host
    online_task: str | None = None  # the Safety* task the offline data was collected on
    aliases: tuple[str, ...] = field(default=())

    @property
    def cost_limit(self) -> float | None:
        """The default cost limit (DSRL's first threshold), None for unconstrained tasks."""
        return self.cost_limits[0] if self.cost_limits else None

    @property
    def is_constrained(self) -> bool:
        return bool(self.cost_limits)

    @property
    def normalization(self) -> str:
        return {"dsrl": "DSRL", "d4rl": "D4RL", "online": "none"}[self.kind]


def _dsrl_infos():
    from corl.compat import import_dsrl

    import_dsrl()
    import dsrl.infos as infos

    return infos


def _dsrl_tasks() -> list[TaskSpec]:
    infos = _dsrl_infos()
    specs = []
    for short, (obs, act) in DSRL_DIMS.items():
        bullet = any(short == a + t for a in BULLET_AGENTS for t in ("Run", "Circle"))
        velocity = short.endswith("Velocity")
        if bullet:
            name, family, limits = f"Offline{short}-v0", "bullet", BULLET_COST_LIMITS
        else:
            suffix = "v1" if velocity else "v0"
            name, family, limits = f"Offline{short}Gymnasium-{suffix}", "safety-gymnasium", GYMNASIUM_COST_LIMITS
        url = infos.DATASET_URLS[short]
        file_name = url.rsplit("/", 1)[-1]
        online = file_name.split("-")[0] + "-" + file_name.split("-")[1]
        online = online.replace("Gymnasium", "")
        aliases = (f"Offline{short}-{'v1' if velocity else 'v0'}",) if not bullet else ()
        specs.append(
            TaskSpec(
                name=name,
                kind="dsrl",
                family=family,  # type: ignore[arg-type]
                env_id=name,
                obs_dim=obs,
                act_dim=act,
                max_episode_steps=int(infos.DEFAULT_MAX_EPISODE_STEPS[short]),
                cost_limits=limits,
                reward_min=float(infos.MIN_EPISODE_REWARD[short]),
                reward_max=float(infos.MAX_EPISODE_REWARD[short]),
                max_episode_cost=float(infos.MAX_EPISODE_COST[short]),
                dataset_file=file_name,
                online_task=online,
                aliases=aliases,
            )
        )
    return specs


def _online_tasks() -> list[TaskSpec]:
    text = resources.files("corl.catalog").joinpath("online_tasks.json").read_text()
    specs = []
    for name, (env_id, obs, act, steps) in json.loads(text).items():
        family = "safety-gymnasium" if "Gymnasium" in env_id else "bullet"
        limits = GYMNASIUM_COST_LIMITS if family == "safety-gymnasium" else BULLET_COST_LIMITS
        specs.append(
            TaskSpec(
                name=name,
                kind="online",
                family=family,
                env_id=env_id,  # type: ignore[arg-type]
                obs_dim=obs,
                act_dim=act,
                max_episode_steps=steps,
                cost_limits=limits,
            )
        )
    return specs


def _d4rl_tasks() -> list[TaskSpec]:
    specs = []
    for env, (random_ret, expert_ret) in D4RL_REF_SCORES.items():
        obs, act = D4RL_DIMS[env]
        for ds in D4RL_DATASETS:
            specs.append(
                TaskSpec(
                    name=f"{env}-{ds}-v2",
                    kind="d4rl",
                    family="mujoco",
                    env_id=D4RL_ENVS[env],
                    obs_dim=obs,
                    act_dim=act,
                    max_episode_steps=1000,
                    reward_min=random_ret,
                    reward_max=expert_ret,
                    dataset_file=f"{env}_{ds.replace('-', '_')}-v2.hdf5",
                )
            )
    return specs


@functools.lru_cache(maxsize=None)
def registry() -> dict[str, TaskSpec]:
    """Every known task by name (aliases included), built once."""
    table: dict[str, TaskSpec] = {}
    for spec in _dsrl_tasks() + _online_tasks() + _d4rl_tasks():
        table[spec.name] = spec
    for spec in list(table.values()):
        for alias in spec.aliases:
            table.setdefault(alias, spec)
    return table


def task_names(kind: Kind | None = None) -> list[str]:
    """Canonical names (no aliases), optionally of one kind."""
    return sorted({s.name for s in registry().values() if kind is None or s.kind == kind})


def get_task(name: str) -> TaskSpec:
    """Resolve a task name; an unknown one gets a one-line error with the closest names."""
    table = registry()
    if name in table:
        return table[name]
    hits = closest(name, task_names(), n=3)
    hint = f"; closest: {', '.join(hits)}" if hits else "; see `corl tasks`"
    raise TaskError(f"unknown task {name!r}{hint}")
