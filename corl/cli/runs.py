"""``corl runs``: the recorded runs, one line each at 80 columns; ``--show``, ``--plot``, ``--json``.

Why one line per run: a listing is for finding a run; the full story of one (every stage,
artifact, override, score) is ``corl runs --show ID``. Each line carries what tells two runs
of a pipeline apart: the policy's label (BC-Safe / BC-All) or the ``--set`` overrides, the
preset and the seed. IDs are short (six hex characters of the record's name) and every
command that takes ``--run`` accepts them.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from corl.errors import CorlError

console = Console()


def stage_counts(record: dict[str, Any]) -> str:
    """``3 cached, 2 ran`` (in the order cached, ran, then anything else)."""
    counts: dict[str, int] = {}
    for stage in record.get("stages", []):
        counts[stage.get("status", "?")] = counts.get(stage.get("status", "?"), 0) + 1
    order = ["cached", "ran"] + sorted(k for k in counts if k not in ("cached", "ran"))
    return ", ".join(f"{counts[k]} {k}" for k in order if k in counts) or "-"


def _scores(record: dict[str, Any], label: str) -> str:
    scores = record.get("scores", {}).get(label, {})
    parts = []
    for key, value in scores.items():
        if key.endswith(("/normalized_reward", "/normalized_score")):
            cost = scores.get(f"{key.split('/')[0]}/normalized_cost")
            parts.append(f"{value:.2f}/{cost:.2f}" if cost is not None else f"{value:.2f}")
    if label == "best":  # DRCORL's best iterate by the offline estimate, tagged beside 'best'
        offline = _scores(record, "best_offline")
        if offline != "-":
            parts.append(f"off {offline}")
    if not parts and label == "final":  # online collectors: raw reward/cost of the last episodes
        reward = next((v for k, v in scores.items() if k.endswith("/reward")), None)
        cost = next((v for k, v in scores.items() if k.endswith("/cost")), None)
        if reward is not None:
            parts.append(f"{reward:.0f}/{cost:.0f}" if cost is not None else f"{reward:.0f}")
    return ", ".join(parts) or "-"


def what(record: dict[str, Any], root: Path) -> str:
    """The policy's label when the pipeline gives one (BC-Safe, BC-All), then the overrides."""
    from corl.store.runs import policy_label

    label = policy_label(record, root)
    parts = [label] if label and label.lower() != str(record.get("pipeline")).lower() else []
    parts += list(record.get("overrides") or [])
    return " ".join(parts) or "-"


def _row(record: dict[str, Any], root: Path) -> dict[str, Any]:
    from corl.store.runs import record_id, short_id

    return {
        "id": short_id(record),
        "record": record_id(record),
        "path": record["_path"],
        "started": record.get("started"),
        "pipeline": record.get("pipeline"),
        "task": record.get("task"),
        "seed": record.get("seed"),
        "preset": record.get("preset"),
        "overrides": record.get("overrides") or [],
        "what": what(record, root),
        "status": record.get("status"),
        "stages": stage_counts(record),
        "wall_time": record.get("wall_time"),
        "scores": record.get("scores", {}),
    }


def _when(ts: float | None) -> str:
    return _dt.datetime.fromtimestamp(ts or 0).strftime("%m-%d %H:%M")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else (text[: width - 1] + "…" if width > 1 else text[:width])


