"""``corl run`` and ``corl cache ls|prune``: the pipeline engine's commands (``corl runs``: ``runs.py``)."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
cache_app = typer.Typer(help="Inspect and prune the artifact cache.", no_args_is_help=True)


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def _model_line(label: str, stage: str, get) -> str:
    """The offline model estimate of a policy (no simulator involved), beside its scores."""
    line = (
        f"[bold]{label}[/] ({stage}, model estimate, offline): normalized reward "
        f"{_fmt(get('model_normalized_reward'))}, normalized cost {_fmt(get('model_normalized_cost'))}"
    )
    if get("iteration") is not None:
        line += f" at safe iteration {get('iteration'):.0f}"
    return line


def score_lines(scores: dict[str, dict[str, float]]) -> list[str]:
    """One line per (label, stage) of a run's scores, from whatever subset of metrics the stage
    published (an evaluate stage gives normalized scores; an online stage's periodic evaluation
    gives only ``eval_reward``/``eval_cost``): a missing number is left out, never formatted."""
    lines = []
    for label, values in scores.items():
        for stage in sorted({k.split("/")[0] for k in values}):
            get = lambda name: values.get(f"{stage}/{name}")  # noqa: E731
            if get("episodes") is None and get("model_cost") is not None:  # DRCORL's offline model estimate
                lines.append(_model_line(label, stage, get))
                continue
            parts = []
            for name in ("normalized_score", "normalized_reward"):
                if get(name) is not None:
                    parts.append(f"{name.replace('_', ' ')} {_fmt(get(name), get(name + '_std'))}")
                    break
            if get("normalized_cost") is not None:
                limit = f"limit {get('cost_limit'):g}, " if get("cost_limit") is not None else ""
                safe = "" if get("safe") is None else ("[green]safe[/]" if get("safe") else "[red]unsafe[/]")
                parts.append(
                    f"normalized cost {_fmt(get('normalized_cost'), get('normalized_cost_std'))}"
                    + (f" ({limit}{safe})" if limit or safe else "")
                )
            raw = [
                f"{what} {_fmt(get(name))}"
                for name, what in (
                    ("reward", "raw reward"),
                    ("cost", "cost"),
                    ("eval_reward", "eval reward"),
                    ("eval_cost", "eval cost"),
                )
                if get(name) is not None
            ]
            if raw:
                episodes = get("episodes")
                parts.append(", ".join(raw) + (f" over {episodes:.0f} episodes" if episodes is not None else ""))
            shown = {
                "normalized_score",
                "normalized_reward",
                "normalized_cost",
                "cost_limit",
                "safe",
                "reward",
                "cost",
                "eval_reward",
                "eval_cost",
                "episodes",
            }
            rest = [
                f"{name} {_fmt(v)}"
                for k, v in values.items()
                if k.split("/")[0] == stage
                for name in [k.split("/", 1)[1]]
                if name not in shown
                and not name.endswith("_std")
                and name != "length"
                and "@" not in name
                and isinstance(v, (int, float))
            ]
            parts += rest
            lines.append(f"[bold]{label}[/] ({stage}): " + ("; ".join(parts) or "no scores"))
    return lines


def run(
    pipeline: str = typer.Argument(..., help="Pipeline name (pipelines/NAME.toml) or a path to a .toml spec."),
    task: str = typer.Option(..., "--task", "-t", help="Task name, e.g. OfflineCarCircle-v0."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Named preset of the spec (paper, quick, ...)."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed of every seeded stage (part of their keys)."),
    overrides: List[str] = typer.Option([], "--set", help="Override: stage.key=value (TOML value). Repeatable."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu or cuda."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset file to use instead of the lookup."),
    offline: bool = typer.Option(False, "--offline", help="Never download (use local files only)."),
    checkpoints: Optional[str] = typer.Option(
        None, "--checkpoints", help="Cache root (default $CORL_CHECKPOINTS or ./checkpoints)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show which stages are cached and which would run."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="If another run holds a stage's lock: wait, or exit."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Checkpoint every N steps."),
    checkpoint_seconds: Optional[float] = typer.Option(None, "--checkpoint-seconds", help="... or every S seconds."),
    logger: List[str] = typer.Option(
        [],
        "--logger",
        help="Also stream metrics to tensorboard or wandb (optional extras; W&B offline unless configured). Repeatable.",
    ),
) -> None:
    """Run a pipeline on a task: cached stages are skipped, interrupted ones resume."""
    import corl.api as api
    from corl.cli.progress import RichCallbacks
    from corl.pipeline.results import RunInterrupted

    options = dict(
        preset=preset,
        seed=seed,
        overrides=list(overrides),
        device=device,
        dataset=dataset,
        offline=True if offline else None,
        checkpoints=checkpoints,
        wait=wait,
        checkpoint_every=checkpoint_every,
        checkpoint_seconds=checkpoint_seconds,
    )
    callbacks = RichCallbacks(console)
    console.print(
        f"[bold]corl run[/] {pipeline} --task {task}"
        + (f" --preset {preset}" if preset else "")
        + f" --seed {seed}"
        + (" [dim](dry run)[/]" if dry_run else ""),
        highlight=False,
    )
    if dry_run:
        plan = api.plan(pipeline, task, callbacks=callbacks, **options)
        callbacks.plan(plan.stages)  # an upstream run's stages (dataset.source=cvpo: cvpo:train, ...) first
        pending = [s.name for s in plan.pending]
        if pending:
            why = next((str(s.fingerprint["pending"]) for s in plan.stages if s.fingerprint.get("pending")), "")
            console.print(f"[dim]{', '.join(pending)}: keys known only {why}; they would all run[/]", highlight=False)
        todo = [s.name for s in plan.stages if s.status != "cached"]
        console.print(f"would run: {', '.join(todo) or 'nothing (all cached)'}")
        return
    try:
        result = api.run(pipeline, task, callbacks=callbacks, logger=list(logger), **options).result
        assert result is not None  # api.run always carries the runner's result
    except RunInterrupted as exc:
        callbacks.stop()
        console.print(f"[yellow]{exc}[/]", highlight=False, soft_wrap=True)
        raise SystemExit(130)  # not typer.Exit: main() runs click with standalone_mode=False, which swallows Exit codes
    if result.dataset.get("note"):
        sha = str(result.dataset.get("sha256") or "")[:12]
        console.print(
            f"[dim]dataset: {result.dataset.get('path')} ({result.dataset.get('origin')}"
            f"{', sha256 ' + sha if sha else ''}): {result.dataset['note']}[/]",
            highlight=False,
        )
    for line in score_lines(result.scores):
        console.print(line, highlight=False)
    from corl.store.runs import short_id

    run_id = short_id({"_path": str(result.record_path)})
    console.print(
        f"[dim]run {run_id} (corl runs --show {run_id}; curves: corl runs --plot {run_id}): record "
        f"{result.record_path}; wall {result.wall_time:.1f}s[/]",
        highlight=False,
        soft_wrap=True,
    )


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} TB"


@cache_app.command("ls")
def cache_ls(checkpoints: Optional[str] = typer.Option(None, "--checkpoints", help="Cache root.")) -> None:
    """Every artifact: task, stage-key, done or partial, size, runs referencing it."""
    from corl.store.artifacts import cache_root
    from corl.store.runs import read_records, scan_cache

    root = cache_root(checkpoints)
    records, problems = read_records(root)
    for problem in problems:
        console.print(
            f"[yellow]skipped {problem} (not counted in 'runs'; prune refuses until it is fixed)[/]",
            highlight=False,
            soft_wrap=True,
        )
    entries = scan_cache(root, records)
    table = Table(title=f"artifact cache {root}", title_justify="left")
    for col in ("task", "artifact", "state", "size", "runs"):
        table.add_column(col)
    for e in entries:
        state = {
            "done": "[green]done[/]",
            "building": "[yellow]building[/]",
            "corrupt": "[red]corrupt[/]",
            "partial": "[dim]partial[/]",
            "empty": "[dim]empty[/]",
        }[e.state]
        table.add_row(e.task, e.name, state, _size(e.size_bytes), str(e.referenced_by))
    console.print(table)
    console.print(f"{len(entries)} artifacts, {_size(sum(e.size_bytes for e in entries))}")


@cache_app.command("prune")
def cache_prune(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed."),
    checkpoints: Optional[str] = typer.Option(None, "--checkpoints", help="Cache root."),
) -> None:
    """Remove artifacts that no run record references (run with --dry-run first)."""
    from corl.store.artifacts import cache_root
    from corl.store.runs import prune

    victims = prune(cache_root(checkpoints), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for e in victims:
        console.print(f"{verb} {e.task}/{e.name} ({_size(e.size_bytes)})", highlight=False)
    console.print(f"{verb} {len(victims)} artifacts, {_size(sum(e.size_bytes for e in victims))}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.add_typer(cache_app, name="cache")
