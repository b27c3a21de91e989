"""``corl tasks`` and ``corl datasets ...``: the task table and the dataset tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from corl.errors import CorlError

console = Console()
datasets_app = typer.Typer(
    help="List, inspect, validate, convert, collect and exchange datasets.", no_args_is_help=True
)


def _task_or_none(name: str | None):
    from corl.tasks import get_task

    return get_task(name) if isinstance(name, str) and name else None  # a forged metadata "task" is no task


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --------------------------------------------------------------------------- tasks
def tasks(
    kind: Optional[str] = typer.Option(None, help="Only tasks of this kind: dsrl, online or d4rl."),
    family: Optional[str] = typer.Option(None, help="Only this simulator family: bullet, safety-gymnasium, mujoco."),
    match: Optional[str] = typer.Option(None, "--match", "-m", help="Only names containing this text."),
) -> None:
    """The task registry: name, family, dims, episode length, cost limit, local dataset."""
    from corl.data.store import locate_dataset
    from corl.tasks import registry

    if kind is not None and kind not in ("dsrl", "online", "d4rl"):
        raise CorlError(f"--kind {kind!r}: expected dsrl, online or d4rl")
    specs = sorted({s.name: s for s in registry().values()}.values(), key=lambda s: (s.kind, s.name))
    table = Table(title="corl tasks", show_lines=False)
    for col in ("task", "kind", "family", "obs", "act", "ep. len", "cost limit", "dataset"):
        table.add_column(col, justify="right" if col in ("obs", "act", "ep. len", "cost limit") else "left")
    shown = 0
    for spec in specs:
        if (
            (kind and spec.kind != kind)
            or (family and spec.family != family)
            or (match and match.lower() not in spec.name.lower())
        ):
            continue
        if spec.kind == "online":
            found = "-"
        else:
            try:
                source = locate_dataset(spec, offline=True, verify=False)
                found = f"[green]{source.origin}[/]"
            except CorlError:
                found = "[dim]not found[/]"
        limit = "-" if spec.cost_limit is None else _fmt(spec.cost_limit)
        table.add_row(
            spec.name,
            spec.kind,
            spec.family,
            str(spec.obs_dim),
            str(spec.act_dim),
            str(spec.max_episode_steps),
            limit,
            found,
        )
        shown += 1
    console.print(table)
    console.print(f"{shown} tasks")


# --------------------------------------------------------------------------- datasets
@datasets_app.command("list")
def list_datasets() -> None:
    """Dataset files in the local store, DSRL's cache and the bundled samples."""
    from corl.data.store import list_local_datasets

    entries = list_local_datasets()
    table = Table(title="local datasets")
    if not entries:
        console.print(
            "no local datasets (try `corl datasets collect --task OfflineCarCircle-v0 -o datasets/OfflineCarCircle-v0.hdf5`)"
        )
        return
    rows = [e if isinstance(e, dict) else getattr(e, "__dict__", {"path": str(e)}) for e in entries]
    columns = list(rows[0].keys())
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(_fmt(row.get(c, "")) for c in columns))
    console.print(table)


