"""``corl sweep``: seeds x tasks x settings as one deduplicated graph of stages.

``corl sweep SPEC.toml`` (or a name under ``pipelines/sweeps/``) or the flag form
``corl sweep PIPELINE --tasks A,B --seeds 0-4 --grid stage.key=v1,v2``; ``--dry-run`` shows
the graph, ``--status`` the progress of a running or interrupted sweep (both do no work).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


class _Display:
    """Scheduler callbacks: a bar over the nodes to build and a line per finished node."""

    def __init__(self, graph: Any, total: int) -> None:
        self.graph = graph
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[running]}", style="dim"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("nodes", total=total, running="")
        self.running: list[str] = []

    def _label(self, node: str) -> str:
        n = self.graph.nodes[node]
        runs = self.graph.runs_of(node)
        seed = f" seed {n.job.seed}" if n.job.stage.kind != "dataset" else ""
        return f"{n.job.pipeline}:{n.job.stage.name}{seed} ({len(runs)} run{'s' if len(runs) != 1 else ''})"

    def node_submitted(self, node: str) -> None:
        self.running.append(node)
        self.progress.update(self.task, running=f"{len(self.running)} running")

    def node_finished(self, result: Any) -> None:
        if result.node in self.running:
            self.running.remove(result.node)
        style = {"ran": "green", "cached": "green", "failed": "red", "skipped": "red"}.get(result.status, "yellow")
        line = f"[{style}]{result.status:>11}[/] {result.node}  [dim]{self._label(result.node)}"
        if result.wall_time:
            line += f", {result.wall_time:.1f}s"
        if result.resumed_from:
            line += f", resumed @{result.resumed_from}"
        line += "[/]"
        if result.reason:
            line += f"  [red]{result.reason}[/]"
        self.progress.console.print(line, highlight=False, soft_wrap=True)
        self.progress.update(self.task, advance=1, running=f"{len(self.running)} running")

    def message(self, text: str, level: str = "info") -> None:
        style = {"warning": "yellow", "error": "red"}.get(level, "dim")
        self.progress.console.print(f"[{style}]{text}[/]", highlight=False)


def _csv(values: List[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def results_table(results: dict[str, Any]) -> Table:
    """The sweep's rich table: one row per method x task x dataset x setting."""
    from corl.pipeline.sweep_results import fmt

    groups = results.get("groups", [])
    many = {c: len({g[c] for g in groups}) > 1 for c in ("task", "dataset", "setting")}
    table = Table(
        title=f"sweep {results.get('sweep')} ({results.get('id')}): normalized scores, mean ± std over seeds",
        title_justify="left",
    )
    columns = (
        ["method"]
        + [c for c in ("task", "dataset", "setting") if many[c]]
        + ["seeds", "final reward", "final cost", "final safe"]
    )
    has_best = any("best" in g for g in groups)
    if has_best:
        columns += ["best reward", "best cost", "best safe"]
    for col in columns:
        table.add_column(col, overflow="fold")
    for g in groups:
        row = [g["method"]] + [g[c] or "-" for c in ("task", "dataset", "setting") if many[c]]
        row.append(f"{g['finished']}/{g['seeds']}")
        for label in ("final", "best") if has_best else ("final",):
            s = g.get(label)
            if s is None:
                row += ["-", "-", "-"]
                continue
            row += [
                fmt(s["reward_mean"], s["reward_std"]),
                fmt(s["cost_mean"], s["cost_std"]),
                f"{s['safe_seeds']}/{s['n']}",
            ]
        table.add_row(*row)
    return table