def fit(headers: list[str], rows: list[list[str]], width: int, shrink: dict[str, int]) -> list[str]:
    """Lines of a left-aligned table no wider than ``width``: the columns in ``shrink``
    (name -> minimum width), widest first, give up characters (ellipsis) until it fits."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    sep = 2

    def total() -> int:
        return sum(widths) + sep * (len(widths) - 1)

    while total() > width:
        candidates = [i for i, h in enumerate(headers) if h in shrink and widths[i] > shrink[h]]
        if not candidates:
            break
        i = max(candidates, key=lambda j: widths[j] - shrink[headers[j]])
        widths[i] -= 1
    lines = []
    for cells in [headers, *rows]:
        line = (" " * sep).join(_cut(c, w).ljust(w) for c, w in zip(cells, widths))
        lines.append(line.rstrip())
    return lines


def list_lines(records: list[dict[str, Any]], root: Path, width: int) -> list[str]:
    """One line per run (see the module docstring); a column every listed run shares (task,
    pipeline) moves into the title line instead of repeating."""
    rows = [_row(r, root) for r in records]
    shared = {key: rows[0][key] for key in ("task", "pipeline") if len({str(r[key]) for r in rows}) == 1}
    headers = (
        ["id", "when"]
        + [h for h in ("pipeline", "task") if h not in shared]
        + ["what", "seed", "stages", "final", "best"]
    )
    table = []
    for r, record in zip(rows, records):
        what_cell = "" if r["what"] == "-" else r["what"]
        if "pipeline" in shared and r["preset"]:  # no pipeline column to carry the preset
            what_cell = f"{what_cell} [{r['preset']}]".strip()
        cells = {
            "id": r["id"],
            "when": _when(r["started"]),
            "pipeline": str(r["pipeline"]) + (f":{r['preset']}" if r["preset"] else ""),
            "task": str(r["task"]),
            "what": what_cell or "-",
            "seed": str(r["seed"]),
            "stages": r["stages"] if r["status"] == "ok" else f"{r['status']}: {r['stages']}",
            "final": _scores(record, "final"),
            "best": _scores(record, "best"),
        }
        table.append([cells[h] for h in headers])
    title = "runs" + "".join(f" {k} {v}" for k, v in (("of", shared.get("pipeline")), ("on", shared.get("task"))) if v)
    title += " (final/best: normalized reward/cost)"
    shrink = {"what": 8, "task": 10, "pipeline": 6, "stages": 9, "final": 9, "best": 4}
    return [_cut(title, width), *fit(headers, table, width, shrink)]


def show(record: dict[str, Any], root: Path) -> None:
    """Every detail of one run: command, overrides, dataset, stages with artifacts, scores."""
    from corl.store.runs import record_id, short_id

    console.print(f"[bold]run {short_id(record)}[/] ({escape(record_id(record))})", highlight=False)
    fields = [
        ("command", record.get("command")),
        ("status", record.get("status")),
        ("pipeline", f"{record.get('pipeline')} ({record.get('spec')})"),
        ("task", record.get("task")),
        ("seed", record.get("seed")),
        ("preset", record.get("preset") or "-"),
        ("overrides", " ".join(record.get("overrides") or []) or "-"),
        ("label", what(record, root)),
        ("device", record.get("device")),
        ("started", _dt.datetime.fromtimestamp(record.get("started", 0))),
        ("wall", f"{record['wall_time']:.1f}s" if record.get("wall_time") is not None else "-"),
        ("record", record["_path"]),
    ]
    dataset = record.get("dataset") or {}
    if dataset:
        fields.append(
            ("dataset", f"{dataset.get('path')} (sha256 {str(dataset.get('sha256'))[:12]}, {dataset.get('origin')})")
        )
    for name, value in fields:
        console.print(f"  {name:10s} {escape(str(value))}", highlight=False, soft_wrap=True)
    table = Table(title="stages", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("stage", "kind", "status", "wall", "artifact"):
        table.add_column(col, overflow="fold")
    for stage in record.get("stages", []):
        table.add_row(
            escape(stage.get("name", "?")),
            stage.get("kind", "?"),
            stage.get("status", "?"),
            f"{stage.get('wall_time') or 0:.1f}s",
            escape(str(root / stage.get("dir", ""))),
        )
    console.print(table)
    for label in ("final", "best"):
        scores = record.get("scores", {}).get(label, {})
        if scores:
            console.print(
                f"[bold]{label}[/]: "
                + ", ".join(f"{k}={v:.4g}" for k, v in scores.items() if isinstance(v, (int, float))),
                highlight=False,
                soft_wrap=True,
            )


def plot(record: dict[str, Any], root: Path, out: str | None, open_files: bool) -> list[Path]:
    """Each stage's ``training_curves.png`` (drawn now when missing), copied to ``out`` if given."""
    from corl.pipeline.curves import write_for_stage
    from corl.store.artifacts import CURVES, read_manifest
    from corl.store.runs import short_id

    files = []
    for stage in record.get("stages", []):
        directory = root / stage.get("dir", "")
        png = directory / CURVES
        if not png.is_file():
            manifest = read_manifest(directory) or {}
            if manifest:
                write_for_stage(
                    directory,
                    f"{record.get('pipeline')}: {stage.get('name')} ({stage.get('kind')}) on {record.get('task')}",
                    manifest.get("outputs", {}),
                    manifest.get("config", {}),
                )
        if png.is_file():
            if out:
                target = Path(out).expanduser()
                target.mkdir(parents=True, exist_ok=True)
                dest = target / f"{short_id(record)}-{stage.get('name', 'stage').replace(':', '-')}.png"
                shutil.copyfile(png, dest)
                png = dest
            files.append(png)
    if open_files:
        import webbrowser

        for f in files:
            webbrowser.open(f.resolve().as_uri())
    return files