@datasets_app.command("info")
def info(
    path: Path = typer.Argument(..., help="A DSRL or D4RL HDF5 file."),
    task: Optional[str] = typer.Option(None, help="Task for normalized scores (default: the file's metadata)."),
    fmt: str = typer.Option("auto", "--format", help="auto, dsrl or d4rl."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Episodes, transitions, per-episode reward/cost quantiles and normalized scores."""
    from corl.data.io import read_dataset
    from corl.data.stats import dataset_summary

    dataset = read_dataset(path, fmt)
    spec = _task_or_none(task or dataset.metadata.get("task"))
    summary = dataset_summary(dataset, spec)
    if as_json:
        console.print_json(json.dumps(summary, default=str))
        return
    _print_summary(path, dataset, summary)


def _print_summary(path: Path, dataset, summary: dict[str, Any]) -> None:
    head = Table(title=f"{path}", show_header=False)
    head.add_column("field")
    head.add_column("value")
    nested: dict[str, dict] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            nested[key] = value
        elif isinstance(value, (list, tuple)):
            head.add_row(key, ", ".join(_fmt(v) for v in value))
        else:
            head.add_row(key, _fmt(value))
    for key in ("source", "collector", "origin", "note"):
        if key in dataset.metadata and key not in summary:
            head.add_row(key, _fmt(dataset.metadata[key]))
    head.add_row("sha256", dataset.metadata.get("sha256", "-"))
    console.print(head)
    if nested:
        stats = [k for k in nested if isinstance(next(iter(nested[k].values()), None), (int, float))]
        if stats:
            columns = list(nested[stats[0]].keys())
            table = Table(title="per-episode quantiles")
            table.add_column("")
            for c in columns:
                table.add_column(str(c), justify="right")
            for key in stats:
                table.add_row(key, *(_fmt(nested[key].get(c, "")) for c in columns))
            console.print(table)


@datasets_app.command("validate")
def validate(
    path: Path = typer.Argument(..., help="A DSRL or D4RL HDF5 file."),
    task: Optional[str] = typer.Option(None, help="Also check obs/action dims against this task."),
    fmt: str = typer.Option("auto", "--format", help="auto, dsrl or d4rl."),
) -> None:
    """Check keys, dtypes, shapes, lengths, finiteness and episode ends (exit 2 on failure)."""
    from corl.data.io import read_dataset

    spec = _task_or_none(task)
    dataset = read_dataset(path, fmt, obs_dim=spec.obs_dim if spec else None, act_dim=spec.act_dim if spec else None)
    console.print(
        f"[green]valid[/] {path}: {len(dataset)} transitions, {dataset.num_episodes} episodes, "
        f"obs {dataset.obs_dim}, act {dataset.act_dim}, sha256 {dataset.metadata['sha256'][:12]}"
    )


@datasets_app.command("convert")
def convert(
    src: Path = typer.Argument(..., help="Input HDF5 file (DSRL or D4RL format)."),
    dst: Path = typer.Argument(..., help="Output DSRL-format HDF5 file."),
    fmt: str = typer.Option("auto", "--from", help="Input format: auto, dsrl or d4rl."),
    task: Optional[str] = typer.Option(None, help="Task name to record in the output's metadata."),
) -> None:
    """Convert a D4RL (or DSRL) file into corl's canonical DSRL format."""
    from corl.data.formats.dsrl import write_dsrl
    from corl.data.io import read_dataset
    from corl.files import check_writable_target

    check_writable_target(dst)
    dataset = read_dataset(src, fmt)
    dataset.metadata["converted_from"] = str(src)
    if task:
        dataset.metadata["task"] = _task_or_none(task).name
    write_dsrl(dataset, dst)
    console.print(f"wrote {dst}: {len(dataset)} transitions, {dataset.num_episodes} episodes")


@datasets_app.command("export-minari")
def export_minari_cmd(
    path: Path = typer.Argument(..., help="A DSRL or D4RL HDF5 file."),
    dataset_id: str = typer.Option(
        ..., "--id", help="Minari dataset id, e.g. OfflineCarCircle-sample-v0 (minari 0.4.3 has no namespaces)."
    ),
    task: Optional[str] = typer.Option(None, help="Task (default: the file's metadata)."),
    overwrite: bool = typer.Option(False, help="Replace an existing Minari dataset with this id."),
) -> None:
    """Export as a Minari dataset in the local Minari store (cost in infos['cost'])."""
    from corl.data.formats.minari import export_minari
    from corl.data.io import read_dataset

    dataset = read_dataset(path)
    spec = _task_or_none(task or dataset.metadata.get("task"))
    out = export_minari(dataset, dataset_id, spec, overwrite=overwrite)
    console.print(f"exported {dataset.num_episodes} episodes as Minari dataset {out}")


@datasets_app.command("import-minari")
def import_minari_cmd(
    dataset_id: str = typer.Argument(..., help="Minari dataset id in the local Minari store."),
    output: Path = typer.Option(..., "-o", "--output", help="DSRL-format HDF5 file to write."),
) -> None:
    """Import a local Minari dataset into a DSRL-format HDF5 file."""
    from corl.data.formats.dsrl import write_dsrl
    from corl.data.formats.minari import import_minari
    from corl.files import check_writable_target

    check_writable_target(output)
    dataset = import_minari(dataset_id)
    write_dsrl(dataset, output)
    console.print(f"wrote {output}: {len(dataset)} transitions, {dataset.num_episodes} episodes")


def _parse_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise CorlError(f"--aggressiveness {text!r}: expected 'LOW,HIGH' with 0 <= LOW <= HIGH <= 1") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise CorlError(f"--aggressiveness {text!r}: expected 'LOW,HIGH' with 0 <= LOW <= HIGH <= 1")
    return lo, hi


@datasets_app.command("collect")
def collect(
    task: str = typer.Option(..., help="Task whose simulator to run, e.g. OfflineCarCircle-v0."),
    policy: str = typer.Option("scripted", help="random or scripted (noisy controllers of varied aggressiveness)."),
    episodes: int = typer.Option(20, min=1, help="Number of episodes to record."),
    output: Path = typer.Option(..., "-o", "--output", help="DSRL-format HDF5 file to write."),
    seed: int = typer.Option(0, help="Seed of env resets and controller noise."),
    aggressiveness: str = typer.Option("0,1", help="Per-episode aggressiveness range 'LOW,HIGH' in [0, 1]."),
    workers: int = typer.Option(
        0,
        min=0,
        help="Worker processes running episodes (0: from the free cores; "
        "1: this process). The file is the same for any number.",
    ),
) -> None:
    """Record real simulator episodes into a DSRL-format file that dsrl itself can load."""
    from corl.checks import check_seed
    from corl.collect.recorder import CollectConfig, collect_episodes
    from corl.data.formats.dsrl import write_dsrl
    from corl.files import check_writable_target
    from corl.tasks import get_task

    spec = get_task(task)
    if policy not in ("scripted", "random"):
        raise CorlError(f"--policy {policy!r}: expected 'scripted' or 'random'")
    check_seed(seed)
    check_writable_target(output)  # before minutes of simulation, not after
    config = CollectConfig(episodes=episodes, policy=policy, seed=seed, aggressiveness=_parse_range(aggressiveness))
    columns = [
        TextColumn("[bold]collect[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} ep/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(spec.name, total=episodes, rate="-", last="")
        start = progress.get_time()

        def update(done: int, meta: dict) -> None:
            rate = done / max(progress.get_time() - start, 1e-9)
            progress.update(
                bar, completed=done, rate=f"{rate:.2f}", last=f"R={meta['reward']:.1f} C={meta['cost']:.0f}"
            )

        dataset = collect_episodes(spec, config, progress=update, workers=workers)
    write_dsrl(dataset, output)
    returns = dataset.episode_returns()
    console.print(
        f"wrote {output}: {len(dataset)} transitions, {dataset.num_episodes} episodes "
        f"(collector {dataset.metadata['collector']}); episode reward {returns['reward'].mean():.1f} +- {returns['reward'].std():.1f}, "
        f"cost {returns['cost'].mean():.1f} +- {returns['cost'].std():.1f}"
    )


def register(app: typer.Typer) -> None:
    app.command("tasks")(tasks)
    app.add_typer(datasets_app, name="datasets")
