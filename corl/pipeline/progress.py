"""Progress reporting through callbacks: the engine never prints.

The engine calls a :class:`RunCallbacks`. Tests pass the no-op base (or a recorder), the
CLI passes its rich implementation (:class:`corl.cli.progress.RichCallbacks`), loggers
(:mod:`corl.pipeline.loggers`) stream the same calls to tensorboard or W&B. Nothing here
depends on a terminal library, so the engine runs the same under a CLI, a test or a worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corl.pipeline.results import PlannedStage, RunResult, StageOutcome


class RunCallbacks:
    """No-op hooks; subclass and override what you need."""

    def plan(self, stages: list["PlannedStage"]) -> None: ...

    def stage_started(self, stage: str, kind: str, total: int | None, resumed_from: int) -> None: ...

    def stage_progress(self, stage: str, done: int, total: int | None, metrics: dict[str, float]) -> None: ...

    def metrics_logged(self, stage: str, step: int, metrics: dict[str, Any]) -> None:
        """A line a stage appended to its ``metrics.jsonl`` (loggers stream these)."""

    def stage_finished(self, outcome: "StageOutcome") -> None: ...

    def message(self, text: str, level: str = "info") -> None: ...

    def run_finished(self, result: "RunResult") -> None: ...