def runs(
    limit: int = typer.Option(20, "--limit", "-n", help="How many recent runs to list."),
    pipeline: Optional[str] = typer.Option(None, "--pipeline", help="Only runs of this pipeline."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Only runs on this task."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable: one JSON list of runs."),
    show_id: Optional[str] = typer.Option(None, "--show", help="Everything about one run (ID from the list)."),
    plot_id: Optional[str] = typer.Option(
        None, "--plot", help="Training curves of one run: PNG paths (drawn when missing)."
    ),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="With --plot: copy the PNGs into this directory."),
    open_files: bool = typer.Option(False, "--open", help="With --plot: open the PNGs in the system viewer."),
    checkpoints: Optional[str] = typer.Option(None, "--checkpoints", help="Cache root."),
) -> None:
    """Recent runs, one line each: id, pipeline, label or overrides, task, seed, stages, scores."""
    from corl.store.artifacts import cache_root
    from corl.store.runs import find_records, read_records, short_id

    root = cache_root(checkpoints)
    if (out or open_files) and not plot_id:
        raise CorlError("--out and --open go with --plot RUN")
    for given in (show_id, plot_id):
        if given is None:
            continue
        found = find_records(root, given)
        if not found:
            raise CorlError(f"no run {given!r} under {root}; `corl runs` lists them")
        if len(found) > 1:
            raise CorlError(f"run {given!r} is ambiguous: {', '.join(short_id(r) for r in found[:5])}; give more of it")
        if given == show_id:
            if as_json:
                console.print_json(
                    data=_row(found[0], root) | {"record_data": {k: v for k, v in found[0].items() if k != "_path"}}
                )
            else:
                show(found[0], root)
        else:
            files = plot(found[0], root, out, open_files)
            if not files:
                console.print(f"run {short_id(found[0])}: no stage logged metrics to draw")
            for f in files:
                console.print(escape(str(f)), highlight=False, soft_wrap=True)
        return
    records, problems = read_records(root)
    for problem in problems:  # an unreadable record is reported, never taken as absent
        console.print(f"skipped {problem}", markup=False, highlight=False, soft_wrap=True)
    if pipeline:
        records = [r for r in records if r.get("pipeline") == pipeline]
    if task:
        from corl.tasks import get_task

        name = get_task(task).name
        records = [r for r in records if r.get("task") == name]
    records = records[:limit]
    if as_json:
        print(json.dumps([_row(r, root) for r in records], indent=1, default=str))
        return
    if not records:
        console.print("[dim]no runs yet: try `corl run bc --task OfflineCarCircle-v0 --preset quick`[/]")
        return
    for line in list_lines(records, root, console.width):
        console.print(line, markup=False, highlight=False, soft_wrap=True, crop=False)


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)
