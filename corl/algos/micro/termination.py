"""Termination functions for model rollouts (algorithms.md §2.3), on torch tensors.

A termination function maps ``(obs, act, next_obs)`` of shape ``(B, ·)`` to a bool ``(B,)``:
True where the predicted next state ends the episode. They mirror MOBILE/MICRO's hand-written
rules (which follow the simulators' "healthy" checks on the observation):

* hopper: alive iff ``s'`` finite, ``|s'[1:]| < 100``, height ``s'[0] > 0.7``, ``|angle s'[1]| < 0.2``.
  The released code tests ``np.abs(s'[1:] < 100)`` (abs of a boolean): the bound is one-sided
  and large negative states never terminate. ``two_sided_bound=False`` reproduces that.
* walker2d: alive iff ``-100 < s' < 100``, ``0.8 < height < 2.0``, ``-1 < angle < 1``.
* halfcheetah: terminal only if some ``|s'| ≥ 100``.
* DSRL / bullet / safety-gymnasium tasks: never terminate (their episodes end by time-out).

Unknown tasks raise :class:`~corl.errors.TaskError` (the released code returns ``np.zeros``).
"""

from __future__ import annotations

from typing import Callable

import torch

from corl.errors import TaskError

TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

LOCOMOTION = ("hopper", "walker2d", "halfcheetah")


def hopper_termination(
    obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor, two_sided_bound: bool = True
) -> torch.Tensor:
    height, angle = next_obs[:, 0], next_obs[:, 1]
    rest = next_obs[:, 1:]
    bounded = (rest.abs() < 100) if two_sided_bound else (rest < 100)
    alive = torch.isfinite(next_obs).all(-1) & bounded.all(-1) & (height > 0.7) & (angle.abs() < 0.2)
    return ~alive


def walker2d_termination(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    height, angle = next_obs[:, 0], next_obs[:, 1]
    alive = (
        ((next_obs > -100) & (next_obs < 100)).all(-1)
        & (height > 0.8)
        & (height < 2.0)
        & (angle > -1.0)
        & (angle < 1.0)
    )
    return ~alive


def halfcheetah_termination(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    alive = ((next_obs > -100) & (next_obs < 100)).all(-1)
    return ~alive


def never_terminate(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(next_obs.shape[0], dtype=torch.bool, device=next_obs.device)


def task_family(task: str) -> str:
    """``hopper`` / ``walker2d`` / ``halfcheetah`` for D4RL names, ``never`` for safety tasks."""
    name = task.lower()
    if name in LOCOMOTION:
        return name
    from corl.tasks import get_task  # raises TaskError (with close matches) for unknown names

    spec = get_task(task)
    if spec.kind == "d4rl":
        family = spec.name.split("-")[0]
        if family in LOCOMOTION:
            return family
        raise TaskError(f"no MICRO termination function for D4RL task {task!r}")
    return "never"  # DSRL and online safety tasks end by time-out only


def termination_fn(task: str, two_sided_bound: bool = True) -> TerminationFn:
    """The termination function for ``task`` (a task name or a bare family name)."""
    family = task_family(task)
    if family == "hopper":
        return lambda o, a, n: hopper_termination(o, a, n, two_sided_bound=two_sided_bound)
    return {"walker2d": walker2d_termination, "halfcheetah": halfcheetah_termination, "never": never_terminate}[family]
