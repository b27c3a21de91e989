"""Sweep specs (``pipelines/sweeps/NAME.toml`` or the flags of ``corl sweep``): many runs,
one graph.

A sweep names methods (a pipeline with its own preset, ``--set`` overrides and grid), tasks,
datasets, seeds and run-wide overrides; it expands into one :class:`RunRequest` per
method x task x dataset x grid point x seed. Like a pipeline spec it is data validated in
full before any work: every key of the file, and then every run's plan (which checks every
``--set`` and grid key against the pipeline's stages). Errors are one line naming the file
and the key.

Layout::

    description = "..."
    tasks = ["OfflineCarCircle-v0"]       # every method runs on every task
    seeds = "0-4"                         # or [0, 1, 2, 3, 4]
    preset = "quick"                      # default preset of every method
    datasets = ["datasets/samples/OfflineCarCircle-v0.hdf5"]   # optional: each run once per file
    set = ["evaluate.episodes=20"]        # overrides of every method's runs
    device = "auto"                       # optional; threads, workers: executor defaults
    [grid]                                # every method: the product of these values
    "evaluate.num_envs" = [2, 4]
    [resources.drcorl_behavior]           # Ray resources of a stage kind (default 1 CPU, 0 GPU;
    num_gpus = 1                          # [resources.default] changes that for every kind)

    [[methods]]
    label = "BC-All"                      # the name in the results table (default: pipeline)
    pipeline = "bc"
    set = ["bc.mode=all"]                 # after the sweep's set; also: preset, grid, tasks

A dataset path is relative to the current directory when it exists there, else to the
sweep file's directory. It is given to each run as ``--dataset`` (a run option, not part of
any key: the dataset stage is keyed by the file's sha256, so a run of the sweep shares its
artifacts with ``corl run`` on the same file).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from corl.errors import ConfigError, CorlError
from corl.pipeline.graph import Graph
from corl.pipeline.runner import Plan, RunRequest, build_upstream, plan_pipeline
from corl.pipeline.spec import did_you_mean, load_spec, parse_value
from corl.store.pipelines import pipeline_dirs

TOP_KEYS = (
    "description",
    "tasks",
    "seeds",
    "preset",
    "datasets",
    "set",
    "grid",
    "methods",
    "device",
    "workers",
    "threads",
    "resources",
)
METHOD_KEYS = ("label", "pipeline", "preset", "set", "grid", "tasks")
RESOURCE_KEYS = ("num_cpus", "num_gpus")


@dataclass
class Method:
    """One row family of the results: a pipeline with its preset and overrides."""

    label: str
    pipeline: str
    preset: str | None = None
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=list)


@dataclass
class SweepRun:
    """One run of the sweep and the labels its results are grouped by."""

    request: RunRequest
    method: str
    setting: str  # the grid point, "stage.key=value ..." ("-" without a grid)
    dataset: str  # the dataset file's name ("" = the task's lookup)


@dataclass
class SweepSpec:
    name: str
    path: Path | None  # None for the flag form
    description: str
    methods: list[Method]
    tasks: list[str]
    seeds: list[int]
    datasets: list[str] = field(default_factory=list)  # absolute paths
    device: str = "auto"
    workers: int | None = None
    threads: int = 1
    resources: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return str(self.path) if self.path else "corl sweep"

    def expand(self, checkpoints: str | None = None, offline: bool | None = None) -> list[SweepRun]:
        """Every run: method x task x dataset x grid point x seed, in that order."""
        runs = []
        for method in self.methods:
            keys = sorted(method.grid)
            points = list(itertools.product(*(method.grid[k] for k in keys))) or [()]
            for task in method.tasks or self.tasks:
                for dataset in self.datasets or [""]:
                    for point in points:
                        grid_set = [f"{k}={_toml(v)}" for k, v in zip(keys, point)]
                        setting = " ".join(grid_set) or "-"
                        for seed in self.seeds:
                            req = RunRequest(
                                pipeline=method.pipeline,
                                task=task,
                                preset=method.preset,
                                seed=seed,
                                overrides=method.overrides + grid_set,
                                device=self.device,
                                dataset=dataset or None,
                                offline=offline,
                                checkpoints=checkpoints,
                            )
                            runs.append(SweepRun(req, method.label, setting, Path(dataset).name if dataset else ""))
        return runs

    def ident(self, runs: list[SweepRun]) -> str:
        """A short id of what the sweep runs (its directory name): equal sweeps, equal ids."""
        import dataclasses

        material = [[dataclasses.replace(r.request, checkpoints=None).command(), r.method, r.setting] for r in runs]
        return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:8]


def _toml(value: Any) -> str:
    """A value as ``--set`` parses it back (TOML)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------ parsing
