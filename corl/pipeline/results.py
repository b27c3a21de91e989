"""What a run is asked and what it answers: the engine's value types.

Their own module (not the runner's) so that the callbacks, loggers and the CLI can name them
without importing the runner, and the runner imports nothing that imports it back.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corl.errors import CorlError
from corl.store.artifacts import Artifact


class RunInterrupted(CorlError):
    """Ctrl-C: the running stage saved a checkpoint; the message has the resume command."""

    exit_code = 130


@dataclass
class RunRequest:
    """Everything ``corl run`` was asked (the CLI builds one; tests can too)."""

    pipeline: str
    task: str
    preset: str | None = None
    seed: int = 0
    overrides: list[str] = field(default_factory=list)
    device: str = "auto"
    dataset: str | None = None
    offline: bool | None = None
    checkpoints: str | None = None
    wait: bool = True
    lock_timeout: float | None = None
    checkpoint_every_steps: int | None = None
    checkpoint_every_seconds: float | None = None
    log_every: int | None = None

    def command(self) -> str:
        """The ``corl run`` command line that repeats (and so resumes) this run."""
        parts = ["corl", "run", self.pipeline, "--task", self.task]
        if self.preset:
            parts += ["--preset", self.preset]
        parts += ["--seed", str(self.seed)]
        for item in self.overrides:
            parts += ["--set", item]
        if self.device != "auto":
            parts += ["--device", self.device]
        if self.dataset:
            parts += ["--dataset", self.dataset]
        if self.offline:
            parts.append("--offline")
        if self.checkpoints:
            parts += ["--checkpoints", self.checkpoints]
        return shlex.join(parts)


@dataclass
class PlannedStage:
    name: str
    kind: str
    key: str
    dir: Path
    status: str  # cached | run | resume | corrupt | pending (key known only after an upstream run is built)
    config: dict[str, Any]
    inputs: dict[str, str]  # role -> stage name
    fingerprint: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    artifact: Artifact | None = None


@dataclass
class StageOutcome:
    name: str
    kind: str
    key: str
    dir: Path
    status: str  # cached | ran | interrupted | failed
    wall_time: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int = 0
    step: int | None = None  # the step a checkpoint was saved at, for an interrupted stage

    @property
    def key_metrics(self) -> dict[str, float]:
        scored = {k: v for k, v in self.metrics.items() if k.startswith(("final/", "best/", "best_offline/"))}
        if scored:
            keep = ("normalized_reward", "normalized_score", "normalized_cost", "reward", "cost")
            picked = {
                f"{label}/{name}": scored[f"{label}/{name}"]
                for label in ("final", "best", "best_offline")
                for name in keep
                if f"{label}/{name}" in scored
            }
            return picked or scored
        return self.metrics


@dataclass
class RunResult:
    pipeline: str
    task: str
    seed: int
    preset: str | None
    stages: list[StageOutcome]
    status: str
    wall_time: float
    record_path: Path | None
    dataset: dict[str, Any] = field(default_factory=dict)

    @property
    def scores(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {"final": {}, "best": {}, "best_offline": {}}
        for o in self.stages:
            if ":" in o.name:  # an upstream run's stage (e.g. cvpo:train): not this run's score
                continue
            for k, v in o.metrics.items():
                label, _, name = k.partition("/")
                if label in out:
                    out[label][f"{o.name}/{name}"] = v
        return out

    @property
    def ran(self) -> list[str]:
        return [o.name for o in self.stages if o.status == "ran"]