def _plan(
    target: str,
    tasks: List[str],
    seeds: Optional[str],
    preset: Optional[str],
    overrides: List[str],
    grid: List[str],
    datasets: List[str],
    device: Optional[str],
    checkpoints: Optional[str],
    offline: bool,
) -> tuple[Any, list, Path]:
    from corl.pipeline.sweep import find_sweep, flag_sweep, load_sweep
    from corl.store.artifacts import cache_root

    path = find_sweep(target)
    root = cache_root(checkpoints).resolve()
    if path is not None:
        given = [
            name
            for name, v in (
                ("--tasks", tasks),
                ("--seeds", seeds),
                ("--preset", preset),
                ("--set", overrides),
                ("--grid", grid),
                ("--dataset", datasets),
            )
            if v
        ]
        if given:
            from corl.errors import ConfigError

            raise ConfigError(
                f"{path}: {given[0]} cannot be combined with a sweep file (edit the file, or use "
                "the flag form: corl sweep PIPELINE --tasks ...)"
            )
        spec = load_sweep(path)
        if device:
            spec.device = device
    else:
        spec = flag_sweep(
            target, _csv(tasks), seeds or "0", preset, list(overrides), list(grid), list(datasets), device or "auto"
        )
    runs = spec.expand(checkpoints=str(root), offline=True if offline else None)
    return spec, runs, root


def _graph_table(graph: Any, title: str, state: dict[str, Any] | None = None) -> Table:
    from corl.store.artifacts import METRICS
    from corl.store.lock import ArtifactLock

    table = Table(title=title, title_justify="left")
    for col in ("node", "stage", "runs", "state"):
        table.add_column(col, overflow="fold")
    nodes_state = (state or {}).get("nodes", {})
    for nid, node in graph.nodes.items():
        ps = node.job.stage
        if node.status == "cached":
            shown = "[green]done[/]"
        else:
            last = nodes_state.get(nid, {})
            if ArtifactLock(ps.dir).is_locked_by_other():
                shown = "[yellow]running[/]"
            elif last.get("status") in ("failed", "skipped"):
                shown = f"[red]{last['status']}[/]: {last.get('reason', '')}"
            elif node.status == "resume":
                shown = f"[yellow]interrupted[/] (resumes at step {_last_step(ps.dir / METRICS)})"
            elif node.status == "corrupt":
                shown = "[red]corrupt: will rebuild[/]"
            else:
                shown = "to do"
        table.add_row(nid, f"{node.job.pipeline}:{ps.name}", str(len(graph.runs_of(nid))), shown)
    return table


def _last_step(path: Path) -> str:
    try:
        lines = path.read_text().strip().splitlines()
        return str(json.loads(lines[-1]).get("step", "?")) if lines else "?"
    except (OSError, json.JSONDecodeError, IndexError):
        return "?"


def _command(
    target: str,
    tasks: List[str],
    seeds: Optional[str],
    preset: Optional[str],
    overrides: List[str],
    grid: List[str],
    datasets: List[str],
    workers: Optional[int],
    ray: Optional[str],
    worker_threads: Optional[int],
    device: Optional[str],
    checkpoints: Optional[str],
    offline: bool,
) -> str:
    """The command line that repeats (and so resumes) this sweep."""
    parts = ["corl", "sweep", target]
    for flag, values in (("--tasks", tasks), ("--set", overrides), ("--grid", grid), ("--dataset", datasets)):
        for value in values:
            parts += [flag, value]
    for flag, value in (
        ("--seeds", seeds),
        ("--preset", preset),
        ("--workers", workers),
        ("--ray", ray),
        ("--worker-threads", worker_threads),
        ("--device", device),
        ("--checkpoints", checkpoints),
    ):
        if value is not None:
            parts += [flag, str(value)]
    if offline:
        parts.append("--offline")
    return shlex.join(parts)