def parse_seeds(value: Any, where: str) -> list[int]:
    """``"0-4"``, ``"0,2,5"``, ``"0-2,7"``, an int or a TOML list of ints."""
    if isinstance(value, bool):
        raise ConfigError(f'{where}: expected seeds like "0-4", "0,2" or [0, 1], got {value!r}')
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{where}: expected a non-empty list of integers, got {value!r}")
        return _unique(value, where)
    if isinstance(value, str):
        seeds: list[int] = []
        for part in value.split(","):
            part = part.strip()
            lo, dash, hi = part.partition("-")
            try:
                seeds += list(range(int(lo), int(hi) + 1)) if dash else [int(part)]
            except ValueError:
                raise ConfigError(f'{where}: bad seed range {part!r} (expected "0-4", "0,2" or "0-2,7")') from None
            if dash and int(hi) < int(lo):
                raise ConfigError(f"{where}: empty seed range {part!r}")
        return _unique(seeds, where)
    raise ConfigError(f'{where}: expected seeds like "0-4" or [0, 1], got {type(value).__name__}')


def _unique(seeds: list[int], where: str) -> list[int]:
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: seed listed twice in {seeds}")
    if any(s < 0 for s in seeds):
        raise ConfigError(f"{where}: seeds must be >= 0, got {seeds}")
    return seeds


def split_values(raw: str) -> list[str]:
    """``a,b,[1, 2],"x,y"`` -> its top-level comma-separated items (brackets and quotes kept)."""
    items, depth, quote, current = [], 0, "", ""
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
            continue
        current += ch
    items.append(current.strip())
    return [i for i in items if i]


def parse_grid_flag(item: str) -> tuple[str, list[Any]]:
    """``--grid stage.key=v1,v2`` -> ("stage.key", [v1, v2])."""
    lhs, eq, rhs = item.partition("=")
    if not eq or "." not in lhs or not rhs.strip():
        raise ConfigError(f"--grid {item}: expected stage.key=value1,value2")
    return lhs.strip(), [parse_value(v) for v in split_values(rhs)]


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    return list(value)


def _overrides(value: Any, where: str) -> list[str]:
    items = _strings(value, where)
    for item in items:
        lhs = item.split("=", 1)[0]
        if "=" not in item or "." not in lhs:
            raise ConfigError(f"{where}: {item!r}: expected stage.key=value")
    return items


def _grid(value: Any, where: str) -> dict[str, list[Any]]:
    if not isinstance(value, dict):
        raise ConfigError(f'{where}: expected a table "stage.key" = [values]')
    grid = {}
    for key, values in value.items():
        if isinstance(values, dict):  # [grid.bc] lr = [...] written as a sub-table
            for sub, inner in values.items():
                grid.update(_grid({f"{key}.{sub}": inner}, where))
            continue
        if "." not in key:
            raise ConfigError(f'{where}.{key}: expected a "stage.key" name')
        if not isinstance(values, list) or not values:
            raise ConfigError(f'{where}."{key}": expected a non-empty list of values, got {values!r}')
        grid[key] = values
    return grid


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expected an integer >= 1, got {value!r}")
    return value


def _resources(value: Any, where: str) -> dict[str, dict[str, float]]:
    from corl.pipeline.registry import stage_kinds

    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected tables [resources.<stage kind>]")
    kinds = stage_kinds()
    out: dict[str, dict[str, float]] = {}
    for kind, table in value.items():
        if kind not in kinds and kind != "default":
            raise ConfigError(f"{where}.{kind}: unknown stage kind{did_you_mean(kind, list(kinds) + ['default'])}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}.{kind}: expected a table with num_cpus / num_gpus")
        for key, amount in table.items():
            if key not in RESOURCE_KEYS:
                raise ConfigError(f"{where}.{kind}.{key}: unknown key{did_you_mean(key, RESOURCE_KEYS)}")
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise ConfigError(f"{where}.{kind}.{key}: expected a number >= 0, got {amount!r}")
        out[kind] = {k: float(v) for k, v in table.items()}
    return out


