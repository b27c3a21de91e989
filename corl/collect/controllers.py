"""Scripted behaviour policies for collecting datasets before any learner exists.

DSRL collects with RL agents trained under a range of cost limits, so its data spans safe and
unsafe behaviour and a range of rewards. corl's scripted controllers imitate that spread with
one knob per episode, *aggressiveness* in [0, 1]:

* ``planar-pursuit`` (Bullet-Safety-Gym Car and Ball agents, Circle and Run tasks): steer along
  the direction the task rewards (the clockwise tangent of the circle; +x for Run) while a
  proportional term holds a target radius / lane. Aggressiveness widens the circle past the
  safety boundary (Circle) or raises the speed past the velocity limit and loosens the lane
  (Run), trading cost for reward. They read the agent's position and velocity from the
  simulator (privileged state), as scripted experts do.
* ``smoothed-noise`` (every other agent and family): Ornstein-Uhlenbeck-correlated random
  actions whose scale grows with aggressiveness. Labelled as such in the dataset metadata.

``random`` draws uniform actions from the action space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np

from corl.tasks import TaskSpec


class Controller(Protocol):
    name: str

    def reset(self, env: gym.Env, aggressiveness: float) -> None: ...

    def __call__(self, env: gym.Env, obs: np.ndarray) -> np.ndarray: ...


def _wrap_angle(angle: float) -> float:
    return (angle + np.pi) % (2 * np.pi) - np.pi


@dataclass
class RandomController:
    rng: np.random.Generator
    name: str = "random"

    def reset(self, env: gym.Env, aggressiveness: float) -> None:
        pass

    def __call__(self, env: gym.Env, obs: np.ndarray) -> np.ndarray:
        space = env.action_space
        return self.rng.uniform(space.low, space.high).astype(space.dtype)


@dataclass
class SmoothedNoiseController:
    """Ornstein-Uhlenbeck actions: temporally correlated, so the agent actually moves."""

    rng: np.random.Generator
    theta: float = 0.15
    name: str = "smoothed-noise"

    def reset(self, env: gym.Env, aggressiveness: float) -> None:
        self.scale = 0.2 + 0.8 * aggressiveness
        self.state = np.zeros(env.action_space.shape, dtype=np.float64)

    def __call__(self, env: gym.Env, obs: np.ndarray) -> np.ndarray:
        self.state += -self.theta * self.state + self.scale * 0.5 * self.rng.normal(size=self.state.shape)
        space = env.action_space
        return np.clip(self.state, space.low, space.high).astype(space.dtype)


@dataclass
class PlanarPursuitController:
    """Car/Ball agents on Bullet-Safety-Gym Circle and Run tasks (see module docstring)."""

    rng: np.random.Generator
    agent: str  # "Car" or "Ball"
    task: str  # "Circle" or "Run"
    name: str = "planar-pursuit"

    def reset(self, env: gym.Env, aggressiveness: float) -> None:
        base = env.unwrapped
        self.aggr = float(aggressiveness)
        self.noise = 0.05 + 0.25 * self.rng.random()
        if self.task == "Circle":
            # boundary at |x| = x_lim; a circle of radius > x_lim crosses it twice a lap
            x_lim = float(getattr(base.task, "x_lim", 6.0))
            self.radius = x_lim * (0.4 + 0.9 * self.aggr)
        else:
            y_lim = float(getattr(base.task, "y_lim", 2.0))
            self.lane = y_lim * (0.3 + 1.2 * self.aggr) * self.rng.choice([-1.0, 1.0]) * self.rng.random()
        # Run tasks charge cost above a velocity limit: low aggressiveness stays under it
        self.speed = 0.35 + 0.65 * self.aggr if self.task == "Circle" else 0.05 + 0.45 * self.aggr

    def _desired_direction(self, pos: np.ndarray) -> np.ndarray:
        if self.task == "Circle":
            dist = float(np.linalg.norm(pos)) + 1e-6
            tangent = np.array([pos[1], -pos[0]]) / dist  # clockwise: the rewarded direction
            radial = pos / dist
            return tangent + 1.5 * np.clip((self.radius - dist) / self.radius, -1.0, 1.0) * radial
        return np.array([1.0, 0.8 * np.clip(self.lane - pos[1], -1.0, 1.0)])

    def __call__(self, env: gym.Env, obs: np.ndarray) -> np.ndarray:
        agent = env.unwrapped.agent
        pos = np.asarray(agent.get_position()[:2], dtype=np.float64)
        vel = np.asarray(agent.get_linear_velocity()[:2], dtype=np.float64)
        desired = self._desired_direction(pos)
        if self.agent == "Car":
            if np.linalg.norm(vel) < 0.3:
                steer = 0.0
            else:
                err = _wrap_angle(np.arctan2(desired[1], desired[0]) - np.arctan2(vel[1], vel[0]))
                steer = float(np.clip(-2.0 * err, -1.0, 1.0))
            action = np.array([-self.speed, steer])  # the racecar drives forward on negative throttle
        else:
            unit = desired / (np.linalg.norm(desired) + 1e-6)
            action = np.clip(2.0 * (self.speed * 2.0 * unit - vel), -1.0, 1.0) * 0.5 + 0.5 * unit * self.speed
        action = action + self.noise * self.rng.normal(size=2)
        space = env.action_space
        return np.clip(action, space.low, space.high).astype(space.dtype)


def scripted_controller_name(task: TaskSpec) -> str:
    """Which scripted controller ``--policy scripted`` uses for a task."""
    return "planar-pursuit" if _planar_kind(task) else "smoothed-noise"


def _planar_kind(task: TaskSpec) -> tuple[str, str] | None:
    if task.family != "bullet":
        return None
    short = task.name.removeprefix("Offline").removeprefix("Safety").split("-")[0]
    for agent in ("Car", "Ball"):
        for kind in ("Circle", "Run"):
            if short == agent + kind:
                return agent, kind
    return None


def make_controller(task: TaskSpec, policy: str, rng: np.random.Generator) -> Controller:
    """``policy`` is ``random`` or ``scripted`` (the best scripted controller for the task)."""
    if policy == "random":
        return RandomController(rng)
    planar = _planar_kind(task)
    if planar is not None:
        return PlanarPursuitController(rng, agent=planar[0], task=planar[1])
    return SmoothedNoiseController(rng)
