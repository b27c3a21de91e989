"""The rich terminal implementation of the engine's progress callbacks.

A live bar per stage with step, rate, ETA and latest losses, then a summary table. The ETA
is honest: rich estimates speed only from steps done in this process (a resumed stage starts
its bar at the resumed step, so restored steps do not inflate the rate) over a sliding window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from corl.pipeline.progress import RunCallbacks

if TYPE_CHECKING:
    from corl.pipeline.results import PlannedStage, RunResult, StageOutcome


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key's shortest ``/``-suffix that no other shown key shares: ``train/critic/loss`` and
    ``train/actor/loss`` stay ``critic/loss`` and ``actor/loss`` (never two bare ``loss``), a
    lone ``train/bc/nll`` reads ``nll``. ``final/...`` and ``best/...`` keep their label."""
    out = {}
    for key in keys:
        if key.startswith(("final/", "best/")):
            out[key] = key
            continue
        parts = key.split("/")
        if parts[0] == "train" and len(parts) > 1:
            parts = parts[1:]
        for n in range(1, len(parts) + 1):
            candidate = "/".join(parts[-n:])
            clash = [k for k in keys if k != key and (k == candidate or k.endswith("/" + candidate))]
            if not clash:
                break
        out[key] = candidate
    return out


def format_metrics(metrics: dict[str, Any], limit: int = 4) -> str:
    items = list(metrics.items())[:limit]
    names = short_names([k for k, _ in items])
    parts = []
    for key, value in items:
        short = names[key]
        parts.append(f"{short}={value:.4g}" if isinstance(value, (int, float)) else f"{short}={value}")
    return " ".join(parts)


class RateColumn(ProgressColumn):
    """Steps per second over rich's sliding window (blank until measured)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} it/s" if speed else "-- it/s", style="cyan")


class RichCallbacks(RunCallbacks):
    """A rich progress bar per stage and a summary table at the end."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}", style="dim"),
            console=self.console,
            transient=False,
            refresh_per_second=8,
        )
        self._tasks: dict[str, Any] = {}
        self._started = False

    def _ensure(self) -> None:
        if not self._started:
            self.progress.start()
            self._started = True

    def plan(self, stages: list["PlannedStage"]) -> None:
        table = Table(title="plan", title_justify="left", show_edge=False, pad_edge=False)
        for col in ("stage", "kind", "state", "artifact"):
            table.add_column(col, overflow="fold")
        for s in stages:
            state = {
                "cached": "[green]cached[/]",
                "run": "[yellow]will run[/]",
                "resume": "[yellow]will resume[/]",
                "corrupt": "[red]corrupt: will rebuild[/]",
                "restart": "[red]checkpoint unreadable: will restart[/]",
                "stale": "[yellow]will rebuild[/]",
                "pending": "[dim]key pending[/]",
            }.get(s.status, s.status)
            table.add_row(s.name, s.kind, state, f"{s.dir.parent.name}/{s.dir.name}")
        self.console.print(table)
        for s in stages:
            if s.reason:
                self.console.print(f"[red]{s.name}: {s.reason}[/]", highlight=False)

    def stage_started(self, stage: str, kind: str, total: int | None, resumed_from: int) -> None:
        self._ensure()
        label = f"{stage}" + (f" (resumed @{resumed_from})" if resumed_from else "")
        if stage in self._tasks:  # re-announced by a training loop: a fresh bar, so the rate stays honest
            self.progress.remove_task(self._tasks.pop(stage))
        self._tasks[stage] = self.progress.add_task(label, total=total, completed=resumed_from, metrics="")

    def stage_progress(self, stage: str, done: int, total: int | None, metrics: dict[str, float]) -> None:
        task = self._tasks.get(stage)
        if task is None:
            return
        self.progress.update(task, completed=done, total=total, metrics=format_metrics(metrics))

    def stage_finished(self, outcome: "StageOutcome") -> None:
        task = self._tasks.get(outcome.name)
        if task is not None:
            t = next(t for t in self.progress.tasks if t.id == task)
            self.progress.update(task, completed=t.total or t.completed)
            self.progress.stop_task(task)

    def message(self, text: str, level: str = "info") -> None:
        style = {"warning": "yellow", "error": "red"}.get(level, "dim")
        (self.progress.console if self._started else self.console).print(f"[{style}]{text}[/]", highlight=False)

    def stop(self) -> None:
        """End the live display (before printing after an interrupted run)."""
        if self._started:
            self.progress.stop()
            self._started = False

    def run_finished(self, result: "RunResult") -> None:
        self.stop()
        self.console.print(summary_table(result))


def summary_table(result: "RunResult") -> Table:
    root = result.stages[0].dir.parent.parent if result.stages else ""
    table = Table(
        title=f"{result.pipeline} on {result.task} (seed {result.seed}); artifacts under {root}", title_justify="left"
    )
    for col in ("stage", "status", "wall", "key metrics", "artifact"):
        table.add_column(col, overflow="fold")
    for o in result.stages:
        status = {"cached": "[green]cached[/]", "ran": "[yellow]ran[/]"}.get(o.status, f"[red]{o.status}[/]")
        if o.resumed_from:
            status += f" (resumed @{o.resumed_from})"
        table.add_row(
            o.name,
            status,
            f"{o.wall_time:.1f}s",
            format_metrics(o.key_metrics, limit=6),
            f"{o.dir.parent.name}/{o.dir.name}",
        )
    return table