def _dataset_path(raw: str, base: Path | None, where: str) -> str:
    path = Path(raw).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path] + ([base / path] if base else [])
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    raise ConfigError(f"{where}: {raw}: no such dataset file")


def sweep_dirs() -> list[Path]:
    """Where ``corl sweep NAME`` looks for ``NAME.toml``: the pipelines dirs' ``sweeps/``."""
    return [d / "sweeps" for d in pipeline_dirs()]


def find_sweep(name: str) -> Path | None:
    """The sweep file ``name`` means (a path, or a name under ``pipelines/sweeps/``), or None."""
    path = Path(name)
    if name.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{name}: no such sweep file")
        return path
    for d in sweep_dirs():
        if (d / f"{name}.toml").is_file():
            return d / f"{name}.toml"
    return None


def load_sweep(path: Path) -> SweepSpec:
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: unreadable: {exc.strerror}") from None
    return parse_sweep(raw, path)


def parse_sweep(raw: dict[str, Any], path: Path) -> SweepSpec:
    """Validate a sweep file's keys and values (the runs' own keys are checked by planning)."""
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"{path}: {key}: unknown key{did_you_mean(key, TOP_KEYS)}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{path}: description: expected a string")
    tasks = _strings(raw["tasks"], f"{path}: tasks") if "tasks" in raw else []
    seeds = parse_seeds(raw.get("seeds", [0]), f"{path}: seeds")
    preset = raw.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise ConfigError(f"{path}: preset: expected a string")
    common_set = _overrides(raw.get("set", []), f"{path}: set")
    common_grid = _grid(raw.get("grid", {}), f"{path}: grid")
    datasets = [
        _dataset_path(d, path.parent, f"{path}: datasets")
        for d in _strings(raw.get("datasets", []), f"{path}: datasets")
    ]
    device = raw.get("device", "auto")
    if not isinstance(device, str):
        raise ConfigError(f"{path}: device: expected a string (auto, cpu, cuda)")
    workers = _positive_int(raw["workers"], f"{path}: workers") if "workers" in raw else None
    threads = _positive_int(raw.get("threads", 1), f"{path}: threads")
    resources = _resources(raw.get("resources", {}), f"{path}: resources")

    methods_raw = raw.get("methods")
    if not isinstance(methods_raw, list) or not methods_raw:
        raise ConfigError(f"{path}: methods: expected one or more [[methods]] tables with a pipeline")
    methods, labels = [], set()
    for i, table in enumerate(methods_raw):
        where = f"{path}: methods[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table")
        for key in table:
            if key not in METHOD_KEYS:
                raise ConfigError(f"{where}.{key}: unknown key{did_you_mean(key, METHOD_KEYS)}")
        if not isinstance(table.get("pipeline"), str):
            raise ConfigError(f"{where}.pipeline: missing (a pipeline name such as bc, drcorl, micro)")
        try:
            load_spec(table["pipeline"])  # an unknown pipeline or a broken spec is named now
        except ConfigError as exc:
            raise ConfigError(f"{where}.pipeline: {exc}") from None
        label = table.get("label", table["pipeline"])
        if not isinstance(label, str) or not label:
            raise ConfigError(f"{where}.label: expected a non-empty string")
        if label in labels:
            raise ConfigError(f"{where}.label: {label!r} used twice (each method needs its own label)")
        labels.add(label)
        m_preset = table.get("preset", preset)
        if m_preset is not None and not isinstance(m_preset, str):
            raise ConfigError(f"{where}.preset: expected a string")
        grid = dict(common_grid)
        grid.update(_grid(table.get("grid", {}), f"{where}.grid"))
        m_tasks = _strings(table["tasks"], f"{where}.tasks") if "tasks" in table else []
        if not m_tasks and not tasks:
            raise ConfigError(f"{where}.tasks: no tasks (give tasks = [...] at the top or in the method)")
        methods.append(
            Method(
                label,
                table["pipeline"],
                m_preset,
                common_set + _overrides(table.get("set", []), f"{where}.set"),
                grid,
                m_tasks,
            )
        )
    return SweepSpec(path.stem, path, description, methods, tasks, seeds, datasets, device, workers, threads, resources)