def sweep(
    target: str = typer.Argument(
        ..., help="A sweep file (.toml, or NAME in pipelines/sweeps/), or a pipeline name for the flag form."
    ),
    tasks: List[str] = typer.Option([], "--tasks", "-t", help="Flag form: tasks, comma-separated (repeatable)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", "-s", help="Flag form: seeds, e.g. 0-4 or 0,2,5 (default 0)."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Flag form: the pipeline's preset."),
    overrides: List[str] = typer.Option([], "--set", help="Flag form: stage.key=value for every run (repeatable)."),
    grid: List[str] = typer.Option([], "--grid", help="Flag form: stage.key=v1,v2 (repeatable; the product runs)."),
    datasets: List[str] = typer.Option([], "--dataset", help="Flag form: dataset file(s); each run once per file."),
    workers: Optional[int] = typer.Option(
        None, "--workers", "-w", min=1, help="Local process pool size (default: CPU count; 1 = this process)."
    ),
    ray: Optional[str] = typer.Option(
        None, "--ray", help="Run on Ray: 'local' (start one here), 'auto' (the running cluster) or ADDRESS (host:port)."
    ),
    worker_threads: Optional[int] = typer.Option(
        None, "--worker-threads", min=1, help="Torch threads per worker (default: the sweep's, else 1)."
    ),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda for every run."),
    checkpoints: Optional[str] = typer.Option(None, "--checkpoints", help="Cache root (shared by every worker)."),
    offline: bool = typer.Option(False, "--offline", help="Never download (local files only)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show the graph: nodes, the runs sharing them, cached or not."
    ),
    status: bool = typer.Option(False, "--status", help="Progress of a running or interrupted sweep (no work)."),
) -> None:
    """Run many runs (methods x tasks x datasets x settings x seeds) as one graph: a stage
    shared by several runs is built once; failures stop only what depends on them."""
    from corl.pipeline.executors import make_backend
    from corl.pipeline.sweep import default_workers, plan_sweep, run_sweep, sweep_dir
    from corl.pipeline.sweep_results import load_results

    spec, runs, root = _plan(target, tasks, seeds, preset, overrides, grid, datasets, device, checkpoints, offline)
    graph = plan_sweep(spec, runs, collect=not (dry_run or status))
    directory = sweep_dir(root, spec, runs)
    todo = graph.todo()
    head = (
        f"sweep {spec.name} ({directory.name.rsplit('-', 1)[1]}): {len(runs)} runs, {graph.stage_count} stages "
        f"-> {len(graph.nodes)} nodes, {len(graph.nodes) - len(todo)} cached, {len(todo)} to build"
    )
    if dry_run or status:
        state = None
        if status and (directory / "state.json").is_file():
            state = json.loads((directory / "state.json").read_text())
        console.print(_graph_table(graph, head, state))
        if status:
            done_runs = sum(all(graph.nodes[n].status == "cached" for n in ids.values()) for ids in graph.run_nodes)
            console.print(f"{done_runs}/{len(runs)} runs done; sweep directory {directory}", highlight=False)
            if state:
                console.print(
                    f"last attempt: {state.get('status')} ({state.get('backend')}), command: {state.get('command')}",
                    highlight=False,
                    soft_wrap=True,
                )
            results = load_results(directory / "sweep.json")
            if results:
                console.print(results_table(results))
        return

    threads = worker_threads or spec.threads
    n_workers = workers or spec.workers or min(default_workers(), max(1, len(todo)))
    backend = make_backend(n_workers, ray, threads, use_ray=ray is not None)
    console.print(
        f"[bold]{head}[/] on {backend.name}, {threads} torch thread{'s' if threads != 1 else ''} per worker",
        highlight=False,
    )
    command = _command(
        target,
        tasks,
        seeds,
        preset,
        overrides,
        grid,
        datasets,
        workers,
        ray,
        worker_threads,
        device,
        checkpoints,
        offline,
    )
    display = _Display(graph, len(todo))
    display.progress.start()
    try:
        outcome = run_sweep(spec, runs, graph, backend, root, command, display, threads)
    finally:
        display.progress.stop()
    console.print(results_table(json.loads(outcome.files["json"].read_text())))
    for failure in outcome.failures:
        console.print(
            f"[red]failed[/] {failure.node}: {failure.reason} (log: {failure.log})", highlight=False, soft_wrap=True
        )
    skipped = sum(r.status == "skipped" for r in outcome.nodes.values())
    if skipped:
        console.print(f"[red]{skipped} node(s) skipped because an input failed[/]")
    console.print(
        f"[dim]results: {', '.join(str(p) for p in outcome.files.values())}; wall {outcome.wall_time:.1f}s[/]",
        highlight=False,
        soft_wrap=True,
    )
    if outcome.interrupted:
        console.print(f"[yellow]interrupted; resume with: {command}[/]", highlight=False, soft_wrap=True)
        raise SystemExit(130)
    if not outcome.ok:
        raise SystemExit(1)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