def flag_sweep(
    pipeline: str,
    tasks: list[str],
    seeds: str,
    preset: str | None,
    overrides: list[str],
    grid: list[str],
    datasets: list[str],
    device: str = "auto",
) -> SweepSpec:
    """The sweep ``corl sweep PIPELINE --tasks A,B --seeds 0-4 --grid stage.key=v1,v2`` means."""
    load_spec(pipeline)  # neither a sweep file nor a pipeline: named now
    if not tasks:
        raise ConfigError(f"corl sweep {pipeline}: --tasks is required (e.g. --tasks OfflineCarCircle-v0)")
    parsed = dict(parse_grid_flag(g) for g in grid)
    method = Method(Path(pipeline).stem, pipeline, preset, _overrides(overrides, "--set"), parsed, [])
    paths = [_dataset_path(d, None, "--dataset") for d in datasets]
    return SweepSpec(Path(pipeline).stem, None, "", [method], list(tasks), parse_seeds(seeds, "--seeds"), paths, device)


# ------------------------------------------------------------------------------ planning
def plan_sweep(spec: SweepSpec, runs: list[SweepRun], collect: bool = False) -> Graph:
    """Plan every run (validating every key before any work) and merge them into one graph.

    A run whose dataset is collected online (``dataset.source``) has its collection's stages
    (``cvpo:train``, ``cvpo:export``) in its plan, but the keys after them stay pending until
    the collection exists; with ``collect`` those upstream stages are built here, in this
    process (:func:`~corl.pipeline.runner.build_upstream`), after every run has been planned
    and validated, and the run is planned again. The graph then has them as (cached) nodes.
    """
    plans: list[Plan] = []
    for run in runs:
        try:
            plans.append(plan_pipeline(run.request))
        except CorlError as exc:
            raise type(exc)(
                f"{spec.where}: {run.method} on {run.request.task} (seed {run.request.seed}"
                f"{', ' + run.setting if run.setting != '-' else ''}): {exc}"
            ) from None
    if collect:
        for i, (run, plan) in enumerate(zip(runs, plans)):
            if plan.pending:
                plans[i] = build_upstream(run.request, plan)
    return Graph.from_plans([(run.request, plan) for run, plan in zip(runs, plans)])


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------ running
@dataclass
class SweepOutcome:
    """A finished (or interrupted) sweep: its directory, node results, runs and files."""

    dir: Path
    nodes: dict[str, Any]  # node id -> NodeResult
    runs: list[dict[str, Any]]
    files: dict[str, Path]
    interrupted: bool
    wall_time: float

    @property
    def failures(self) -> list[Any]:
        return [r for r in self.nodes.values() if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r["status"] == "ok" for r in self.runs)


def sweep_dir(root: Path, spec: SweepSpec, runs: list[SweepRun]) -> Path:
    """``<cache root>/sweeps/<name>-<id>/``: state, node logs and results of one sweep."""
    return root / "sweeps" / f"{spec.name}-{spec.ident(runs)}"


def _run_status(statuses: list[str]) -> str:
    if all(s in ("ran", "cached") for s in statuses):
        return "ok"
    if any(s in ("failed", "skipped") for s in statuses):
        return "failed"
    return "interrupted"


def run_sweep(
    spec: SweepSpec,
    runs: list[SweepRun],
    graph: Graph,
    backend: Any,
    root: Path,
    command: str,
    callbacks: Any = None,
    threads: int | None = None,
) -> SweepOutcome:
    """Run a planned sweep on ``backend``; write every run's record, the sweep's state and
    its results (see :mod:`corl.pipeline.sweep_results`)."""
    import socket
    import time

    from corl.pipeline.executors import NodeResult, Scheduler
    from corl.pipeline.runner import StageOutcome, finish_record, new_record
    from corl.pipeline.sweep_results import run_scores, write_results
    from corl.store import artifacts as art
    from corl.store.runs import new_record_path, write_record

    started = time.time()
    directory = sweep_dir(root, spec, runs)
    directory.mkdir(parents=True, exist_ok=True)
    ident = directory.name.rsplit("-", 1)[1]
    if hasattr(backend, "check_shared_root"):
        datasets = sorted(
            {
                n.job.stage.fingerprint["path"]
                for n in graph.nodes.values()
                if n.kind == "dataset" and n.job.stage.fingerprint.get("path")
            }
        )
        backend.check_shared_root(root, datasets)

    # every run is recorded before any work: `corl runs` shows the sweep, prune keeps its artifacts
    records = []
    for index, (run, (req, plan)) in enumerate(zip(runs, graph.runs)):
        path = new_record_path(root, plan.spec.name, plan.task.name, req.seed)
        record = new_record(
            req,
            plan,
            req.device,
            started,
            sweep={"name": spec.name, "id": ident, "method": run.method, "setting": run.setting},
        )
        record["stages"] = [
            {
                "name": s.name,
                "kind": s.kind,
                "key": s.key,
                "status": s.status,
                "dir": s.dir.relative_to(root).as_posix(),
            }
            for s in plan.stages
        ]
        write_record(path, record)
        records.append((path, record))

    state_path = directory / "state.json"
    state: dict[str, Any] = {
        "name": spec.name,
        "id": ident,
        "spec": str(spec.path or ""),
        "command": command,
        "host": socket.gethostname(),
        "started": started,
        "status": "running",
        "backend": getattr(backend, "name", ""),
        "nodes": {},
    }

    class _Tracker:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def node_submitted(self, node: str) -> None:
            state["nodes"][node] = {"status": "running"}
            if self.inner is not None:
                self.inner.node_submitted(node)

        def node_finished(self, result: NodeResult) -> None:
            state["nodes"][result.node] = {
                "status": result.status,
                "reason": result.reason,
                "log": result.log,
                "wall_time": result.wall_time,
                "host": result.host,
            }
            art.write_json_atomic(state_path, state)
            if self.inner is not None:
                self.inner.node_finished(result)

        def message(self, text: str, level: str = "info") -> None:
            if self.inner is not None:
                self.inner.message(text, level)

    art.write_json_atomic(state_path, state)
    scheduler = Scheduler(graph, backend, directory, threads or spec.threads, spec.resources, _Tracker(callbacks))
    try:
        results = scheduler.run()
    finally:
        backend.close()
    interrupted = scheduler.stopping

    run_dicts = []
    for index, (run, (req, plan)) in enumerate(zip(runs, graph.runs)):
        outcomes = []
        for ps in plan.stages:
            r = results.get(graph.run_nodes[index][ps.name]) or NodeResult(ps.name, "not_started")
            outcomes.append(
                StageOutcome(ps.name, ps.kind, ps.key, ps.dir, r.status, r.wall_time, r.metrics, r.resumed_from, r.step)
            )
        status = _run_status([o.status for o in outcomes])
        path, record = records[index]
        result = finish_record(path, record, req, plan, outcomes, status, started)
        run_dicts.append(
            {
                "method": run.method,
                "pipeline": plan.spec.name,
                "task": plan.task.name,
                "dataset": run.dataset,
                "setting": run.setting,
                "seed": req.seed,
                "status": status,
                "scores": run_scores(result.scores),
                "record": str(path),
                "command": req.command(),
                "artifacts": {o.name: o.dir.relative_to(root).as_posix() for o in outcomes},
            }
        )
    wall = time.time() - started
    state["status"] = (
        "interrupted" if interrupted else ("ok" if all(r["status"] == "ok" for r in run_dicts) else "failed")
    )
    state["ended"], state["wall_time"] = time.time(), wall
    art.write_json_atomic(state_path, state)
    ran = sum(r.status == "ran" for r in results.values())
    header = {
        "sweep": spec.name,
        "id": ident,
        "spec": str(spec.path or ""),
        "command": command,
        "status": state["status"],
        "wall_time": wall,
        "backend": getattr(backend, "name", ""),
        "graph": {
            "runs": len(runs),
            "stages": graph.stage_count,
            "nodes": len(graph.nodes),
            "ran": ran,
            "cached_at_start": sum(n.status == "cached" for n in graph.nodes.values()),
        },
        "failures": [
            {"node": r.node, "reason": r.reason, "log": r.log} for r in results.values() if r.status == "failed"
        ],
    }
    files = write_results(directory, header, run_dicts)
    return SweepOutcome(directory, results, run_dicts, files, interrupted, wall)
